/**
 * `retry`: retries the backend attempt, as agentgateway's `retry` policy.
 *
 * - `attempts` counts retries, not total attempts (upstream's behaviour, whatever its docs
 *   say): the default 1 means one original attempt and one retry.
 * - An attempt is retried when its response status is in `codes`, or when the upstream call
 *   failed before a response head (connection refused/reset: `UpstreamFailed`). Timeouts are
 *   not retried: `backendRequestTimeout` answers 504 at once, as upstream does, and
 *   `requestTimeout` sits outside this policy and ends the whole loop.
 * - Retry `n` (1, 2, …) carries `x-retry-attempt: n`; the original attempt carries none. Each
 *   attempt starts from the request headers as they were before the first one, so backend
 *   policies (header `add`) do not pile up across attempts.
 * - Between attempts it waits `backoff`, or the retried response's `Retry-After` (seconds or an
 *   HTTP date) when that is longer, capped at `RETRY_AFTER_MAX_MS`. Time comes from `Clock`.
 * - A request body is replayed from memory, so a request with a body is retried only when the
 *   body is at most `MAX_REPLAY_BYTES` (upstream's `MAX_BUFFERED_BYTES`); a larger one is
 *   forwarded once, streaming, without retries.
 * - A retried attempt's response body is aborted as soon as the retry is decided, so its
 *   pooled connection is released rather than left paused.
 *
 * - `precondition` (CEL on the request) is evaluated once, before the first attempt: unless it
 *   is `true` the request gets that one attempt and no retries, and its body is not buffered
 *   for replay. Upstream evaluates it earlier in the route phase (before rate limits and
 *   transformations); here it sees the request as the backend will, after every route policy.
 * - `condition` (CEL on each attempt's response) retries the attempt when it is `true`, in
 *   addition to (OR) a status in `codes`, as upstream's schema says. An error is `false`. A
 *   condition that reads `response.body` gets it buffered (ResponseBody.read, up to
 *   `maxBufferSize`; over that it is absent and the condition errors).
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Cel from "../cel/Cel.ts"
import * as CelContext from "../cel/Context.ts"
import * as Duration from "../config/Duration.ts"
import { DurationString, opt, req } from "../config/Fields.ts"
import type { Handler } from "../pipeline/Policy.ts"
import * as Policy from "../pipeline/Policy.ts"
import type * as ProxyError from "../pipeline/ProxyError.ts"
import type { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import * as RequestBody from "../pipeline/RequestBody.ts"
import * as ResponseBody from "../pipeline/ResponseBody.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"
import * as Headers from "../shared/headers.ts"

/** Largest request body replayed on a retry (upstream `httpproxy.rs` `MAX_BUFFERED_BYTES`). */
export const MAX_REPLAY_BYTES = 64 * 1024

/** Longest wait a `Retry-After` may impose between attempts. */
export const RETRY_AFTER_MAX_MS = 30_000

export const ATTEMPT_HEADER = "x-retry-attempt"

export const Config = Schema.Struct({
  attempts: opt(
    Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 255 })),
    "Number of retries after the first attempt (not the total). Default: 1."
  ),
  backoff: opt(DurationString, "Wait between attempts. Default: none."),
  codes: req(
    Schema.Array(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 65535 }))),
    "Response statuses that are retried, e.g. `[429, 503]`. Connection failures are always retried."
  ),
  precondition: opt(
    Schema.String,
    "CEL expression on the request, evaluated before the first attempt; unless true, the request is not retried (and its body not buffered)."
  ),
  condition: opt(Schema.String, "CEL expression on each attempt's response; true retries it, in addition to a status in `codes`.")
}).annotate({ description: "Retries failed backend attempts." })
export type Config = typeof Config.Type

/** Milliseconds a `Retry-After` value asks for, or undefined when absent or unreadable. */
export const retryAfterMillis = (value: string | undefined, nowMs: number): number | undefined => {
  if (value === undefined) return undefined
  const trimmed = value.trim()
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000
  const at = Date.parse(trimmed)
  return Number.isNaN(at) ? undefined : Math.max(at - nowMs, 0)
}

const copyHeaders = (from: Headers.HeaderMap, into: Headers.HeaderMap): void => {
  for (const name in from) {
    const value = from[name]!
    into[name] = typeof value === "string" ? value : [...value]
  }
}

const restoreHeaders = (ctx: ProxyRequest, original: Headers.HeaderMap): void => {
  for (const name of Object.keys(ctx.headers)) delete ctx.headers[name]
  copyHeaders(original, ctx.headers)
}

const discard = (response: ProxyResponse): void => {
  const body = response.body
  if (body !== undefined && typeof body !== "string" && !(body instanceof Uint8Array)) body.abort(new Error("response retried"))
}

const retryable = (error: ProxyError.ProxyError): boolean => error.reason._tag === "UpstreamFailed"

export const policy = Policy.define({
  key: "retry",
  make: (config, env, path) =>
    Effect.gen(function*() {
      const precondition = config.precondition === undefined || config.precondition === null
        ? undefined
        : yield* Cel.compileBool(config.precondition, `${path}.precondition`)
      const condition = config.condition === undefined || config.condition === null
        ? undefined
        : yield* Cel.compileBool(config.condition, `${path}.condition`)
      const readPreconditionBody = precondition !== undefined && CelContext.needsBody(precondition)
        ? CelContext.bodyReader(precondition, env.maxBufferSize)
        : undefined
      const conditionReadsBody = condition !== undefined && condition.references.responseBody
      const retries = config.attempts ?? 1
      const backoffMs = config.backoff === undefined || config.backoff === null ? 0 : Duration.parseMillis(config.backoff)
      const codes = new Set(config.codes)
      /** Whether a response asks for a retry: a listed status, or the condition. */
      const wantsRetry = (ctx: ProxyRequest, response: ProxyResponse): Effect.Effect<boolean, ProxyError.ProxyError> => {
        if (codes.has(response.status)) return Effect.succeed(true)
        if (condition === undefined) return Effect.succeed(false)
        if (!conditionReadsBody) return Effect.succeed(condition.evalBool(CelContext.forResponse(ctx, response)))
        return Effect.map(ResponseBody.read(ctx, response, env.maxBufferSize), () => condition.evalBool(CelContext.forResponse(ctx, response)))
      }

      return (next) => {
        const pause = (ms: number, then: Handler): Handler => (ms > 0 ? Effect.andThen(Effect.sleep(ms), then) : then)

        const waitFor = (response: ProxyResponse): Effect.Effect<number> => {
          const header = Headers.get(response.headers, "retry-after")
          if (header === undefined) return Effect.succeed(backoffMs)
          return Effect.map(Clock.currentTimeMillis, (now) => {
            const asked = retryAfterMillis(header, now)
            return asked === undefined ? backoffMs : Math.max(backoffMs, Math.min(asked, RETRY_AFTER_MAX_MS))
          })
        }

        const attempt = (ctx: ProxyRequest, original: Headers.HeaderMap, n: number): Handler => {
          const run = n === 0 ? next : Effect.suspend(() => {
            restoreHeaders(ctx, original)
            ctx.headers[ATTEMPT_HEADER] = String(n)
            ctx.retryAttempt = n
            return next
          })
          if (n >= retries) return run
          // The next attempt is built only once this one asked for it.
          return Effect.matchEffect(run, {
            onFailure: (error) => (retryable(error) ? pause(backoffMs, attempt(ctx, original, n + 1)) : Effect.fail(error)),
            onSuccess: (response) =>
              Effect.flatMap(wantsRetry(ctx, response), (retry) => {
                if (!retry) return Effect.succeed(response)
                discard(response)
                return Effect.flatMap(waitFor(response), (ms) => pause(ms, attempt(ctx, original, n + 1)))
              })
          })
        }

        const loop = (ctx: ProxyRequest): Handler => {
          const original = Headers.empty()
          copyHeaders(ctx.headers, original)
          return attempt(ctx, original, 0)
        }

        const start = (ctx: ProxyRequest): Handler => {
          if (precondition !== undefined && !precondition.evalBool(CelContext.forRequest(ctx))) return next
          if (!ctx.hasBody) return loop(ctx)
          return Effect.flatMap(RequestBody.read(ctx, MAX_REPLAY_BYTES), (bytes) =>
            // Larger than the replay limit (or buffered larger by another policy): one attempt, no retries.
            bytes === undefined || bytes.length > MAX_REPLAY_BYTES ? next : loop(ctx))
        }

        return Effect.flatMap(currentRequest, (ctx) =>
          readPreconditionBody !== undefined && ctx.body._tag === "Stream"
            ? Effect.flatMap(readPreconditionBody(ctx), () => start(ctx))
            : start(ctx))
      }
    })
})
