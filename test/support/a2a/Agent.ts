/**
 * A real A2A agent for end-to-end tests and bench/a2a.ts: the `@a2a-js/sdk` server
 * (`DefaultRequestHandler` + its express JSON-RPC and agent-card handlers, v0.3 compatibility
 * on) on a loopback port. The executor answers every message with a task: `submitted` →
 * `working` → an artifact `echo: <text>` → `completed`. A message whose text is `gated` stops
 * after `working` until `release()` is called, so a test can prove the first SSE event reached
 * the client while the agent still holds the stream open.
 *
 * Endpoints:
 *   GET  /.well-known/agent-card.json        the SDK's card (v1.0; v0.3-shaped for A2A-Version 0.3)
 *   POST /a2a/jsonrpc, /v03/a2a/jsonrpc       JSON-RPC, v1.0 and v0.3 methods
 *   GET  /v03/.well-known/agent-card.json    a plain v0.3 card (no `supportedInterfaces`), signed
 *   GET  /broken/.well-known/agent-card.json 200 application/json that is not JSON
 */
import { AGENT_CARD_PATH, type AgentCard, type Task, TaskState } from "@a2a-js/sdk"
import {
  AgentEvent,
  type AgentExecutor,
  DefaultRequestHandler,
  type ExecutionEventBus,
  InMemoryTaskStore,
  type RequestContext
} from "@a2a-js/sdk/server"
import { agentCardHandler, jsonRpcHandler, UserBuilder } from "@a2a-js/sdk/server/express"
import express from "express"
import type * as http from "node:http"

export interface ReceivedRequest {
  readonly method: string
  readonly path: string
  readonly headers: http.IncomingHttpHeaders
}

export interface Agent {
  readonly port: number
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  readonly received: Array<ReceivedRequest>
  /** Lets every `gated` task waiting now finish. */
  readonly release: () => void
  readonly close: () => Promise<void>
}

const textPart = (value: string) => ({ content: { $case: "text" as const, value }, metadata: undefined, filename: "", mediaType: "text/plain" })

class EchoExecutor implements AgentExecutor {
  private waiting: Array<() => void> = []

  release(): void {
    const waiting = this.waiting
    this.waiting = []
    for (const go of waiting) go()
  }

  cancelTask = async (taskId: string, bus: ExecutionEventBus): Promise<void> => {
    bus.publish(AgentEvent.statusUpdate({ taskId, contextId: "", status: { state: TaskState.TASK_STATE_CANCELED, message: undefined, timestamp: undefined }, metadata: undefined }))
  }

  execute = async (request: RequestContext, bus: ExecutionEventBus): Promise<void> => {
    const { taskId, contextId } = request
    const part = request.userMessage.parts.find((p) => p.content?.$case === "text")
    const text = part?.content?.$case === "text" ? part.content.value : ""
    if (request.task === undefined) {
      const task: Task = {
        id: taskId,
        contextId,
        status: { state: TaskState.TASK_STATE_SUBMITTED, message: undefined, timestamp: new Date().toISOString() },
        artifacts: [],
        history: [request.userMessage],
        metadata: undefined
      }
      bus.publish(AgentEvent.task(task))
    }
    bus.publish(AgentEvent.statusUpdate({ taskId, contextId, status: { state: TaskState.TASK_STATE_WORKING, message: undefined, timestamp: new Date().toISOString() }, metadata: undefined }))
    if (text === "gated") await new Promise<void>((resolve) => this.waiting.push(resolve))
    bus.publish(AgentEvent.artifactUpdate({
      taskId,
      contextId,
      artifact: { artifactId: "result", name: "result", description: "", parts: [textPart(`echo: ${text}`)], metadata: undefined, extensions: [] },
      append: false,
      lastChunk: true,
      metadata: undefined
    }))
    bus.publish(AgentEvent.statusUpdate({ taskId, contextId, status: { state: TaskState.TASK_STATE_COMPLETED, message: undefined, timestamp: new Date().toISOString() }, metadata: undefined }))
  }
}

const card = (base: string): AgentCard => ({
  name: "echo agent",
  description: "Echoes what it is told.",
  supportedInterfaces: [
    { url: `${base}/a2a/jsonrpc`, protocolBinding: "JSONRPC", tenant: "", protocolVersion: "1.0" },
    // Declared so the SDK's v0.3 compatibility layer accepts v0.3 calls on the same endpoint.
    { url: `${base}/a2a/jsonrpc`, protocolBinding: "JSONRPC", tenant: "", protocolVersion: "0.3" }
  ],
  provider: undefined,
  version: "1.0.0",
  capabilities: { streaming: true, pushNotifications: false, extensions: [], extendedAgentCard: false },
  securitySchemes: {},
  securityRequirements: [],
  defaultInputModes: ["text"],
  defaultOutputModes: ["text"],
  skills: [{ id: "echo", name: "Echo", description: "Echoes the message", tags: ["echo"], examples: ["hello"], inputModes: ["text"], outputModes: ["text"], securityRequirements: [] }],
  signatures: []
})

/** A v0.3 card as a v0.3 agent serves it (the v0.3 JSON schema), with a JWS that a rewrite makes stale. */
const v03Card = (base: string) => ({
  name: "echo agent (v0.3)",
  description: "Echoes what it is told.",
  url: `${base}/v03/a2a/jsonrpc`,
  preferredTransport: "JSONRPC",
  protocolVersion: "0.3.0",
  version: "1.0.0",
  capabilities: { streaming: true },
  defaultInputModes: ["text"],
  defaultOutputModes: ["text"],
  skills: [{ id: "echo", name: "Echo", description: "Echoes the message", tags: ["echo"] }],
  signatures: [{ protected: "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0", signature: "c3RhbGU" }]
})

/** Starts the agent on `port` (0: any free port). */
export const startAgent = async (port = 0): Promise<Agent> => {
  const received: Array<ReceivedRequest> = []
  const executor = new EchoExecutor()
  const app = express()
  let base = ""
  app.use((req, _res, next) => {
    received.push({ method: req.method, path: req.originalUrl, headers: req.headers })
    next()
  })
  app.get("/v03/.well-known/agent-card.json", (_req, res) => void res.json(v03Card(base)))
  app.get("/broken/.well-known/agent-card.json", (_req, res) => void res.type("application/json").send("{this is not json"))
  const server = await new Promise<http.Server>((resolve, reject) => {
    const s = app.listen(port, "127.0.0.1", () => resolve(s))
    s.once("error", reject)
  })
  const address = server.address()
  const actual = typeof address === "object" && address !== null ? address.port : 0
  base = `http://127.0.0.1:${actual}`
  const handler = new DefaultRequestHandler(card(base), new InMemoryTaskStore(), executor)
  app.use(`/${AGENT_CARD_PATH}`, agentCardHandler({ agentCardProvider: handler, legacyCompat: { enabled: true } }))
  const rpc = jsonRpcHandler({ requestHandler: handler, userBuilder: UserBuilder.noAuthentication, legacyCompat: { enabled: true } })
  app.use("/a2a/jsonrpc", rpc)
  app.use("/v03/a2a/jsonrpc", rpc)
  return {
    port: actual,
    url: base,
    received,
    release: () => executor.release(),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}

