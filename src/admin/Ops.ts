/**
 * The operational servers: admin (`/config_dump`), stats (`/metrics` in Prometheus text)
 * and readiness (`/healthz/ready`). Small `node:http` servers on their own ports, each opened
 * in a Scope and closed with it.
 *
 * @since 0.1.0
 */
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as http from "node:http"
import * as v8 from "node:v8"
import { ConfigError } from "../config/ConfigError.ts"
import type * as Ir from "../ir/Ir.ts"
import * as Prometheus from "../observability/Prometheus.ts"
import * as Address from "./Address.ts"

type Route = (req: http.IncomingMessage, res: http.ServerResponse) => void

const text = (res: http.ServerResponse, status: number, body: string, type = "text/plain") => {
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body) })
  res.end(body)
}

/** Opens one ops server, or nothing for `off`; the server closes with the enclosing Scope. */
export const serve = (name: string, address: string, routes: Record<string, Route>) =>
  Effect.gen(function*() {
    const parsed = Address.parse(address)
    if ("error" in parsed) return yield* Effect.fail(new ConfigError({ issues: [{ path: `config.${name}`, message: parsed.error }] }))
    if (parsed._tag === "Off") return undefined
    const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
      const path = (req.url ?? "/").split("?")[0]!
      const route = routes[path]
      if (route === undefined || (req.method !== "GET" && req.method !== "HEAD")) return text(res, 404, "not found\n")
      route(req, res)
    })
    yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () =>
          new Promise<void>((resolve, reject) => {
            server.once("error", reject)
            server.listen({ host: parsed.host, port: parsed.port }, () => {
              server.off("error", reject)
              resolve()
            })
          }),
        catch: (cause) =>
          new ConfigError({ issues: [{ path: `config.${name}`, message: `cannot listen on ${address}: ${cause instanceof Error ? cause.message : String(cause)}` }] })
      }),
      () => Effect.promise(() => new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }))
    )
    const bound = server.address()
    return typeof bound === "object" && bound !== null ? bound.port : undefined
  })

const SECRET = /key|secret|password|token|htpasswd|credential/i

/** The snapshot as JSON with every secret-looking field replaced. */
export const redact = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(redact)
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = SECRET.test(k) && (typeof v === "string" || typeof v === "number") ? "<redacted>" : redact(v)
    return out
  }
  return value
}

export const configDump = (snapshot: () => Ir.Snapshot | undefined): Route => (_req, res) => {
  const current = snapshot()
  text(res, 200, JSON.stringify(redact(current ?? {}), null, 2) + "\n", "application/json")
}

/** `GET /memory`: process and V8 heap figures, for operators chasing memory. */
export const memory: Route = (_req, res) => {
  const heap = v8.getHeapStatistics()
  text(res, 200, JSON.stringify({ process: process.memoryUsage(), heap, spaces: v8.getHeapSpaceStatistics() }, null, 2) + "\n", "application/json")
}

export const readiness = (ready: () => boolean): Route => (_req, res) =>
  ready() ? text(res, 200, "ready\n") : text(res, 503, "not ready\n")

export const metrics = (context: Context.Context<never>): Route => (_req, res) =>
  text(res, 200, Prometheus.format(context), "text/plain; version=0.0.4; charset=utf-8")
