/**
 * The response body, read into memory only when a policy needs its bytes (CEL `response.body`
 * in a transformation or a retry condition, a transformation that replaces the body). A
 * proxied body is normally a `StreamBody` the listener pipes straight to the client.
 *
 * `read(ctx, res, limit)` collects a streamed body once and puts the bytes on the response
 * (`res.body`), so every later reader (CEL `response.body`, the listener) sees them and the
 * upstream connection is released to its pool. A body larger than `limit` is not an error:
 * what was read is kept in front of the rest of the stream, the response still goes out whole
 * and streaming, and `read` answers `undefined` ("not available"), as for request bodies over
 * `maxBufferSize` (RequestBody.ts).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as ProxyError from "./ProxyError.ts"
import type { BodySink, ProxyResponse, StreamBody } from "./ProxyResponse.ts"
import type { ProxyRequest } from "./RequestContext.ts"

const EMPTY = new Uint8Array(0)

export const isStream = (body: ProxyResponse["body"]): body is StreamBody =>
  body !== undefined && typeof body !== "string" && !(body instanceof Uint8Array)

/** The body's bytes when they are already in memory (direct responses, a body read before). */
export const bytesOf = (res: ProxyResponse): Uint8Array | undefined => {
  const body = res.body
  if (body === undefined) return EMPTY
  if (typeof body === "string") return Buffer.from(body, "utf8")
  if (body instanceof Uint8Array) return body
  return undefined
}

const declaredLength = (res: ProxyResponse): number | undefined => {
  const raw = res.headers["content-length"]
  if (typeof raw !== "string") return undefined
  const n = Number(raw)
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined
}

type Listener = () => void

/**
 * The sink a body is collected into. Over the limit it stops accepting (the upstream pauses)
 * and, once the response is piped on, forwards to the real sink: the read prefix first, then
 * every later chunk, with the real sink's backpressure.
 */
class CollectingSink implements BodySink {
  chunks: Array<Uint8Array> = []
  size = 0
  target: BodySink | undefined
  ended = false
  failure: Error | undefined
  writableFinished = false
  private readonly limit: number
  private readonly onOver: () => void
  private readonly onDone: () => void
  private drain: Array<Listener> = []
  /** The upstream was told to wait (write returned false) and has not been released yet. */
  private owesDrain = false

  constructor(limit: number, onOver: () => void, onDone: () => void) {
    this.limit = limit
    this.onOver = onOver
    this.onDone = onDone
  }

  write(chunk: Uint8Array): boolean {
    const target = this.target
    if (target !== undefined) return target.write(chunk)
    this.chunks.push(chunk)
    this.size += chunk.length
    if (this.size <= this.limit) return true
    this.owesDrain = true
    this.onOver()
    return false
  }

  end(): void {
    this.ended = true
    if (this.target !== undefined) this.target.end()
    else this.onDone()
  }

  destroy(error?: Error): void {
    this.failure = error ?? new Error("response body aborted")
    if (this.target !== undefined) this.target.destroy(error)
    else this.onDone()
  }

  once(event: "drain" | "close", listener: Listener): unknown {
    if (event !== "drain") return this
    if (this.target === undefined) this.drain.push(listener)
    else if (this.owesDrain) {
      // The response was piped on synchronously, inside the write that said "wait", before the
      // upstream asked to be told when to go on: release it now.
      this.owesDrain = false
      listener()
    } else this.target.once("drain", listener)
    return this
  }

  /** Switches to forwarding: replays the prefix into `sink`, then lets the upstream resume. */
  forwardTo(sink: BodySink): void {
    this.target = sink
    for (const chunk of this.chunks) sink.write(chunk)
    this.chunks = []
    if (this.failure !== undefined) return sink.destroy(this.failure)
    if (this.ended) return sink.end()
    const waiting = this.drain
    this.drain = []
    if (waiting.length > 0) this.owesDrain = false
    for (const listener of waiting) listener()
  }
}

/** The rest of an over-limit body: the collected prefix, then the live upstream stream. */
class SpilledBody implements StreamBody {
  readonly _tag = "StreamBody"
  private readonly inner: StreamBody
  private readonly sink: CollectingSink
  constructor(inner: StreamBody, sink: CollectingSink) {
    this.inner = inner
    this.sink = sink
  }
  pipeTo(sink: BodySink): void {
    this.sink.forwardTo(sink)
  }
  abort(reason: Error): void {
    this.inner.abort(reason)
  }
}

const replaceOpen = (ctx: ProxyRequest, from: StreamBody, to: StreamBody | undefined): void => {
  const open = ctx.openBodies
  if (open === undefined) return
  const i = open.indexOf(from)
  if (i < 0) return
  if (to === undefined) open.splice(i, 1)
  else open[i] = to
}

/**
 * The whole response body, read at most once; `undefined` when it is larger than `limit` (the
 * response still goes out whole). Fails with `UpstreamFailed` when the upstream breaks off
 * while sending it. Interrupting the read aborts the upstream body.
 */
export const read = (ctx: ProxyRequest, res: ProxyResponse, limit: number): Effect.Effect<Uint8Array | undefined, ProxyError.ProxyError> => {
  const body = res.body
  if (!isStream(body)) return Effect.succeed(bytesOf(res))
  if (body instanceof SpilledBody) return Effect.succeed(undefined)
  const declared = declaredLength(res)
  // Known to be too large: leave the stream alone.
  if (declared !== undefined && declared > limit) return Effect.succeed(undefined)
  return Effect.callback<Uint8Array | undefined, ProxyError.ProxyError>((resume) => {
    let settled = false
    const sink: CollectingSink = new CollectingSink(
      limit,
      () => {
        if (settled) return
        settled = true
        const spilled = new SpilledBody(body, sink)
        replaceOpen(ctx, body, spilled)
        res.body = spilled
        resume(Effect.succeed(undefined))
      },
      () => {
        if (settled) return
        settled = true
        if (sink.failure !== undefined) {
          resume(Effect.fail(ProxyError.make({ _tag: "UpstreamFailed", cause: sink.failure })))
          return
        }
        const bytes = sink.chunks.length === 1 ? sink.chunks[0]! : Buffer.concat(sink.chunks, sink.size)
        // Fully read: the exchange is over, nothing is left for the listener to abort.
        replaceOpen(ctx, body, undefined)
        res.body = bytes
        resume(Effect.succeed(bytes))
      }
    )
    body.pipeTo(sink)
    return Effect.sync(() => {
      if (!settled) {
        settled = true
        body.abort(new Error("response body read interrupted"))
      }
    })
  })
}

/**
 * Replaces the body (a transformation's `body`). A streamed body that was not read is left in
 * `openBodies`, so the listener aborts it; `content-length` is dropped for the listener to
 * compute from the new bytes.
 */
export const replace = (res: ProxyResponse, bytes: Uint8Array): void => {
  res.body = bytes
  delete res.headers["content-length"]
}
