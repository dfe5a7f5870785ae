/**
 * The A2A benchmark's agent: the `@a2a-js/sdk` server of the end-to-end tests
 * (test/support/a2a/Agent.ts: DefaultRequestHandler + the express JSON-RPC handler) in its own
 * process, so the agent's CPU is neither the gateway's nor the load's.
 *
 *   node bench/a2a-agent.ts        (PORT=… default 0; forked: reports the port over IPC)
 *
 * Exits when the parent's IPC channel closes.
 */
import { startAgent } from "../test/support/a2a/Agent.ts"

const agent = await startAgent(Number(process.env["PORT"] ?? "0"))
if (process.send !== undefined) {
  process.send({ type: "listening", port: agent.port })
  process.once("disconnect", () => void agent.close().then(() => process.exit(0)))
} else process.stdout.write(`a2a agent listening on ${agent.url}\n`)
