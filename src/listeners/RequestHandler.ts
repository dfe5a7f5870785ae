/**
 * The Node edge of the data plane: turns a Node request into a `ProxyRequest`, runs the
 * listener's pre-composed Effect on the process runtime, writes the `ProxyResponse` (piping a
 * streamed upstream body straight into the socket) and records one access-log event and the
 * request metrics when the exchange ends.
 *
 * Input the HTTP parser lets through but a proxy must not (security.md §0.1): a second `Host`,
 * underscore header names, `Transfer-Encoding` on HTTP/1.0, more headers than allowed, and
 * request targets the path normaliser refuses, are answered 400/431 here, before any policy.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type { IncomingMessage, ServerResponse } from "node:http"
import { TLSSocket } from "node:tls"
import { sourceIdentity } from "../cel/Context.ts"
import type { AccessLog } from "../observability/AccessLog.ts"
import type { RequestMetrics } from "../observability/Metrics.ts"
import * as Telemetry from "../observability/Telemetry.ts"
import type { Tracer } from "../observability/Tracing.ts"
import type { Handler } from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import type { BodySink, ProxyResponse } from "../pipeline/ProxyResponse.ts"
import * as Response from "../pipeline/ProxyResponse.ts"
import { ProxyRequest, RequestContext } from "../pipeline/RequestContext.ts"
import { normalizeTarget } from "../routing/Path.ts"
import * as Headers from "../shared/headers.ts"
import type { CompiledBind, CompiledListener } from "../state/Snapshot.ts"
import { BodyWatch, type Watched } from "./BodyWatch.ts"
import { SendWatch } from "./SendWatch.ts"

export interface HandlerEnv {
  /** The bind of the snapshot serving now; read per request so a reload applies at once. */
  readonly bind: (port: number) => CompiledBind | undefined
  readonly maxHeaders: () => number
  readonly accessLog: () => AccessLog
  readonly metrics: RequestMetrics
  /** Services the request Effects run with (logger, tracer, …). */
  readonly context: Context.Context<never>
  /** The snapshot's tracer; undefined when tracing is off, and then requests do no tracing work at all. */
  readonly tracer: () => Tracer | undefined
  /** The serving snapshot's access-log and metric-label expressions. */
  readonly telemetry: () => Telemetry.Telemetry
  /** Longest pause in a request body the gateway is reading before 408 (BodyWatch.ts); 0: none. */
  readonly bodyIdleTimeoutMs: () => number
  /** Longest time a response waits for the client to take any byte before the connection is closed (SendWatch.ts); 0: none. */
  readonly sendTimeoutMs: () => number
}

/**
 * Longest request target accepted (security.md §5 #7, nginx's 8k): longer is 414. The whole
 * head is still bounded at 16 KiB by the parser (431).
 */
export const MAX_TARGET_LENGTH = 8 * 1024

/** Reads the raw header list once: lower-cased map, plus the checks Node does not make. */
interface ReadHeaders {
  /** End-to-end headers: hop-by-hop ones (and those `Connection` names) left out. */
  readonly headers: Headers.HeaderMap
  readonly hasBody: boolean
}

/**
 * One pass over the raw header list: lower-cased end-to-end map for the upstream, whether a body
 * follows, and the checks Node does not make.
 */
const readHeaders = (raw: ReadonlyArray<string>, max: number): ReadHeaders | 400 | 431 => {
  if (raw.length / 2 > max) return 431
  const headers = Headers.empty()
  let hosts = 0
  let hasBody = false
  let connection: string | undefined
  let te: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase()
    const value = raw[i + 1]!
    // Underscores: `X_Forwarded_For` and `X-Forwarded-For` must not become two spellings of one header.
    if (name.includes("_")) return 400
    if (Headers.HOP_BY_HOP.has(name)) {
      if (name === "transfer-encoding") hasBody = true
      else if (name === "connection") connection = connection === undefined ? value : `${connection},${value}`
      else if (name === "te") te = value
      continue
    }
    // RFC 9112 §3.2: a request with more than one Host is invalid.
    if (name === "host" && ++hosts > 1) return 400
    if (name === "content-length" && value !== "0") hasBody = true
    Headers.append(headers, name, value)
  }
  Headers.dropNominated(headers, connection, te)
  return { headers, hasBody }
}

const hostOf = (authority: string): string => {
  if (authority.startsWith("[")) {
    const end = authority.indexOf("]")
    return end === -1 ? authority.toLowerCase() : authority.slice(1, end).toLowerCase()
  }
  const colon = authority.lastIndexOf(":")
  return (colon === -1 ? authority : authority.slice(0, colon)).toLowerCase()
}

/** Access-log fields of a request (agentgateway's default set, in its order, for what exists so far). */
const REQUEST_FIELDS = [
  "gateway",
  "listener",
  "route_rule",
  "route",
  "endpoint",
  "src.addr",
  "src.identity",
  "http.method",
  "http.host",
  "http.path",
  "http.version",
  "http.status",
  "trace.id",
  "span.id",
  "jwt.sub",
  "protocol",
  "a2a.method",
  "a2a.response.outcome",
  "a2a.response.error_code",
  "a2a.result.kind",
  "a2a.task.state",
  "a2a.context.id",
  "mcp.method.name",
  "mcp.target",
  "mcp.resource.type",
  "mcp.resource.uri",
  "gen_ai.tool.name",
  "gen_ai.prompt.name",
  "mcp.session.id",
  "retry.attempt",
  "error",
  "reason",
  "duration"
] as const
const REJECTED_FIELDS = ["src.addr", "http.method", "http.version", "http.status", "protocol", "error", "reason", "duration"] as const

/**
 * Answers a request refused before it became a `ProxyRequest` (it never reaches a listener),
 * and still logs and counts it: a probe that only ever gets 400s must be visible.
 */
const reject = (
  env: HandlerEnv,
  port: number,
  req: IncomingMessage,
  res: ServerResponse,
  startTime: number,
  status: number,
  detail: string,
  close: boolean
) => {
  const body = status === 431 ? "request header fields too large" : status === 414 ? "uri too long" : "invalid request"
  res.writeHead(status, { "content-type": "text/plain", "content-length": Buffer.byteLength(body), ...(close ? { connection: "close" } : {}) })
  res.end(body)
  if (close) res.once("finish", () => res.socket?.destroySoon())
  const seconds = (performance.now() - startTime) / 1000
  const method = req.method ?? ""
  // Custom labels and CEL fields need a request context, which a refused request never got.
  const custom = env.metrics.customLabelNames.length === 0 ? undefined : env.metrics.customLabelNames.map(() => undefined)
  env.metrics.request({
    route: undefined,
    bind: bindLabel(port),
    gateway: "",
    listener: "",
    backend: "",
    protocol: "http",
    method,
    status,
    reason: "InvalidRequest",
    seconds,
    responseBytes: Buffer.byteLength(body),
    retries: 0,
    custom
  })
  const log = env.accessLog()
  if (!log.enabled) return
  log.log(REJECTED_FIELDS, [
    sourceAddr(req.socket.remoteAddress ?? "", req.socket.remotePort ?? 0),
    method,
    `HTTP/${req.httpVersion}`,
    status,
    "http",
    detail,
    "InvalidRequest",
    `${Math.round(seconds * 1000)}ms`
  ])
}

/**
 * The downstream side of a streamed body, counting the bytes that pass (`responseBytes`): one
 * object per streamed response, whatever kind of `StreamBody` it is.
 */
class CountingSink implements BodySink {
  private readonly res: ServerResponse
  private readonly ctx: ProxyRequest
  private readonly sends: SendWatch
  constructor(res: ServerResponse, ctx: ProxyRequest, sends: SendWatch) {
    this.res = res
    this.ctx = ctx
    this.sends = sends
  }
  write(chunk: Uint8Array): boolean {
    this.ctx.responseBytes += chunk.length
    if (this.res.write(chunk)) return true
    this.sends.watch(this.res, this.ctx)
    return false
  }
  end(): void {
    this.res.end()
  }
  destroy(error?: Error): void {
    this.res.destroy(error)
  }
  once(event: "drain" | "close", listener: () => void): unknown {
    return this.res.once(event, listener)
  }
  get writableFinished(): boolean {
    return this.res.writableFinished
  }
  get writableNeedDrain(): boolean {
    return this.res.writableNeedDrain
  }
}

const sourceAddr = (address: string, port: number) => (address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`)

/** `sends` with `ctx`: a response the client does not take is watched (SendWatch.ts). */
const writeResponse = (req: IncomingMessage, res: ServerResponse, ctx: ProxyRequest | undefined, response: ProxyResponse, sends?: SendWatch) => {
  const queued = ctx?.queuedResponseHeaders
  if (queued !== undefined) for (const [name, value] of queued) Headers.append(response.headers, name, value)
  const open = ctx?.openBodies
  if (open !== undefined) for (const b of open) if (b !== response.body) b.abort(new Error("response not used"))
  const streamed = response.body
  const body = streamed !== undefined && typeof streamed === "object" && "_tag" in streamed ? streamed.complete?.() ?? streamed : streamed
  if (body === undefined || typeof body === "string" || body instanceof Uint8Array) {
    const length = body === undefined ? 0 : typeof body === "string" ? Buffer.byteLength(body) : body.length
    if (body !== undefined && response.headers["content-length"] === undefined) response.headers["content-length"] = String(length)
    res.writeHead(response.status, response.headers)
    const head = req.method === "HEAD"
    res.end(head ? undefined : body)
    if (ctx !== undefined && !head) {
      ctx.responseBytes += length
      sends?.watch(res, ctx)
    }
    return
  }
  res.writeHead(response.status, response.headers)
  body.pipeTo(ctx === undefined || sends === undefined ? res : new CountingSink(res, ctx, sends))
}

const bindLabel = (port: number) => `bind/${port}`

/**
 * The listener is chosen by Host, the TLS context (and so the client CA) by SNI: a client
 * certificate verified for one listener must not open another listener with a different client
 * CA on the same port (SNI of a listener without mTLS, Host of one with it). The handshake's
 * listener is found exactly as `Listeners.ts` chose its context.
 */
const verifiedFor = (bind: CompiledBind, listener: CompiledListener, socket: unknown): boolean => {
  const ca = listener.tls?.options.ca
  if (ca === undefined) return true
  if (!(socket instanceof TLSSocket) || !socket.authorized) return false
  const sni = socket.servername
  const handshake = typeof sni === "string"
    ? (bind.listeners.find(sni.toLowerCase()) ?? bind.all[0])
    : bind.all.find((l) => l.tls !== undefined)
  if (handshake === listener) return true
  const verifiedWith = handshake?.tls?.options.ca
  return verifiedWith !== undefined && verifiedWith.equals(ca)
}

export const make = (env: HandlerEnv, port: number, scheme: "http" | "https") => {
  const bindName = bindLabel(port)
  const bodies = new BodyWatch(env.bodyIdleTimeoutMs)
  const sends = new SendWatch(env.sendTimeoutMs)
  const run = (handler: Handler, ctx: ProxyRequest, onExit: (exit: Exit.Exit<ProxyResponse, ProxyError.ProxyError>) => void) =>
    // The request's context is the process context plus this request: one map copy, and no
    // wrapper effect around the handler.
    Effect.runCallbackWith(Context.add(env.context, RequestContext, ctx))(handler, { onExit })

  return (req: IncomingMessage, res: ServerResponse): void => {
    const startTime = performance.now()
    if (req.httpVersion === "1.0" && req.headers["transfer-encoding"] !== undefined) {
      // RFC 9112 §6.1: Transfer-Encoding on HTTP/1.0 means the framing cannot be trusted.
      return reject(env, port, req, res, startTime, 400, "transfer-encoding on HTTP/1.0", true)
    }
    if (req.url !== undefined && req.url.length > MAX_TARGET_LENGTH) {
      return reject(env, port, req, res, startTime, 414, "request target too long", true)
    }
    const read = readHeaders(req.rawHeaders, env.maxHeaders())
    if (typeof read === "number") {
      return reject(env, port, req, res, startTime, read, read === 431 ? "too many headers" : "duplicate host or underscore in header name", true)
    }
    const headers = read.headers
    const target = normalizeTarget(req.url ?? "/")
    if ("error" in target) return reject(env, port, req, res, startTime, 400, target.error, false)
    const authority = target.authority ?? Headers.get(headers, "host") ?? ""
    if (authority === "") return reject(env, port, req, res, startTime, 400, "no host", false)
    if (target.authority !== undefined) headers["host"] = target.authority
    const socket = req.socket
    const ctx = new ProxyRequest(
      req,
      req.method ?? "GET",
      target.path,
      target.query,
      hostOf(authority),
      authority,
      scheme,
      `HTTP/${req.httpVersion}`,
      headers,
      socket.remoteAddress ?? "",
      socket.remotePort ?? 0,
      startTime
    )
    ctx.hasBody = read.hasBody
    const bind = env.bind(port)
    ctx.bind = bindName
    let listener: CompiledListener | undefined
    if (bind !== undefined) {
      listener = bind.listeners.find(ctx.host)
      if (listener !== undefined && !verifiedFor(bind, listener, socket)) listener = undefined
      if (listener !== undefined) {
        ctx.gateway = listener.ir.gatewayName
        ctx.listener = listener.ir.name
      }
    }
    const tracer = env.tracer()
    if (tracer !== undefined) tracer.begin(ctx)
    let error: ProxyError.ProxyError | undefined
    let written: ProxyResponse | undefined
    let interrupt: ((id?: number) => void) | undefined
    let done = false
    let watched: Watched | undefined
    res.once("close", () => {
      if (watched !== undefined) bodies.done(watched)
      if (!done) interrupt?.()
      const open = ctx.openBodies
      if (!res.writableFinished && open !== undefined) for (const b of open) b.abort(new Error("downstream closed"))
      complete(env, ctx, res, error, written)
    })
    const finish = (exit: Exit.Exit<ProxyResponse, ProxyError.ProxyError>) => {
      done = true
      if (res.destroyed) return
      let response: ProxyResponse
      if (Exit.isSuccess(exit)) {
        response = exit.value
      } else {
        const failure = exit.cause.reasons.find(Cause.isFailReason)
        if (failure !== undefined) {
          error = failure.error
        } else if (Cause.hasInterruptsOnly(exit.cause)) {
          return
        } else {
          error = ProxyError.make({ _tag: "Internal", cause: Cause.squash(exit.cause) })
        }
        response = ProxyError.toResponse(error)
      }
      written = response
      writeSafely(req, res, ctx, response, sends)
    }
    if (listener === undefined) {
      return finish(Exit.fail(ProxyError.make({ _tag: "ListenerNotFound" })))
    }
    if (ctx.hasBody) {
      watched = bodies.watch(req, () => {
        // Answered already: the rest of the body is not coming, so the connection cannot be reused.
        if (done) return void socket.destroy()
        interrupt?.()
        finish(Exit.fail(ProxyError.make({ _tag: "BodyTimeout" })))
      })
    }
    interrupt = run(listener.handler, ctx, finish)
  }
}

/** A header value a policy produced that Node refuses must not crash the process. */
const writeSafely = (req: IncomingMessage, res: ServerResponse, ctx: ProxyRequest, response: ProxyResponse, sends: SendWatch) => {
  try {
    writeResponse(req, res, ctx, response, sends)
  } catch {
    if (!res.headersSent) writeResponse(req, res, undefined, Response.text(500, "internal error"))
    else res.destroy()
  }
}

const complete = (
  env: HandlerEnv,
  ctx: ProxyRequest,
  res: ServerResponse,
  error: ProxyError.ProxyError | undefined,
  written: ProxyResponse | undefined
) => {
  const seconds = (performance.now() - ctx.startTime) / 1000
  const status = res.headersSent ? res.statusCode : 0
  const route = ctx.route
  const reason = error !== undefined ? ProxyError.reasonLabel(error) : ctx.directResponse ? "DirectResponse" : "Upstream"
  const mcp = ctx.mcp
  const a2a = ctx.a2a
  const protocol = mcp !== undefined ? "mcp" : a2a !== undefined ? "a2a" : "http"
  const resourceType = mcp?.method === undefined ? undefined : mcpResourceType(mcp.method)
  const log = env.accessLog()
  const telemetry = env.telemetry()
  // CEL work only when the config asks for it: the default path evaluates nothing.
  let logged = log.enabled
  let extra: ReadonlyArray<readonly [string, unknown]> | undefined
  let custom: ReadonlyArray<string | undefined> | undefined
  if (telemetry.filter !== undefined || telemetry.add.length > 0 || telemetry.metricLabels.length > 0) {
    const evaluated = Telemetry.evaluate(telemetry, ctx, written ?? new Response.ProxyResponse(status, {}, undefined))
    logged = logged && evaluated.log
    extra = evaluated.fields
    custom = evaluated.labels
  }
  const record = {
    route,
    bind: ctx.bind,
    gateway: ctx.gateway,
    listener: ctx.listener,
    backend: ctx.backend,
    protocol,
    method: ctx.method,
    status,
    reason,
    seconds,
    responseBytes: ctx.responseBytes,
    retries: ctx.retryAttempt ?? 0,
    custom
  }
  if (mcp?.method !== undefined) {
    env.metrics.mcp({
      method: mcp.method,
      resource_type: resourceType ?? "",
      server: mcp.target ?? "",
      resource: mcp.toolName ?? mcp.promptName ?? mcp.resourceUri ?? ""
    }, record)
  }
  env.metrics.request(record)
  const trace = ctx.trace
  if (trace !== undefined) {
    trace.tracer.end(ctx, trace, status, closedText(ctx, res, error), written)
  }
  if (!logged) return
  log.log(REQUEST_FIELDS, [
    ctx.gateway,
    ctx.listener,
    route?.ruleName,
    route?.label,
    ctx.endpoint,
    sourceAddr(ctx.sourceAddress, ctx.sourcePort),
    sourceIdentity(ctx),
    ctx.method,
    // What the client asked for, not what a urlRewrite made of it.
    ctx.originalUrl?.host ?? ctx.host,
    ctx.originalUrl?.path ?? ctx.path,
    ctx.version,
    status,
    trace?.traceId,
    trace?.spanId,
    jwtSub(ctx.celExtensions?.jwt),
    protocol,
    a2a?.method,
    a2a?.outcome,
    a2a?.errorCode,
    a2a?.resultKind,
    a2a?.taskState,
    a2a?.contextId,
    mcp?.method,
    mcp?.target,
    resourceType,
    mcp?.resourceUri,
    mcp?.toolName,
    mcp?.promptName,
    mcp?.sessionRef,
    ctx.retryAttempt,
    closedText(ctx, res, error),
    // Upstream logs the reason only when something other than the upstream answered.
    reason === "Upstream" ? undefined : reason,
    `${Math.round(seconds * 1000)}ms`
  ], extra)
}

/** `mcp.resource.type` / `resource_type`: what kind of item the method addresses (none for lists, initialize…). */
const mcpResourceType = (method: string): string | undefined => {
  switch (method) {
    case "tools/call":
      return "tool"
    case "prompts/get":
      return "prompt"
    case "resources/read":
    case "resources/subscribe":
    case "resources/unsubscribe":
      return "resource"
    default:
      return undefined
  }
}

/** The `sub` claim of a verified JWT (jwtAuth's CEL `jwt` root), as upstream logs it. */
const jwtSub = (claims: unknown): string | undefined =>
  typeof claims === "object" && claims !== null && "sub" in claims && typeof claims.sub === "string" ? claims.sub : undefined

/** The access log's and trace's error: the pipeline's, else why the response did not finish. */
const closedText = (ctx: ProxyRequest, res: ServerResponse, error: ProxyError.ProxyError | undefined): string | undefined =>
  error !== undefined
    ? errorText(error)
    : ctx.sendTimedOut
    ? "response send timeout"
    : res.writableFinished
    ? undefined
    : "downstream closed"

/** Error text for logs: the reason and, for upstream failures, the cause (never sent to clients). */
const errorText = (error: ProxyError.ProxyError): string => {
  const reason = error.reason
  if (reason._tag === "UpstreamFailed" || reason._tag === "Internal") {
    const cause = reason.cause
    return `${ProxyError.toResponse(error).body as string}: ${cause instanceof Error ? cause.message : String(cause)}`
  }
  if (reason._tag === "ProcessingFailed") return `processing failed: ${reason.detail}`
  return ProxyError.toResponse(error).body as string
}
