/**
 * Streamable HTTP targets: JSON-RPC POSTed to the target's path over the shared undici pools,
 * answered as JSON or as an SSE stream (server messages before the response are delivered
 * with backpressure: the undici body is paused while the client's stream is full). The
 * upstream `mcp-session-id` is kept and sent on every later call; it is also the resume
 * token sealed into the gateway's session id. `listen` opens the upstream GET stream; closing
 * the session DELETEs the upstream session.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type { Readable } from "node:stream"
import type { Dispatcher } from "undici"
import { type PoolSettings, UpstreamPools, type UpstreamTls } from "../../backends/Pools.ts"
import * as Undici from "../../backends/Undici.ts"
import type * as Ir from "../../ir/Ir.ts"
import { MAX_MESSAGE_BYTES } from "../EventStream.ts"
import * as McpSchema from "../McpSchema.ts"
import { type CallContext, type Connect, httpOrigin, type Inbound, type Upstream, connectionFailed, UpstreamError } from "../Upstream.ts"
import * as Messages from "./Messages.ts"

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

const readAll = (body: Readable, limit: number, onDone: (text: string | undefined) => void) => {
  const chunks: Array<Buffer> = []
  let size = 0
  body.on("data", (c: Buffer) => {
    size += c.length
    if (size > limit) {
      body.destroy()
      onDone(undefined)
      return
    }
    chunks.push(c)
  })
  body.on("end", () => onDone(Buffer.concat(chunks).toString("utf8")))
  body.on("error", () => onDone(undefined))
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
  private readonly host: string
  private readonly inbound: Inbound

  constructor(target: string, pool: Dispatcher, url: string, host: string, inbound: Inbound, sessionId: string | undefined) {
    this.target = target
    this.pool = pool
    this.url = url
    this.host = host
    this.inbound = inbound
    this.sessionId = sessionId
  }

  private headers(call: CallContext | undefined, accept: string, method: string | undefined): Record<string, string | Array<string>> {
    const h: Record<string, string | Array<string>> = { ...call?.headers }
    h["host"] = this.host
    h["accept"] = accept
    if (method !== undefined) h["content-type"] = "application/json"
    if (call?.protocolVersion !== undefined && method !== "initialize") h["mcp-protocol-version"] = call.protocolVersion
    if (this.sessionId !== undefined) h["mcp-session-id"] = this.sessionId
    return h
  }

  private error(message: string, status?: number, body?: string) {
    return new UpstreamError({ target: this.target, message, status, body })
  }

  /** POSTs one message; `onResponse` gets the response with `id` (requests) or nothing (notifications). */
  private post(
    message: unknown,
    method: string | undefined,
    id: number | undefined,
    call: CallContext | undefined
  ): Effect.Effect<McpSchema.Response | undefined, UpstreamError> {
    return Effect.callback<McpSchema.Response | undefined, UpstreamError>((resume) => {
      const abort = new AbortController()
      let done = false
      const finish = (e: Effect.Effect<McpSchema.Response | undefined, UpstreamError>) => {
        if (done) return
        done = true
        resume(e)
      }
      Undici.request(this.url, {
        dispatcher: this.pool,
        method: "POST",
        headers: this.headers(call, "application/json, text/event-stream", method),
        body: JSON.stringify(message),
        signal: abort.signal
      }).then(
        (res) => {
          const sid = res.headers["mcp-session-id"]
          if (typeof sid === "string" && method === "initialize") this.sessionId = sid
          const type = String(res.headers["content-type"] ?? "")
          if (res.statusCode >= 400) {
            return readAll(res.body, ERROR_BODY_BYTES, (text) =>
              finish(Effect.fail(this.error(`HTTP ${res.statusCode}`, res.statusCode, text?.slice(0, ERROR_BODY_BYTES)))))
          }
          if (id === undefined || res.statusCode === 202) {
            res.body.resume()
            return finish(Effect.succeed(undefined))
          }
          if (type.startsWith("text/event-stream")) return this.readStream(res.body, id, finish)
          readAll(res.body, MAX_MESSAGE_BYTES, (text) => {
            const parsed = text === undefined ? undefined : McpSchema.parse(text)
            if (parsed?._tag === "Response") finish(Effect.succeed(parsed.message))
            else finish(Effect.fail(this.error("invalid response from upstream")))
          })
        },
        (cause: unknown) => finish(Effect.fail(connectionFailed(this.target, cause)))
      )
      return Effect.sync(() => {
        done = true
        abort.abort()
      })
    })
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
    Effect.sync(() => {
      if (this.listening !== undefined || this.closed) return
      const abort = new AbortController()
      this.listening = abort
      Undici.request(this.url, { dispatcher: this.pool, method: "GET", headers: this.headers(call, "text/event-stream", undefined), signal: abort.signal }).then(
        (res) => {
          if (res.statusCode !== 200) {
            res.body.resume()
            return
          }
          this.readStream(res.body, undefined, () => {})
        },
        () => {}
      )
    })

  readonly resumeToken = () => this.sessionId ?? null

  close(): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.closed = true
      this.listening?.abort()
      const sid = this.sessionId
      if (sid === undefined) return Effect.void
      return Effect.promise(() =>
        Undici.request(this.url, { dispatcher: this.pool, method: "DELETE", headers: { host: this.host, "mcp-session-id": sid } }).then(
          (res) => res.body.resume(),
          () => undefined
        )
      ).pipe(Effect.asVoid)
    })
  }
}
