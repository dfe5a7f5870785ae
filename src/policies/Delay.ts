/**
 * `delay`: fault injection, as agentgateway's `delay` policy. The request waits `duration`
 * before it goes on to a direct response or the backend; it runs after the request policies
 * and redirects, so a rejected or redirected request is answered without the delay. The wait
 * is an interruptible `Effect.sleep`: a client that goes away ends it, and `timeout.
 * requestTimeout` covers it.
 *
 * Upstream's `duration` is a CEL expression too (a duration, or milliseconds; non-positive
 * means no delay). Only literal durations (`2s`, `150ms`) are supported until the CEL engine
 * lands; any other value is refused when the config is decoded.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Duration from "../config/Duration.ts"
import { req, unsupportedMessage } from "../config/Fields.ts"
import * as Policy from "../pipeline/Policy.ts"

const LITERAL_DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h|d))+$/

/** The message a non-literal (CEL) duration is refused with, until CEL is supported. */
export const CEL_DURATION_UNSUPPORTED = unsupportedMessage("delay.duration as a CEL expression")

export const Config = Schema.Struct({
  duration: req(
    Schema.String.check(Schema.makeFilter((s: string) => LITERAL_DURATION.test(s) || CEL_DURATION_UNSUPPORTED)),
    "How long to delay the request before it is forwarded, e.g. `2s` (CEL expressions are not supported yet)."
  )
}).annotate({ description: "Injects latency before the request is forwarded (fault injection)." })
export type Config = typeof Config.Type

export const policy = Policy.define({
  key: "delay",
  make: (config) =>
    Effect.sync(() => {
      const ms = Duration.parseMillis(config.duration)
      if (ms <= 0) return (next) => next
      const wait = Effect.sleep(ms)
      return (next) => Effect.andThen(wait, next)
    })
})
