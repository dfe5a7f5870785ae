/**
 * `requestMirror`: sends a fire-and-forget copy of a share of the requests to another backend,
 * as agentgateway's `requestMirror` policy.
 *
 * - The copy is the request as the route phase left it (method, path, query, headers), taken
 *   before the backend attempt, and it has no body: upstream does not mirror bodies either. Its
 *   `content-length` is removed, so a GET copy carries no framing and undici frames a POST/PUT/
 *   PATCH copy as `content-length: 0`.
 * - The mirror never touches the real response or its latency: the copy runs on its own fiber,
 *   forked into a `FiberSet` owned by the snapshot's Scope (a config reload or shutdown
 *   interrupts what is still in flight), and its failures are only logged at debug level.
 * - Bounded: at most `MAX_IN_FLIGHT` copies per policy run at once; over that a copy is dropped
 *   and counted (a warning is logged for the first and every `DROP_LOG_EVERY`th). Each copy
 *   has `MIRROR_TIMEOUT_MS` for its exchange, body included; the mirror's response body is
 *   drained and discarded, or aborted on timeout, so no pooled connection is left paused.
 * - `percentage` (0.0–1.0) is drawn from Effect's `Random` service, so tests can fix it.
 * - The target is `{host: "h:p"}` or `{backend: name}` (with that backend's policies), built
 *   through `BuildEnv.backendCall` like a route's backend.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Random from "effect/Random"
import * as Schema from "effect/Schema"
import { exactlyOneOf, opt, req, unsupported } from "../config/Fields.ts"
import type { Handler } from "../pipeline/Policy.ts"
import * as Deadline from "../pipeline/Deadline.ts"
import * as Policy from "../pipeline/Policy.ts"
import type { BodySink, ProxyResponse } from "../pipeline/ProxyResponse.ts"
import { currentRequest, ProxyRequest, RequestContext } from "../pipeline/RequestContext.ts"
import * as Headers from "../shared/headers.ts"

/** Most mirror copies one policy keeps in flight; more are dropped. */
export const MAX_IN_FLIGHT = 64

/** Deadline of one mirror exchange, response body included. */
export const MIRROR_TIMEOUT_MS = 10_000

/** A dropped-copy warning is logged for the first drop and then every this many. */
export const DROP_LOG_EVERY = 100

export const MirrorBackend = Schema.Struct({
  host: opt(Schema.String, "Upstream address `host:port` (IP or DNS name)."),
  backend: opt(Schema.String, "Name of a top-level `backends` entry."),
  service: unsupported("requestMirror.backend.service")
}).check(exactlyOneOf(["host", "backend", "service"])).annotate({ description: "Where the copies are sent." })

export const Config = Schema.Struct({
  backend: req(MirrorBackend, "Backend that receives the copies: `{host: \"h:p\"}` or `{backend: name}`."),
  percentage: req(
    Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1 })),
    "Share of matching requests mirrored, from 0.0 (none) to 1.0 (all)."
  )
}).annotate({ description: "Sends a copy of matching requests (without the body) to another backend." })
export type Config = typeof Config.Type

/** Swallows the mirror's response body and reports when it ended (or failed). */
class DiscardSink implements BodySink {
  done = false
  private readonly onDone: () => void
  constructor(onDone: () => void) {
    this.onDone = onDone
  }
  write(): boolean {
    return true
  }
  end(): void {
    this.finish()
  }
  destroy(): void {
    this.finish()
  }
  once(): this {
    return this
  }
  get writableFinished(): boolean {
    return this.done
  }
  private finish(): void {
    if (this.done) return
    this.done = true
    this.onDone()
  }
}

/** The copy sent to the mirror: same request line and headers, no body. */
const copyOf = (ctx: ProxyRequest): ProxyRequest => {
  const headers = Headers.empty()
  for (const name of Object.keys(ctx.headers)) {
    if (name === "content-length") continue
    const value = ctx.headers[name]!
    headers[name] = typeof value === "string" ? value : [...value]
  }
  const copy = new ProxyRequest(
    ctx.raw,
    ctx.method,
    ctx.path,
    ctx.query,
    ctx.host,
    ctx.authority,
    ctx.scheme,
    ctx.version,
    headers,
    ctx.sourceAddress,
    ctx.sourcePort,
    ctx.startTime
  )
  copy.authorityRewritten = ctx.authorityRewritten
  return copy
}

const mirrorTimeout = () => Effect.fail(new Cause.TimeoutError("request mirror timed out"))

const logFailure = (cause: Cause.Cause<unknown>) => Effect.logDebug("request mirror failed", cause)

export const policy = Policy.define({
  key: "requestMirror",
  make: (config, env, path) =>
    Effect.gen(function*() {
      const call: Handler = yield* env.backendCall(config.backend, `${path}.backend`)
      const fibers = yield* FiberSet.make<void, never>()
      const fork = yield* FiberSet.runtime(fibers)<never>()
      let inFlight = 0
      let dropped = 0

      const send = (copy: ProxyRequest): Effect.Effect<void> => {
        let drained = false
        const drain = (response: ProxyResponse): Effect.Effect<void> => {
          const body = response.body
          if (body === undefined || typeof body === "string" || body instanceof Uint8Array) {
            drained = true
            return Effect.void
          }
          return Effect.callback<void>((resume) => {
            const sink = new DiscardSink(() => {
              drained = true
              resume(Effect.void)
            })
            body.pipeTo(sink)
          })
        }
        return Deadline.within(Effect.flatMap(call, drain), MIRROR_TIMEOUT_MS, mirrorTimeout).pipe(
          Effect.catchCause(logFailure),
          Effect.ensuring(Effect.sync(() => {
            inFlight--
            // Timed out or interrupted mid-exchange: release the upstream connection.
            if (!drained) for (const b of copy.openBodies ?? []) b.abort(new Error("request mirror cancelled"))
          })),
          Effect.provideService(RequestContext, copy)
        )
      }

      const start = (ctx: ProxyRequest): void => {
        if (inFlight >= MAX_IN_FLIGHT) {
          dropped++
          if (dropped === 1 || dropped % DROP_LOG_EVERY === 0) {
            fork(Effect.logWarning(`request mirror at ${path}: ${dropped} copies dropped, ${MAX_IN_FLIGHT} already in flight`))
          }
          return
        }
        inFlight++
        fork(send(copyOf(ctx)))
      }

      const percentage = config.percentage
      if (percentage <= 0) return (next) => next
      const always = percentage >= 1
      return (next) =>
        Effect.flatMap(currentRequest, (ctx) => {
          if (always) {
            start(ctx)
            return next
          }
          return Effect.flatMap(Random.next, (draw) => {
            if (draw < percentage) start(ctx)
            return next
          })
        })
    })
})
