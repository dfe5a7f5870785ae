/**
 * Streamable HTTP targets: JSON-RPC POSTed to the target's path over the shared undici pools,
 * answered as JSON or as an SSE stream (server messages before the response are delivered
 * with backpressure: the undici body is paused while the client's stream is full). The
 * upstream `mcp-session-id` is kept and sent on every later call; it is also the resume
 * token sealed into the gateway's session id. `listen` opens the upstream GET stream; closing
 * the session DELETEs the upstream session, with the headers of `Inbound.ownCall` (the call
 * the session ended on, edited by the target's policies), unless a config reload handed the
 * session to the next snapshot (`Inbound.handedOver`). A call carrying a signer
 * (`CallContext.sign`) has each request signed as sent, body included.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type { Readable } from "node:stream"
import { StringDecoder } from "node:string_decoder"
import type { Dispatcher } from "undici"
import { type PoolSettings, UpstreamPools, type UpstreamTls } from "../../backends/Pools.ts"
import * as Undici from "../../backends/Undici.ts"
import type * as Ir from "../../ir/Ir.ts"
import { MAX_MESSAGE_BYTES, type SseParser } from "../EventStream.ts"
import * as McpSchema from "../McpSchema.ts"
import { type CallContext, type Connect, httpOrigin, type Inbound, logFailure, sendSigned, type Upstream, connectionFailed, UpstreamError } from "../Upstream.ts"
import * as Messages from "./Messages.ts"

/** How long closing a session waits for the upstream to answer its DELETE. */
export const DELETE_TIMEOUT_MS = 2000

/** Most of an error body kept for the log. */
const ERROR_BODY_BYTES = 4096

type Transport = Extract<Ir.McpTransport, { _tag: "StreamableHttp" }>

export const connector = (target: string, transport: Transport, settings: PoolSettings, tls: UpstreamTls | undefined): Effect.Effect<Connect, never, UpstreamPools> =>
  Effect.gen(function*() {
    const pools = yield* UpstreamPools
    const pool = pools.get(transport.target, settings, tls)
    const { host, origin } = httpOrigin(transport.target, tls !== undefined)
    return (inbound, resume) =>
      Effect.acquireRelease(
        Effect.sync(() => new HttpConnection(target, pool, `${origin}${transport.path}`, host, inbound, resume ?? undefined)),
        (conn) => conn.close()
      ).pipe(Effect.map((conn): Upstream => conn))
  })

/**
 * One POST as an undici dispatch handler (no Readable, no AbortController, no promise per
 * call): the answer is read as it arrives — a JSON body collected up to MAX_MESSAGE_BYTES, an
 * SSE body parsed incrementally (server messages delivered with backpressure: the socket is
 * paused while the session's stream is full), an error body kept (ERROR_BODY_BYTES) for the log.
 */
class PostExchange implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined
  private done = false
  private aborted = false
  private mode: "json" | "sse" | "error" | "ignore" = "ignore"
  private status = 0
  private chunks: Array<Buffer> = []
  private size = 0
  private parser: SseParser | undefined
  private decoder: StringDecoder | undefined
  private readonly connection: HttpConnection
  private readonly method: string | undefined
  private readonly id: number | undefined
  private readonly resume: (effect: Effect.Effect<McpSchema.Response | undefined, UpstreamError>) => void

  constructor(
    connection: HttpConnection,
    method: string | undefined,
    id: number | undefined,
    resume: (effect: Effect.Effect<McpSchema.Response | undefined, UpstreamError>) => void
  ) {
    this.connection = connection
    this.method = method
    this.id = id
    this.resume = resume
  }

  private finish(effect: Effect.Effect<McpSchema.Response | undefined, UpstreamError>): void {
    if (this.done) return
    this.done = true
    this.resume(effect)
  }

  fail(error: UpstreamError): void {
    this.finish(Effect.fail(error))
  }

  /** The caller went away: stop the exchange (the upstream sees the connection reset or the request end). */
  abort(): void {
    this.done = true
    this.aborted = true
    if (this.controller !== undefined && !this.controller.aborted) this.controller.abort(new Error("request cancelled"))
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.aborted) controller.abort(new Error("request cancelled"))
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | Array<string> | undefined>): void {
    this.status = statusCode
    this.connection.sessionFrom(this.method, headers)
    if (statusCode >= 400) {
      this.mode = "error"
      return
    }
    if (this.id === undefined || statusCode === 202) {
      this.mode = "ignore"
      this.finish(Effect.succeed(undefined))
      return
    }
    const type = headers["content-type"]
    if (typeof type === "string" && type.startsWith("text/event-stream")) {
      this.mode = "sse"
      this.decoder = new StringDecoder("utf8")
      const id = this.id
      this.parser = Messages.reader(this.connection.inboundSide, (response) => {
        if (response.id === id) this.finish(Effect.succeed(response))
      }, (invalid) => {
        if (invalid === id) this.fail(this.connection.fault("invalid response from upstream"))
      }, {
        pause: () => {
          if (controller.paused) return false
          controller.pause()
          return true
        },
        resume: () => controller.resume()
      })
      return
    }
    this.mode = "json"
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    switch (this.mode) {
      case "ignore":
        return
      case "sse": {
        const error = this.parser!.push(this.decoder!.write(chunk))
        if (error !== undefined) {
          this.fail(this.connection.fault(error))
          controller.abort(new Error(error))
        }
        return
      }
      case "json":
      case "error": {
        const limit = this.mode === "json" ? MAX_MESSAGE_BYTES : ERROR_BODY_BYTES
        this.size += chunk.length
        if (this.size > limit) {
          if (this.mode === "json") {
            this.fail(this.connection.fault("invalid response from upstream"))
            controller.abort(new Error("upstream message too large"))
          }
          return
        }
        this.chunks.push(chunk)
      }
    }
  }

  onResponseEnd(): void {
    switch (this.mode) {
      case "ignore":
        return
      case "error": {
        const text = Buffer.concat(this.chunks).toString("utf8").slice(0, ERROR_BODY_BYTES)
        return this.fail(this.connection.fault(`HTTP ${this.status}`, this.status, text))
      }
      case "json": {
        const parsed = McpSchema.parse(Buffer.concat(this.chunks).toString("utf8"))
        if (parsed?._tag === "Response") return this.finish(Effect.succeed(parsed.message))
        return this.fail(this.connection.fault("invalid response from upstream"))
      }
      case "sse":
        // Lazily: the end follows every answered stream too, and an eager error would build a
        // stack trace per call.
        if (!this.done) this.fail(this.connection.fault("upstream stream ended without a response"))
    }
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.fail(connectionFailed(this.connection.target, error))
  }
}

class HttpConnection implements Upstream {
  readonly target: string
  private sessionId: string | undefined
  private nextId = 1
  private listening: AbortController | undefined
  private closed = false
  private readonly pool: Dispatcher
  /** Absolute URL on the pool's origin (the pool decides where it connects). */
  private readonly url: string
  /** The URL's path and query, for `dispatch`. */
  private readonly path: string
  private readonly host: string
  private readonly inbound: Inbound

  constructor(target: string, pool: Dispatcher, url: string, host: string, inbound: Inbound, sessionId: string | undefined) {
    this.target = target
    this.pool = pool
    this.url = url
    const parsed = new URL(url)
    this.path = parsed.pathname + parsed.search
    this.host = host
    this.inbound = inbound
    this.sessionId = sessionId
  }

  private headers(call: CallContext | undefined, accept: string | undefined, method: string | undefined): Record<string, string | Array<string>> {
    const h: Record<string, string | Array<string>> = { ...call?.headers }
    h["host"] = this.host
    if (accept !== undefined) h["accept"] = accept
    if (method !== undefined) h["content-type"] = "application/json"
    if (call?.protocolVersion !== undefined && method !== "initialize") h["mcp-protocol-version"] = call.protocolVersion
    if (this.sessionId !== undefined) h["mcp-session-id"] = this.sessionId
    return h
  }

  private error(message: string, status?: number, body?: string) {
    return new UpstreamError({ target: this.target, message, status, body })
  }

  /** POSTs one message; succeeds with the response with `id` (requests) or nothing (notifications). */
  private post(
    message: unknown,
    method: string | undefined,
    id: number | undefined,
    call: CallContext | undefined
  ): Effect.Effect<McpSchema.Response | undefined, UpstreamError> {
    return Effect.suspend(() => {
      const headers = this.headers(call, "application/json, text/event-stream", method)
      return sendSigned(call, "POST", this.path, headers, JSON.stringify(message), (body) => this.dispatchPost(headers, body, method, id, call))
    })
  }

  private dispatchPost(
    headers: Record<string, string | Array<string>>,
    body: string | Buffer,
    method: string | undefined,
    id: number | undefined,
    call: CallContext | undefined
  ): Effect.Effect<McpSchema.Response | undefined, UpstreamError> {
    return Effect.callback<McpSchema.Response | undefined, UpstreamError>((resume) => {
      const exchange = new PostExchange(this, method, id, resume)
      try {
        this.pool.dispatch({ path: this.path, method: "POST", headers, body }, exchange)
      } catch (cause) {
        // undici throws synchronously on invalid input (a CR/LF in a forwarded header).
        exchange.fail(connectionFailed(this.target, cause))
        return
      }
      return Effect.sync(() => {
        exchange.abort()
        // An abandoned request (the client cancelled it or went away): the server is told, in its own id space.
        if (id !== undefined && method !== "initialize") this.cancelled(id, call)
      })
    })
  }

  /** Sends `notifications/cancelled` for request `id`, in the background (the interruption does not wait on it). */
  private cancelled(id: number, call: CallContext | undefined): void {
    if (this.closed) return
    const notification = { jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: id, reason: "cancelled by the client" } }
    Effect.runFork(Effect.ignore(this.post(notification, notification.method, undefined, call)))
  }

  /** Called by a POST's exchange: an initialize answer names the upstream session. */
  sessionFrom(method: string | undefined, headers: Record<string, string | Array<string> | undefined>): void {
    const sid = headers["mcp-session-id"]
    if (typeof sid === "string" && method === "initialize") this.sessionId = sid
  }

  /** For a POST's exchange: the session's inbound side and the error constructor. */
  get inboundSide(): Inbound {
    return this.inbound
  }

  fault(message: string, status?: number, body?: string): UpstreamError {
    return this.error(message, status, body)
  }

  /** Reads an SSE response: server messages are delivered, the response with `id` resolves. */
  private readStream(body: Readable, id: number | undefined, finish: (e: Effect.Effect<McpSchema.Response | undefined, UpstreamError>) => void) {
    Messages.read(body, this.inbound, (response) => {
      if (response.id === id) finish(Effect.succeed(response))
    }, (error) => finish(Effect.fail(this.error(error))), (invalid) => {
      if (invalid === id) finish(Effect.fail(this.error("invalid response from upstream")))
    })
    // Lazily: `end` follows every answered stream too, and an eager error would build a stack
    // trace per call (≈ 3 % of the gateway's CPU per tools/call in bench/mcp).
    body.on("end", () => finish(Effect.suspend(() => Effect.fail(this.error("upstream stream ended without a response")))))
    body.on("error", (e) => finish(Effect.fail(connectionFailed(this.target, e))))
  }

  readonly request = (method: string, params: Record<string, unknown> | undefined, call: CallContext) =>
    Effect.suspend(() => {
      const id = this.nextId++
      const message = params === undefined ? { jsonrpc: "2.0", id, method } : { jsonrpc: "2.0", id, method, params }
      return Effect.flatMap(this.post(message, method, id, call), (r) =>
        r === undefined ? Effect.fail(this.error("no response from upstream")) : Effect.succeed(r)
      )
    })

  readonly send = (message: McpSchema.Notification | McpSchema.Response, call: CallContext) =>
    Effect.asVoid(this.post(message, "method" in message ? message.method : undefined, undefined, call))

  readonly listen = (call: CallContext) =>
    Effect.suspend(() => {
      if (this.listening !== undefined || this.closed) return Effect.void
      const abort = new AbortController()
      this.listening = abort
      const headers = this.headers(call, "text/event-stream", undefined)
      if (call.sign === undefined) return Effect.sync(() => this.open(abort, headers))
      return Effect.matchEffect(call.sign({ method: "GET", path: this.path, headers, body: undefined }), {
        onFailure: (e) => {
          if (this.listening === abort) this.listening = undefined
          return logFailure(e)
        },
        onSuccess: () => Effect.sync(() => this.open(abort, headers))
      })
    })

  /** Opens the GET stream (`listen`). */
  private open(abort: AbortController, headers: Record<string, string | Array<string>>): void {
    if (abort.signal.aborted) return
    Undici.request(this.url, { dispatcher: this.pool, method: "GET", headers, signal: abort.signal }).then(
      (res) => {
        if (res.statusCode !== 200) {
          res.body.resume()
          return
        }
        // An ended stream is reopened by the next `listen` (the client's next GET).
        this.readStream(res.body, undefined, () => {
          if (this.listening === abort) this.listening = undefined
        })
      },
      () => {}
    )
  }

  readonly serverMessages = true
  readonly resumeToken = () => this.sessionId ?? null

  close(): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.closed = true
      this.listening?.abort()
      const sid = this.sessionId
      // Handed to the next snapshot (a reload): it resumes this upstream session, which must live on.
      if (sid === undefined || this.inbound.handedOver()) return Effect.void
      // The DELETE carries what the target's other requests carry: forwarded headers, policy edits, a signature.
      const prepare = Effect.flatMap(this.inbound.ownCall(), (call) => {
        const headers = this.headers(call, undefined, undefined)
        return Effect.as(call.sign === undefined ? Effect.void : call.sign({ method: "DELETE", path: this.path, headers, body: undefined }), headers)
      })
      const send = (headers: Record<string, string | Array<string>>) =>
        Effect.promise(() =>
          Undici.request(this.url, {
            dispatcher: this.pool,
            method: "DELETE",
            headers,
            signal: AbortSignal.timeout(DELETE_TIMEOUT_MS)
          }).then(
            (res) => res.body.resume(),
            () => undefined
          )
        )
      // A session's end (and the gateway's shutdown) never waits on an upstream that does not
      // answer, nor on a credential that cannot be had (then no DELETE: it would be refused).
      return prepare.pipe(
        Effect.timeoutOption(DELETE_TIMEOUT_MS),
        Effect.flatMap((headers) => (headers._tag === "Some" ? send(headers.value) : Effect.void)),
        Effect.catch(logFailure),
        Effect.asVoid
      )
    })
  }
}
