/**
 * The operational servers: admin (`/config_dump`, `/logging`, `/quitquitquit`, `/api/config`,
 * `/api/cel`, …), stats (`/metrics` in Prometheus text) and readiness (`/healthz/ready`). Small
 * `node:http` servers on their own ports, each opened in a Scope and closed with it.
 *
 * The admin server is loopback-only unless `adminAddr`/`ADMIN_ADDR` names another address
 * explicitly; even then the endpoints that change the process (`POST /logging`,
 * `POST /quitquitquit`) answer only loopback peers. Requests a browser page of another site
 * could make (a `Host` that is not loopback on a loopback connection, a cross-origin POST) get 403.
 *
 * @since 0.1.0
 */
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as http from "node:http"
import * as v8 from "node:v8"
import { ConfigError } from "../config/ConfigError.ts"
import type * as Ir from "../ir/Ir.ts"
import * as LogLevel from "../observability/LogLevel.ts"
import * as Prometheus from "../observability/Prometheus.ts"
import * as Csrf from "../policies/Csrf.ts"
import * as Authority from "../shared/Authority.ts"
import * as Json from "../shared/Json.ts"
import * as Address from "./Address.ts"
import * as CelPlayground from "./CelPlayground.ts"

export type Route = (req: http.IncomingMessage, res: http.ServerResponse) => void

const text = (res: http.ServerResponse, status: number, body: string, type = "text/plain") => {
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body) })
  res.end(body)
}

const json = (res: http.ServerResponse, status: number, value: unknown) => text(res, status, JSON.stringify(value, null, 2) + "\n", "application/json")

/** A read-only endpoint: GET and HEAD only (405 otherwise). */
export const get = (route: Route): Route => (req, res) =>
  req.method === "GET" || req.method === "HEAD" ? route(req, res) : text(res, 405, "method not allowed\n")

/** An endpoint that changes the process: loopback peers only, whatever address the server listens on. */
export const loopbackOnly = (route: Route): Route => (req, res) =>
  Address.isLoopback(req.socket.remoteAddress ?? "") ? route(req, res) : text(res, 403, "forbidden: loopback only\n")

const queryOf = (req: http.IncomingMessage): URLSearchParams => {
  const url = req.url ?? "/"
  const q = url.indexOf("?")
  return new URLSearchParams(q === -1 ? "" : url.slice(q + 1))
}

export interface ServeOptions {
  /**
   * The admin server: a host that names loopback (the default `localhost`) must bind loopback,
   * and requests a browser page of another site could make are refused (`browserRefusal`).
   */
  readonly requireLoopback?: boolean
}

/**
 * Why a request to the admin server is refused because a web page, not an operator, may have
 * sent it; undefined when it is not. A page on any site can make the browser send simple
 * requests to `localhost:15000` (a POST to `/quitquitquit` needs no CORS preflight), and with
 * DNS rebinding it can read the answers too, under its own host name (security.md §2.2, the
 * MCP Inspector case). So a connection that arrived on a loopback address must name loopback
 * in `Host` (whatever address the server listens on: `0.0.0.0` takes loopback connections too),
 * and a request that changes something must not come from another origin (`Sec-Fetch-Site`,
 * `Origin`: the `csrf` policy's rules). curl and scripts send no `Origin`; a request without
 * `Host` (HTTP/1.0) is no browser's. A connection to another address keeps any `Host`: its
 * names are the operator's.
 */
export const browserRefusal = (req: http.IncomingMessage): string | undefined => {
  const host = req.headers.host
  if (host !== undefined && Address.isLoopback(req.socket.localAddress ?? "") && !Authority.isLocal(host)) return "forbidden: host not allowed\n"
  if (req.method === "GET" || req.method === "HEAD") return undefined
  const site = req.headers["sec-fetch-site"]
  if (site !== undefined && site !== "same-origin" && site !== "none") return "forbidden: cross-origin request\n"
  const origin = req.headers.origin
  if (origin === undefined) return undefined
  const from = Csrf.canonicalOrigin(origin)
  return from !== undefined && host !== undefined && from === Csrf.canonicalOrigin(`http://${host}`) ? undefined : "forbidden: cross-origin request\n"
}

/** Opens one ops server, or nothing for `off`; the server closes with the enclosing Scope. */
export const serve = (name: string, address: string, routes: Record<string, Route>, options: ServeOptions = {}) =>
  Effect.gen(function*() {
    const parsed = Address.parse(address)
    if ("error" in parsed) return yield* Effect.fail(new ConfigError({ issues: [{ path: `config.${name}`, message: parsed.error }] }))
    if (parsed._tag === "Off") return undefined
    const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
      if (options.requireLoopback === true) {
        const refusal = browserRefusal(req)
        if (refusal !== undefined) return text(res, 403, refusal)
      }
      const path = (req.url ?? "/").split("?")[0]!
      const route = Object.hasOwn(routes, path) ? routes[path] : undefined
      if (route === undefined) return text(res, 404, "not found\n")
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
    if (options.requireLoopback === true && typeof bound === "object" && bound !== null) {
      const refusal = Address.checkAdminBind(parsed.host, bound.address)
      if (refusal !== undefined) {
        server.close()
        return yield* Effect.fail(new ConfigError({ issues: [{ path: `config.${name}`, message: refusal }] }))
      }
    }
    return typeof bound === "object" && bound !== null ? bound.port : undefined
  })

/**
 * Field names whose values are secrets, matched on the name's last word (`key`, `apiKey`,
 * `clientSecret`, `sessionToken`, `x-api-key`, …): API keys and their hashes, passwords,
 * htpasswd files, the session key, inline JWKS, backendAuth keys, credential headers.
 */
const SECRET = /(^|[^a-z])(key|keys|keyhash|secret|secrets|password|passwd|token|tokens|htpasswd|credential|credentials|jwks|authorization|cookie)$|(key|secret|password|token|hash|accesskeyid)$/i

/** Inside a secret-named object, the field that holds the secret itself (`backendAuth.key: {value, location}`). */
const SECRET_VALUE = "value"

const isLeaf = (v: unknown) => v !== null && v !== undefined && !(typeof v === "object" && !Array.isArray(v))

/** userinfo in a URL (`redis://user:pass@host`). */
const URL_USERINFO = /^([a-z][a-z0-9+.-]*:\/\/)[^/@\s]+@/i

export const REDACTED = "<redacted>"

/**
 * The snapshot as JSON with every secret replaced: a secret-named field loses its whole value
 * (a string, a list of keys, an inline document) unless it is an object, which is walked (the
 * structure of `apiKey: {mode, keys}` is not secret, its `keys` are, and a secret-named object's
 * `value` is); URLs lose their userinfo.
 */
export const redact = (value: unknown, inSecret = false): unknown => {
  if (Array.isArray(value)) return value.map((v) => redact(v, inSecret))
  if (value instanceof Map) return redact(Object.fromEntries(value), inSecret)
  if (value instanceof Set) return [...value].map((v) => redact(v, inSecret))
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) {
      const secret = SECRET.test(k) || (inSecret && k === SECRET_VALUE)
      out[k] = secret && isLeaf(v) ? REDACTED : redact(v, secret)
    }
    return out
  }
  if (typeof value === "string" && URL_USERINFO.test(value)) return value.replace(URL_USERINFO, `$1${REDACTED}@`)
  return value
}

/** What the admin API reports about config loads. */
export interface ReloadStatus {
  /** The serving config: its load count (1 = the initial load), sha256 prefix and load time. */
  readonly current: { readonly generation: number; readonly version: string; readonly loadedAt: string } | null
  readonly lastAttemptAt: string | null
  /** The last failed load, cleared by the next success. */
  readonly lastError: { readonly message: string; readonly at: string } | null
  readonly successes: number
  readonly failures: number
  /** With `workerThreads` > 1: what each worker serves and its last failed load (cluster/Primary.ts). */
  readonly workers?: ReadonlyArray<WorkerLoadStatus>
}

/**
 * The load history the admin API reports (the single-process gateway's and the cluster
 * primary's): `record` after every load attempt, `status` with what is serving now.
 */
export class ReloadHistory {
  private generation = 0
  private loadedAt: string | undefined
  private lastAttemptAt: string | undefined
  private lastError: { readonly message: string; readonly at: string } | undefined
  private successes = 0
  private failures = 0

  /** Records an attempt (`error` undefined: it serves now); returns its time in ms. */
  record(error: string | undefined): number {
    const now = Date.now()
    const at = new Date(now).toISOString()
    this.lastAttemptAt = at
    if (error === undefined) {
      this.generation++
      this.successes++
      this.loadedAt = at
      this.lastError = undefined
    } else {
      this.failures++
      this.lastError = { message: error, at }
    }
    return now
  }

  status(version: string | undefined, workers?: ReadonlyArray<WorkerLoadStatus>): ReloadStatus {
    return {
      current: version === undefined || this.loadedAt === undefined ? null : { generation: this.generation, version, loadedAt: this.loadedAt },
      lastAttemptAt: this.lastAttemptAt ?? null,
      lastError: this.lastError ?? null,
      successes: this.successes,
      failures: this.failures,
      ...(workers === undefined ? {} : { workers })
    }
  }
}

export interface WorkerLoadStatus {
  /** The worker's slot, 1…N; a restarted worker keeps its slot and gets a new pid. */
  readonly id: number
  readonly pid: number | null
  readonly state: "starting" | "serving" | "stopping" | "restarting"
  /** The config version it serves (null before its first load). */
  readonly version: string | null
  /** Its last failed load, cleared by its next success. */
  readonly lastError: { readonly message: string; readonly at: string } | null
  readonly restarts: number
}

export const configDump = (snapshot: () => Ir.Snapshot | undefined, status: () => ReloadStatus, version: string): Route =>
  get((_req, res) => json(res, 200, { ...(redact(snapshot() ?? {}) as object), version: { version }, reload: status() }))

/** `GET /api/config`: the serving config as loaded (the file's own shape), redacted, and the reload status. */
export const apiConfig = (config: () => unknown, status: () => ReloadStatus): Route =>
  get((_req, res) => json(res, 200, { config: redact(config() ?? {}), status: status() }))

const LOGGING_HELP = `usage: POST /logging                  (list the current level)
usage: POST /logging?level=<level>    (change it)
usage: POST /logging?reset            (back to the configured level)

hint: loglevel: error|warn|info|debug|trace|off
`

/** `GET`/`POST /logging`, as upstream (Envoy's): list, `?level=` change, `?reset`. */
export const logging = (control: LogLevel.Control, onChange: (level: LogLevel.Level) => void): Route => (req, res) => {
  const current = () => text(res, 200, `current log level is ${control.level}\n`)
  if (req.method === "GET" || req.method === "HEAD") return current()
  if (req.method !== "POST") return text(res, 405, `Invalid HTTP method\n ${LOGGING_HELP}`)
  if (!Address.isLoopback(req.socket.remoteAddress ?? "")) return text(res, 403, "forbidden: loopback only\n")
  const query = queryOf(req)
  const level = query.get("level")
  if (query.has("reset")) {
    control.level = control.configured
  } else if (level !== null && level !== "") {
    const parsed = LogLevel.parse(level)
    if ("error" in parsed || parsed.level === undefined) return text(res, 400, `Invalid level provided: ${level}\n${LOGGING_HELP}`)
    control.level = parsed.level
  } else {
    return current()
  }
  onChange(control.level)
  current()
}

/** `POST /quitquitquit`: answers, then starts the graceful drain (loopback peers only). */
export const quit = (shutdown: () => void): Route =>
  loopbackOnly((req, res) => {
    if (req.method !== "POST") return text(res, 405, "method not allowed\n")
    res.once("finish", shutdown)
    text(res, 200, "shutdown now\n")
  })

/** `POST /api/cel` and `/cel`: CEL against a sample request (CelPlayground.ts); the body is bounded. */
export const cel: Route = (req, res) => {
  if (req.method !== "POST") return text(res, 405, "Only POST method is supported\n")
  const declared = Number(req.headers["content-length"] ?? "0")
  if (declared > CelPlayground.MAX_BODY_BYTES) {
    res.once("finish", () => req.socket.destroySoon())
    return json(res, 413, { error: `body larger than ${CelPlayground.MAX_BODY_BYTES} bytes` })
  }
  const chunks: Array<Buffer> = []
  let size = 0
  let done = false
  req.on("data", (chunk: Buffer) => {
    if (done) return
    size += chunk.length
    if (size > CelPlayground.MAX_BODY_BYTES) {
      done = true
      res.once("finish", () => req.socket.destroy())
      return json(res, 413, { error: `body larger than ${CelPlayground.MAX_BODY_BYTES} bytes` })
    }
    chunks.push(chunk)
  })
  req.on("end", () => {
    if (done) return
    done = true
    let input: unknown
    try {
      input = Json.parseBounded(Buffer.concat(chunks).toString("utf8"))
    } catch (error) {
      return json(res, 400, { error: `Failed to parse JSON: ${error instanceof Error ? error.message : String(error)}` })
    }
    const outcome = CelPlayground.evaluate(input)
    json(res, outcome.status, outcome.body)
  })
}

/** `GET /memory`: process and V8 heap figures, for operators chasing memory. */
export const memory: Route = get((_req, res) => {
  const heap = v8.getHeapStatistics()
  text(res, 200, JSON.stringify({ process: process.memoryUsage(), heap, spaces: v8.getHeapSpaceStatistics() }, null, 2) + "\n", "application/json")
})

export const readiness = (ready: () => boolean): Route =>
  get((_req, res) => (ready() ? text(res, 200, "ready\n") : text(res, 503, "not ready\n")))

export const metrics = (context: Context.Context<never>, removed: () => ReadonlySet<string>): Route =>
  get((_req, res) => text(res, 200, Prometheus.format(context, removed()), "text/plain; version=0.0.4; charset=utf-8"))
