/**
 * Starts the real gateway in-process from a YAML string, on real sockets, for end-to-end
 * tests. `$NAME` placeholders in the YAML are filled from `vars` (free ports are allocated
 * with `freePort()`); the ops servers listen on ephemeral loopback ports.
 */
import { Context, Effect, Exit, Layer, Scope } from "effect"
import * as net from "node:net"
import { Gateway, type Ports } from "../../src/Gateway.ts"

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** `n` distinct free ports (held open together while they are picked, so no two are alike). */
export const freePorts = async (n: number): Promise<Array<number>> => {
  const servers = await Promise.all(Array.from({ length: n }, () =>
    new Promise<net.Server>((resolve, reject) => {
      const server = net.createServer()
      server.once("error", reject)
      server.listen(0, "127.0.0.1", () => resolve(server))
    })))
  const ports = servers.map((server) => {
    const address = server.address()
    return typeof address === "object" && address !== null ? address.port : 0
  })
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))))
  return ports
}

export interface Running {
  readonly ports: Ports
  readonly gateway: Gateway["Service"]
  /** Access-log lines written so far. */
  readonly logs: Array<string>
  readonly url: (port: number, path?: string) => string
  readonly stop: () => Promise<void>
}

export interface StartOptions {
  readonly vars?: Record<string, string | number>
  /** Serve from a file (watched) instead of an inline string. */
  readonly file?: string
}

export const startGateway = async (yaml: string, options: StartOptions = {}): Promise<Running> => {
  const vars: Record<string, string> = {
    ADMIN_ADDR: "127.0.0.1:0",
    STATS_ADDR: "127.0.0.1:0",
    READINESS_ADDR: "127.0.0.1:0",
    CONNECTION_TERMINATION_DEADLINE: "1s"
  }
  for (const [k, v] of Object.entries(options.vars ?? {})) vars[k] = String(v)
  const logs: Array<string> = []
  const scope = Effect.runSync(Scope.make())
  const layer = Gateway.layer({
    source: options.file === undefined ? { _tag: "Inline", text: yaml } : { _tag: "File", path: options.file, watch: true },
    env: (name) => vars[name] ?? process.env[name],
    accessLogSink: { write: (chunk) => void logs.push(...chunk.split("\n").filter((l) => l !== "")) }
  })
  const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
  const gateway = Context.get(context, Gateway)
  return {
    ports: gateway.ports(),
    gateway,
    logs,
    url: (port, path = "/") => `http://127.0.0.1:${port}${path}`,
    stop: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}
