/**
 * `timeout`: deadlines for a request, as agentgateway's `timeout` policy.
 *
 * - `requestTimeout` bounds everything after it in the route phase (it is first there: the
 *   policies, every retry attempt and backoff, until the response head) and answers 504
 *   `request timeout`.
 * - `backendRequestTimeout` bounds each backend attempt on its own, from the upstream call to
 *   its response head, and answers 504 `upstream call timeout`. This middleware only records it
 *   on the request; the backend call (`state/Snapshot.ts`) applies it, so it holds per attempt
 *   whatever sits in between (retries, backend policies).
 *
 * Either deadline interrupts what runs under it; the upstream exchange's interruption aborts it,
 * and the listener aborts any upstream body left unwritten. Once the head has arrived the body
 * streams without a deadline (as upstream: the timeout wraps the call, not the body).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Duration from "../config/Duration.ts"
import { DurationString, opt } from "../config/Fields.ts"
import * as Deadline from "../pipeline/Deadline.ts"
import * as Policy from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import { currentRequest } from "../pipeline/RequestContext.ts"

export const Config = Schema.Struct({
  requestTimeout: opt(
    DurationString,
    "Deadline for the whole request after route selection (policies, every retry, until the response head): 504 `request timeout`."
  ),
  backendRequestTimeout: opt(
    DurationString,
    "Deadline for each backend attempt, until its response head: 504 `upstream call timeout`."
  )
}).annotate({ description: "Request and per-attempt backend deadlines." })
export type Config = typeof Config.Type

const requestTimeout = () => Effect.fail(ProxyError.make({ _tag: "RequestTimeout" }))

const millis = (value: string | null | undefined): number | undefined =>
  value === undefined || value === null ? undefined : Duration.parseMillis(value)

export const policy = Policy.define({
  key: "timeout",
  make: (config) =>
    Effect.sync(() => {
      const requestMs = millis(config.requestTimeout)
      const backendMs = millis(config.backendRequestTimeout)
      return (next) => {
        const bounded = requestMs === undefined ? next : Deadline.within(next, requestMs, requestTimeout)
        if (backendMs === undefined) return bounded
        return Effect.flatMap(currentRequest, (ctx) => {
          ctx.backendRequestTimeoutMs = backendMs
          return bounded
        })
      }
    })
})
