/**
 * `localRateLimit`: token buckets kept in this process (agentgateway's `localratelimit.rs`).
 * Each bucket starts full with `maxTokens`, and every whole `fillInterval` since the last
 * refill adds `tokensPerFill`, capped at `maxTokens`. A request takes one token from every
 * bucket; if any bucket is empty it is rejected with 429 `rate limit exceeded` and takes
 * nothing from the others (upstream takes from the buckets checked before the empty one).
 *
 * Every response, the 429 included, carries `x-ratelimit-limit`, `x-ratelimit-remaining` and
 * `x-ratelimit-reset` (seconds until the next refill, rounded up so a client that waits that
 * long finds a token) of the most constrained bucket: the empty one on a rejection, else the
 * one with the fewest tokens left (ties: the later refill).
 *
 * Buckets belong to the policy declaration: a declaration merged into several routes (a
 * listener- or gateway-targeted policy) shares its buckets, as upstream shares one limiter.
 * They live as long as the config snapshot, so a reload starts them full again. Time is the
 * Effect `Clock`'s monotonic time.
 *
 * `{conditional: [{condition, maxTokens, …}, …]}` (Conditional.ts): each entry is one bucket;
 * the first entry whose condition holds is the request's bucket, no match means no limit.
 * Each entry's bucket is shared by every request that selects it.
 *
 * `type: tokens` (LLM token budgets) is rejected until the LLM gateway lands.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Duration from "../config/Duration.ts"
import { DurationString, opt, req, unsupportedMessage } from "../config/Fields.ts"
import type { Middleware } from "../pipeline/Policy.ts"
import * as Policy from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"
import * as Conditional from "./Conditional.ts"

const atLeastOne = (field: string) =>
  Schema.Int.check(Schema.makeFilter((n: number) => n >= 1 || `${field} must be at least 1 (got ${n})`))

const FillInterval = DurationString.check(
  Schema.makeFilter((s: string) => Duration.parseMillis(s) > 0 || `fillInterval must be longer than 0 (got "${s}")`)
)

const LimitType = Schema.Literals(["requests", "tokens"]).check(
  Schema.makeFilter((t: string) => t === "requests" || unsupportedMessage(`localRateLimit type "${t}" (LLM token budgets)`))
)

const bucketFields = {
  maxTokens: req(atLeastOne("maxTokens"), "Capacity of the bucket; it starts full."),
  tokensPerFill: req(atLeastOne("tokensPerFill"), "Tokens added every `fillInterval` (at most `maxTokens`)."),
  fillInterval: req(FillInterval, "How often `tokensPerFill` tokens are added, e.g. \"1s\"."),
  type: opt(LimitType, "What a token stands for: `requests` (one per request, the default).")
}

const fillWithinCapacity = Schema.makeFilter((b: { readonly maxTokens: number; readonly tokensPerFill: number }) =>
  b.tokensPerFill <= b.maxTokens || {
    path: ["tokensPerFill"],
    issue: `tokensPerFill (${b.tokensPerFill}) may not exceed maxTokens (${b.maxTokens})`
  }
)

export const Bucket = Schema.Struct(bucketFields).check(fillWithinCapacity).annotate({ description: "A token bucket." })
export type Bucket = typeof Bucket.Type

/** One entry of the conditional form: a single bucket, used when its condition holds. */
export const Entry = Schema.Struct({ condition: Conditional.condition, ...bucketFields }).check(fillWithinCapacity).annotate({
  description: "A token bucket applied when its condition holds."
})
export type Entry = typeof Entry.Type

export const Config = Schema.Union([
  Schema.Array(Bucket).annotate({ description: "Token buckets; a request needs a token from each." }),
  Conditional.Config(Entry, "Conditional rate limits: the first entry whose condition holds is the bucket for the request; none: no limit.")
]).annotate({ description: "Local rate limits: token buckets kept in this process." })
export type Config = typeof Config.Type

/** One token bucket; times are milliseconds of the Clock's monotonic time. */
export class TokenBucket {
  available: number
  /** When the next `amount` tokens are added. */
  refillAt: number
  readonly capacity: number
  readonly amount: number
  readonly interval: number

  constructor(capacity: number, amount: number, interval: number, now: number) {
    this.capacity = capacity
    this.amount = amount
    this.interval = interval
    this.available = capacity
    this.refillAt = now + interval
  }

  refill(now: number): void {
    if (now < this.refillAt) return
    const intervals = Math.floor((now - this.refillAt) / this.interval) + 1
    this.refillAt += intervals * this.interval
    this.available = Math.min(this.capacity, this.available + intervals * this.amount)
  }
}

const queueHeaders = (ctx: ProxyRequest, bucket: TokenBucket, now: number): void => {
  ctx.queueResponseHeader("x-ratelimit-limit", String(bucket.capacity))
  ctx.queueResponseHeader("x-ratelimit-remaining", String(bucket.available))
  ctx.queueResponseHeader("x-ratelimit-reset", String(Math.ceil((bucket.refillAt - now) / 1000)))
}

const nanosPerMilli = 1_000_000

/**
 * Buckets per declaration, for the life of the decoded config object (one snapshot): a policy
 * merged into several routes is built once per route, and must still count once.
 */
const declared = new WeakMap<object, TokenBucket>()

const rateLimited = ProxyError.make({ _tag: "RateLimited" })

const limiter = (specs: ReadonlyArray<Bucket | Entry>, now: () => number): Middleware => {
  if (specs.length === 0) return (next) => next
  const all = specs.map((b) => {
    let bucket = declared.get(b)
    if (bucket === undefined) {
      bucket = new TokenBucket(b.maxTokens, b.tokensPerFill, Duration.parseMillis(b.fillInterval), now())
      declared.set(b, bucket)
    }
    return bucket
  })
  return (next) =>
    Effect.flatMap(currentRequest, (ctx) => {
      const t = now()
      let empty: TokenBucket | undefined
      for (const b of all) {
        b.refill(t)
        if (b.available < 1 && (empty === undefined || b.refillAt > empty.refillAt)) empty = b
      }
      if (empty !== undefined) {
        queueHeaders(ctx, empty, t)
        return Effect.fail(rateLimited)
      }
      let tightest = all[0]!
      for (const b of all) {
        b.available -= 1
        if (b.available < tightest.available || (b.available === tightest.available && b.refillAt > tightest.refillAt)) tightest = b
      }
      queueHeaders(ctx, tightest, t)
      return next
    })
}

export const policy = Policy.define({
  key: "localRateLimit",
  make: (config, env, path) =>
    Effect.flatMap(Clock.clockWith(Effect.succeed), (clock) => {
      const now = () => Number(clock.monotonicTimeNanosUnsafe()) / nanosPerMilli
      if (!("conditional" in config)) return Effect.succeed(limiter(config, now))
      return Conditional.make(config.conditional, env, path, (entry) => Effect.succeed(limiter([entry], now)))
    })
})
