/**
 * The downstream request body, read into memory only when a policy needs its bytes (CEL
 * `request.body`, retry replay, transformations). Untouched, the body is the Node
 * `IncomingMessage` itself and streams to the upstream with backpressure.
 *
 * `read(ctx, limit)` buffers the whole body once and records it on the request, so every later
 * reader (and the upstream call, and each retry attempt) sees the same bytes. A body larger
 * than `limit` is not an error: what was read is kept as a prefix in front of the rest of the
 * stream, the request still forwards whole, and `read` answers `undefined` ("not available"),
 * as upstream treats a body over `maxBufferSize`. A body that stops arriving while it is read
 * is cut by the listener (`listeners/BodyWatch.ts`: 408, which interrupts the read).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import { PassThrough, type Readable } from "node:stream"
import * as ProxyError from "./ProxyError.ts"
import type { ProxyRequest } from "./RequestContext.ts"

/**
 * What the upstream call sends: nothing, the untouched downstream stream, the whole buffered
 * body, or (after an over-limit read) a stream replaying the read prefix and then the rest.
 */
export type State =
  | { readonly _tag: "Stream" }
  | { readonly _tag: "Buffered"; readonly bytes: Uint8Array }
  | { readonly _tag: "Spilled"; readonly stream: Readable; readonly prefix: Uint8Array }

export const untouched: State = { _tag: "Stream" }

const EMPTY = new Uint8Array(0)

/** The declared length, or undefined for a chunked body. */
const declaredLength = (ctx: ProxyRequest): number | undefined => {
  const raw = ctx.raw.headers["content-length"]
  if (raw === undefined) return undefined
  const n = Number(raw)
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined
}

/**
 * The whole request body, read at most once; `undefined` when it is larger than `limit` (the
 * request still forwards whole). Fails only when the downstream aborts while sending it.
 */
export const read = (
  ctx: ProxyRequest,
  limit: number
): Effect.Effect<Uint8Array | undefined, ProxyError.ProxyError> => {
  const state = ctx.body
  if (state._tag === "Buffered") return Effect.succeed(state.bytes)
  if (state._tag === "Spilled") return Effect.succeed(undefined)
  if (!ctx.hasBody) {
    ctx.body = { _tag: "Buffered", bytes: EMPTY }
    return Effect.succeed(EMPTY)
  }
  const declared = declaredLength(ctx)
  // Known to be too large: do not touch the stream at all.
  if (declared !== undefined && declared > limit) return Effect.succeed(undefined)
  return collect(ctx, limit)
}

/** A body's first bytes, and whether they are all of it. */
export interface Prefix {
  readonly bytes: Uint8Array
  readonly complete: boolean
}

/**
 * At most `limit` bytes of the body and whether that is the whole body (ext authz with
 * `allowPartialMessage`). Unlike `read`, a body over the limit is still read up to it; what was
 * read stays in front of the rest of the stream, so the upstream still gets the body whole.
 */
export const readPrefix = (
  ctx: ProxyRequest,
  limit: number
): Effect.Effect<Prefix, ProxyError.ProxyError> => {
  const state = ctx.body
  if (state._tag === "Spilled") return Effect.succeed(prefixOf(state.prefix, limit, false))
  if (state._tag === "Buffered") return Effect.succeed(prefixOf(state.bytes, limit, true))
  if (!ctx.hasBody) {
    ctx.body = { _tag: "Buffered", bytes: EMPTY }
    return Effect.succeed({ bytes: EMPTY, complete: true })
  }
  return Effect.map(collect(ctx, limit), (bytes) => {
    const now = ctx.body
    if (bytes !== undefined) return prefixOf(bytes, limit, true)
    return prefixOf(now._tag === "Spilled" ? now.prefix : EMPTY, limit, false)
  })
}

const prefixOf = (bytes: Uint8Array, limit: number, whole: boolean): Prefix =>
  bytes.length > limit ? { bytes: bytes.subarray(0, limit), complete: false } : { bytes, complete: whole }

const collect = (ctx: ProxyRequest, limit: number): Effect.Effect<Uint8Array | undefined, ProxyError.ProxyError> =>
  Effect.callback<Uint8Array | undefined, ProxyError.ProxyError>((resume) => {
    const raw = ctx.raw
    const chunks: Array<Buffer> = []
    let size = 0
    const cleanup = () => {
      raw.off("data", onData)
      raw.off("end", onEnd)
      raw.off("error", onError)
      raw.off("aborted", onError)
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      chunks.push(chunk)
      if (size <= limit) return
      // Over the limit: stop reading, keep what was read in front of the rest.
      cleanup()
      raw.pause()
      const spilled = new PassThrough()
      const prefix = Buffer.concat(chunks, size)
      spilled.write(prefix)
      raw.on("error", (error) => spilled.destroy(error))
      raw.pipe(spilled)
      ctx.body = { _tag: "Spilled", stream: spilled, prefix }
      resume(Effect.succeed(undefined))
    }
    const onEnd = () => {
      cleanup()
      const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)
      ctx.body = { _tag: "Buffered", bytes }
      resume(Effect.succeed(bytes))
    }
    const onError = () => {
      cleanup()
      resume(Effect.fail(ProxyError.make({ _tag: "InvalidRequest", detail: "request body aborted" })))
    }
    raw.on("data", onData)
    raw.once("end", onEnd)
    raw.once("error", onError)
    raw.once("aborted", onError)
    return Effect.sync(cleanup)
  })

/**
 * Replaces the body (a transformation's `body`): later readers and the upstream get `bytes`;
 * `content-length` is set to match, since the framing header travels with the request headers.
 */
export const replace = (ctx: ProxyRequest, bytes: Uint8Array): void => {
  ctx.body = { _tag: "Buffered", bytes }
  ctx.hasBody = true
  ctx.headers["content-length"] = String(bytes.length)
}

/**
 * Declared bodies up to this size are read in full before the upstream request is sent
 * (`smallFirst`); larger and chunked ones stream. Below the 64 KiB of bench/http's POST, whose
 * body must never be buffered.
 */
export const SMALL_BODY_BYTES = 16 * 1024

/**
 * The read of a small declared body (≤ SMALL_BODY_BYTES and ≤ `maxBufferSize`) that is still the untouched stream, or
 * undefined when there is nothing to read first (no body, chunked, larger, already read).
 *
 * Why: a body handed to undici as a stream (the IncomingMessage, `writeStream`) keeps each
 * exchange's objects alive past young-generation GCs, so under load every request's objects are
 * promoted and collected by mark-compacts: measured with a plain node:http + undici proxy and a
 * 150-byte POST under a capped young generation (`--max-semi-space-size=8`), 1.75 MB promoted
 * per scavenge and 9 mark-compacts in 5 s when streamed, 0.01 MB and none when the same bytes
 * were read first and sent as a Buffer (77–85 vs 62 µs of CPU per request). A small body is
 * almost always in the socket with its headers, so reading it first costs no latency; one that
 * trickles waits here (cut by the body idle timeout), as nginx's default request buffering
 * does, instead of holding an upstream connection open.
 */
export const smallFirst = (ctx: ProxyRequest, maxBufferSize: number): Effect.Effect<Uint8Array | undefined, ProxyError.ProxyError> | undefined => {
  if (!ctx.hasBody || ctx.body._tag !== "Stream") return undefined
  // Never more than a policy may buffer: a body over maxBufferSize stays "not available" to them.
  const limit = Math.min(SMALL_BODY_BYTES, maxBufferSize)
  const declared = declaredLength(ctx)
  if (declared === undefined || declared > limit) return undefined
  return collect(ctx, limit)
}

/** The value undici sends for this request's body. */
export const forUpstream = (ctx: ProxyRequest): Uint8Array | Readable | null => {
  if (!ctx.hasBody) return null
  const state = ctx.body
  switch (state._tag) {
    case "Stream":
      return ctx.raw
    case "Buffered":
      return state.bytes
    case "Spilled":
      return state.stream
  }
}
