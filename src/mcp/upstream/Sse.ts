/**
 * Legacy SSE targets (MCP 2024-11-05 "HTTP with SSE"): connecting GETs the stream (default
 * path `/sse`) and waits for its `endpoint` event; every client message is POSTed there and
 * the server's responses, notifications and requests all arrive on the stream. Responses are
 * matched to pending requests by the connection's own ids; the rest goes to the session with
 * backpressure (the undici body is paused while the client's stream is full). The endpoint
 * must be on the target's origin, so a server cannot point the gateway's POSTs elsewhere.
 * Closing the session aborts the stream; a stream that ends fails what is pending. Not
 * resumable: the stream is the upstream session. The GET is the transport's own request: it
 * carries what `Inbound.ownCall` gives, the forwarded headers of the client request the session
 * is connecting for (initialize, or the legacy SSE GET) edited by the target's policies. A call
 * carrying a signer (`CallContext.sign`) has each request signed as sent, body included.
 *
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type { Readable } from "node:stream"
import type { Dispatcher } from "undici"
import { type PoolSettings, UpstreamPools, type UpstreamTls } from "../../backends/Pools.ts"
import * as Undici from "../../backends/Undici.ts"
import type * as Ir from "../../ir/Ir.ts"
import * as McpSchema from "../McpSchema.ts"
import { type CallContext, type Connect, httpOrigin, type Inbound, sendSigned, type Upstream, connectionFailed, UpstreamError } from "../Upstream.ts"
import * as Messages from "./Messages.ts"

/** How long connecting waits for the `endpoint` event after the stream opened. */
export const ENDPOINT_TIMEOUT_MS = 10_000
/** Requests awaiting their response on one connection; more fail at once. */
export const MAX_PENDING_REQUESTS = 1024
/** Most of an error body kept for the log. */
const ERROR_BODY_BYTES = 4096

type Transport = Extract<Ir.McpTransport, { _tag: "Sse" }>

export const connector = (target: string, transport: Transport, settings: PoolSettings, tls: UpstreamTls | undefined): Effect.Effect<Connect, never, UpstreamPools> =>
  Effect.gen(function*() {
    const pools = yield* UpstreamPools
    const pool = pools.get(transport.target, settings, tls)
    const { host, origin } = httpOrigin(transport.target, tls !== undefined)
    return (inbound) =>
      Effect.acquireRelease(
        Effect.suspend(() => new SseConnection(target, pool, host, new URL(`${origin}${transport.path}`), inbound).open()),
        (conn) => Effect.sync(() => conn.close("session closed"))
      ).pipe(Effect.map((conn): Upstream => conn))
  })

type Settle = (response: McpSchema.Response | UpstreamError) => void

class SseConnection implements Upstream {
  readonly target: string
  private readonly pool: Dispatcher
  private readonly host: string
  private readonly base: URL
  private readonly inbound: Inbound
  private readonly abort = new AbortController()
  private readonly pending = new Map<number, Settle>()
  private nextId = 1
  /** Path and query to POST to, from the `endpoint` event. */
  private endpoint: string | undefined = undefined
  private closed = false
  private onEndpoint: ((error: UpstreamError | undefined) => void) | undefined = undefined

  constructor(target: string, pool: Dispatcher, host: string, base: URL, inbound: Inbound) {
    this.target = target
    this.pool = pool
    this.host = host
    this.base = base
    this.inbound = inbound
  }

  private error(message: string, status?: number, body?: string) {
    return new UpstreamError({ target: this.target, message, status, body })
  }

  /** GETs the stream and succeeds once the endpoint is known. */
  open(): Effect.Effect<SseConnection, UpstreamError> {
    return Effect.flatMap(this.inbound.ownCall(), (call) => {
      const headers: Record<string, string | Array<string>> = { ...call.headers }
      headers["host"] = this.host
      headers["accept"] = "text/event-stream"
      const get = this.get(headers)
      return call.sign === undefined ? get : Effect.andThen(call.sign({ method: "GET", path: this.base.pathname + this.base.search, headers, body: undefined }), get)
    })
  }

  private get(headers: Record<string, string | Array<string>>): Effect.Effect<SseConnection, UpstreamError> {
    return Effect.callback<SseConnection, UpstreamError>((resume) => {
      let done = false
      const timer = setTimeout(() => settle(this.error("no endpoint event from upstream")), ENDPOINT_TIMEOUT_MS)
      const settle = (error: UpstreamError | undefined) => {
        if (done) return
        done = true
        clearTimeout(timer)
        this.onEndpoint = undefined
        if (error === undefined) resume(Effect.succeed(this))
        else {
          this.close(error.message)
          resume(Effect.fail(error))
        }
      }
      this.onEndpoint = settle
      Undici.request(this.base.href, {
        dispatcher: this.pool,
        method: "GET",
        headers,
        signal: this.abort.signal
      }).then(
        (res) => {
          if (res.statusCode !== 200) {
            res.body.resume()
            return settle(this.error(`HTTP ${res.statusCode}`, res.statusCode))
          }
          this.read(res.body)
        },
        (cause: unknown) => settle(connectionFailed(this.target, cause))
      )
      return Effect.sync(() => {
        if (done) return
        done = true
        clearTimeout(timer)
        this.close("connect interrupted")
      })
    })
  }

  private read(body: Readable): void {
    Messages.read(
      body,
      this.inbound,
      (response) => {
        const id = response.id
        const settle = typeof id === "number" ? this.pending.get(id) : undefined
        if (settle !== undefined && typeof id === "number") {
          this.pending.delete(id)
          settle(response)
        }
      },
      (error) => this.end(error),
      (id) => {
        const settle = typeof id === "number" ? this.pending.get(id) : undefined
        if (settle !== undefined && typeof id === "number") {
          this.pending.delete(id)
          settle(this.error("invalid response from upstream"))
        }
      },
      (event) => {
        if (event.event === "endpoint") {
          let url: URL | undefined
          try {
            url = new URL(event.data.trim(), this.base)
          } catch {
            url = undefined
          }
          if (url === undefined || url.origin !== this.base.origin) return this.onEndpoint?.(this.error("endpoint is not on the target's origin"))
          this.endpoint = url.pathname + url.search
          return this.onEndpoint?.(undefined)
        }
      }
    )
    body.on("end", () => this.end("upstream stream ended"))
    body.on("error", () => this.end("upstream stream failed"))
  }

  private end(reason: string): void {
    if (this.closed) return
    this.onEndpoint?.(this.error(reason))
    this.close(reason)
    this.inbound.closed(reason)
  }

  /** POSTs one message to the endpoint; fails on a transport error or an HTTP error status. */
  private post(message: unknown, call: CallContext): Effect.Effect<void, UpstreamError> {
    return Effect.suspend(() => {
      const endpoint = this.endpoint
      if (this.closed || endpoint === undefined) return Effect.fail(this.error("upstream connection closed"))
      const headers: Record<string, string | Array<string>> = { ...call.headers }
      headers["host"] = this.host
      headers["content-type"] = "application/json"
      if (call.protocolVersion !== undefined) headers["mcp-protocol-version"] = call.protocolVersion
      return sendSigned(call, "POST", endpoint, headers, JSON.stringify(message), (body) => this.postTo(endpoint, headers, body))
    })
  }

  private postTo(endpoint: string, headers: Record<string, string | Array<string>>, body: string | Buffer): Effect.Effect<void, UpstreamError> {
    return Effect.callback<void, UpstreamError>((resume) => {
      const abort = new AbortController()
      Undici.request(new URL(endpoint, this.base).href, { dispatcher: this.pool, method: "POST", headers, body, signal: abort.signal }).then(
        (res) => {
          if (res.statusCode < 400) {
            res.body.resume()
            return resume(Effect.void)
          }
          const chunks: Array<Buffer> = []
          let size = 0
          res.body.on("data", (c: Buffer) => {
            if (size < ERROR_BODY_BYTES) chunks.push(c)
            size += c.length
          })
          const fail = () => resume(Effect.fail(this.error(`HTTP ${res.statusCode}`, res.statusCode, Buffer.concat(chunks).toString("utf8").slice(0, ERROR_BODY_BYTES))))
          res.body.on("end", fail)
          res.body.on("error", fail)
        },
        (cause: unknown) => resume(Effect.fail(connectionFailed(this.target, cause)))
      )
      return Effect.sync(() => abort.abort())
    })
  }

  readonly request = (method: string, params: Record<string, unknown> | undefined, call: CallContext) =>
    Effect.suspend(() => {
      if (this.pending.size >= MAX_PENDING_REQUESTS) return Effect.fail(this.error("too many requests in flight"))
      const id = this.nextId++
      const response = Deferred.makeUnsafe<McpSchema.Response, UpstreamError>()
      // Registered before the POST: the answer may arrive on the stream before the 202 does.
      this.pending.set(id, (r) => void Deferred.doneUnsafe(response, r instanceof UpstreamError ? Effect.fail(r) : Effect.succeed(r)))
      const message = params === undefined ? { jsonrpc: "2.0", id, method } : { jsonrpc: "2.0", id, method, params }
      return this.post(message, call).pipe(
        Effect.andThen(Deferred.await(response)),
        // An abandoned request (the client cancelled it or went away): the server is told, in its own id space.
        Effect.onInterrupt(() =>
          this.closed || method === "initialize"
            ? Effect.void
            : Effect.forkDetach(Effect.ignore(this.post({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: id, reason: "cancelled by the client" } }, call)))
        ),
        Effect.ensuring(Effect.sync(() => this.pending.delete(id)))
      )
    })

  readonly send = (message: McpSchema.Notification | McpSchema.Response, call: CallContext) => this.post(message, call)

  /** The stream opened on connect already carries the server's own messages. */
  readonly listen = (_call: CallContext) => Effect.void

  readonly serverMessages = true
  readonly resumeToken = () => undefined

  close(reason: string): void {
    if (this.closed) return
    this.closed = true
    this.abort.abort()
    const pending = [...this.pending.values()]
    this.pending.clear()
    for (const settle of pending) settle(this.error(reason))
  }
}
