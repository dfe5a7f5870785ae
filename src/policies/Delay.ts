/**
 * `delay`: fault injection, as agentgateway's `delay` policy. The request waits `duration`
 * before it goes on to a direct response or the backend; it runs after the request policies
 * and redirects, so a rejected or redirected request is answered without the delay. The wait
 * is an interruptible `Effect.sleep`: a client that goes away ends it, and `timeout.
 * requestTimeout` covers it.
 *
 * `duration` is a literal duration (`2s`, `150ms`), parsed once, or else a CEL expression
 * evaluated per request that gives a `duration` (`duration("500ms")`) or a number of
 * milliseconds (`random() < 0.1 ? 2000 : 0`). A non-positive result, an error (a missing
 * header in `request.headers["x-chaos"] == "1" ? 500 : 0`) or any other type injects no delay;
 * a result is capped at `MAX_DELAY_MS`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Cel from "../cel/Cel.ts"
import * as CelContext from "../cel/Context.ts"
import * as ConfigError from "../config/ConfigError.ts"
import * as Duration from "../config/Duration.ts"
import { req } from "../config/Fields.ts"
import * as Policy from "../pipeline/Policy.ts"
import { currentRequest } from "../pipeline/RequestContext.ts"

const LITERAL_DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h|d))+$/

/** Longest delay a CEL `duration` may ask for: far above any fault injection, below timer overflow. */
export const MAX_DELAY_MS = 24 * 60 * 60 * 1000

/** Result types a CEL `duration` may have. */
const DURATION_TYPES: ReadonlySet<string> = new Set(["int", "uint", "double", "google.protobuf.Duration", "dyn"])

export const Config = Schema.Struct({
  duration: req(
    Schema.String,
    "How long to delay the request: a duration such as `2s`, or a CEL expression giving a duration or milliseconds, e.g. `random() < 0.1 ? 2000 : 0`."
  )
}).annotate({ description: "Injects latency before the request is forwarded (fault injection)." })
export type Config = typeof Config.Type

/** Milliseconds of a CEL result: an int/uint/double is milliseconds, a duration its length. */
export const millisOf = (value: unknown): number => {
  if (typeof value === "bigint") return Number(value)
  if (typeof value === "number") return Number.isFinite(value) ? value : 0
  if (value !== null && typeof value === "object") {
    // cel-js durations ({seconds, nanos}) and boxed uints (valueOf → bigint).
    if ("seconds" in value && "nanos" in value) return Number(value.seconds) * 1000 + Number(value.nanos) / 1e6
    const raw: unknown = value.valueOf()
    if (typeof raw === "bigint") return Number(raw)
  }
  return 0
}

export const policy = Policy.define({
  key: "delay",
  make: (config, env, path) =>
    Effect.gen(function*() {
      if (LITERAL_DURATION.test(config.duration)) {
        const ms = Duration.parseMillis(config.duration)
        if (ms <= 0) return (next) => next
        const wait = Effect.sleep(ms)
        return (next) => Effect.andThen(wait, next)
      }
      const at = `${path}.duration`
      const program = yield* Cel.compile(config.duration, at)
      if (!DURATION_TYPES.has(program.type)) {
        return yield* Effect.fail(
          ConfigError.make(at, `invalid CEL expression ${JSON.stringify(config.duration)}: must evaluate to a duration or a number of milliseconds, not ${program.type}`)
        )
      }
      const readBody = CelContext.needsBody(program) ? CelContext.bodyReader(program, env.maxBufferSize) : undefined
      return (next) => {
        const waitThen = (ms: number) => (ms > 0 ? Effect.andThen(Effect.sleep(Math.min(ms, MAX_DELAY_MS)), next) : next)
        return Effect.flatMap(currentRequest, (ctx) => {
          if (readBody !== undefined && ctx.body._tag === "Stream") {
            return Effect.flatMap(readBody(ctx), () => waitThen(millisOf(program.evalValue(CelContext.forRequest(ctx)))))
          }
          return waitThen(millisOf(program.evalValue(CelContext.forRequest(ctx))))
        })
      }
    })
})
