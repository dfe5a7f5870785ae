/**
 * `remoteRateLimit`: limits decided outside this process, so every replica shares them
 * (agentgateway's `remoteratelimit.rs`).
 *
 * Two backends, chosen by which target field is set:
 * - `host` / `backend`: Envoy's rate limit service, `RateLimitService/ShouldRateLimit` over gRPC
 *   (sidecar/RateLimitProto.ts, sidecar/GrpcUnary.ts), each call bounded by `RLS_TIMEOUT_MS`.
 * - `redis: {url, commandTimeout?}` (an effect-agentgateway extension): token buckets in Redis,
 *   decided by one Lua script (sidecar/RedisRateLimiter.ts). Upstream leaves limits to the
 *   service's own config, so for Redis each descriptor carries them: `limit: {maxTokens,
 *   tokensPerFill, fillInterval}` (extension, the bucket of `localRateLimit`) or `limitOverride`.
 *
 * Per request, every descriptor's entries are evaluated (CEL; a value must be a string, number or
 * boolean); a descriptor with an entry, `cost` or `limitOverride` that fails is dropped, and with
 * none left the request passes without a call (upstream). OVER_LIMIT (any overall code but OK,
 * as upstream) answers 429 `rate limit exceeded`. Every answer of the limiter queues
 * `x-ratelimit-limit/-remaining/-reset` as `localRateLimit` does (the most constrained
 * descriptor: on a rejection an over-limit one; else the fewest remaining, ties: the later
 * reset), unless the service sends `x-ratelimit-*` itself in `response_headers_to_add`. The
 * service's `response_headers_to_add` reach the response (the 429 included) and its
 * `request_headers_to_add` are set on the forwarded request.
 *
 * A failed call (connection, deadline, gRPC status, bad reply, Redis down) follows
 * `failureMode`: `failClosed` (default) answers 500 `rate limit failed`, `failOpen` passes.
 *
 * `type: tokens` descriptors are checked before the request with zero hits (they reject once
 * the budget is spent) and charged after the response with `cost` evaluated on the response
 * (default `llm.totalTokens`, which needs the LLM gateway: until then a tokens descriptor without
 * `cost` is never charged). The charge is fire-and-forget (at most `MAX_CHARGES_IN_FLIGHT`).
 *
 * Differences from upstream: the 429 body is `rate limit exceeded` (upstream sends the service's
 * `raw_body`, usually empty) and carries x-ratelimit-* (upstream only the service's headers).
 * `hits_addend` is sent per descriptor (as upstream) and also request-wide when all descriptors
 * share one cost, for services that read only that. The service's `raw_body` and
 * `dynamic_metadata` are ignored. `service:` targets are not supported yet. When
 * `localRateLimit` also applies, both policies' x-ratelimit-* headers are sent.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Schema from "effect/Schema"
import * as Cel from "../cel/Cel.ts"
import * as CelContext from "../cel/Context.ts"
import { ConfigError } from "../config/ConfigError.ts"
import * as Duration from "../config/Duration.ts"
import { DurationString, opt, req, unsupported } from "../config/Fields.ts"
import type { Middleware } from "../pipeline/Policy.ts"
import * as Policy from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import type { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"
import * as Tracing from "../observability/Tracing.ts"
import * as Headers from "../shared/headers.ts"
import * as GrpcUnary from "../sidecar/GrpcUnary.ts"
import * as Rls from "../sidecar/RateLimitProto.ts"
import * as RedisRateLimiter from "../sidecar/RedisRateLimiter.ts"
import * as SidecarPolicies from "../sidecar/ServicePolicies.ts"
import * as BackendTls from "./BackendTls.ts"
import * as Conditional from "./Conditional.ts"
import * as HeaderExpressions from "./HeaderExpressions.ts"
import * as HeaderModifier from "./HeaderModifier.ts"

/** Deadline of one `ShouldRateLimit` call, connection included. */
export const RLS_TIMEOUT_MS = 1_000

/** Default `redis.commandTimeout`. */
export const DEFAULT_REDIS_TIMEOUT = "1s"

/** Most post-response `type: tokens` charges one policy keeps in flight; more are dropped. */
export const MAX_CHARGES_IN_FLIGHT = 64

/** A limiter failure is logged for the first one and then every this many. */
export const FAILURE_LOG_EVERY = 100

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

const KV = Schema.Struct({
  key: req(Schema.String, "Descriptor entry key sent to the rate limit service."),
  value: req(Schema.String, "CEL expression computing the entry's value from the request.")
})

const atLeastOne = (field: string) =>
  Schema.Int.check(Schema.makeFilter((n: number) => n >= 1 || `${field} must be at least 1 (got ${n})`))

/** effect-agentgateway extension: the bucket a Redis-backed descriptor uses. */
export const Limit = Schema.Struct({
  maxTokens: req(atLeastOne("maxTokens"), "Capacity of the bucket; it starts full."),
  tokensPerFill: req(atLeastOne("tokensPerFill"), "Tokens added every `fillInterval` (at most `maxTokens`)."),
  fillInterval: req(
    DurationString.check(Schema.makeFilter((s: string) => Duration.parseMillis(s) >= 1 || `fillInterval must be at least 1ms (got "${s}")`)),
    "How often `tokensPerFill` tokens are added, e.g. \"1m\"."
  )
}).check(
  Schema.makeFilter((b: { readonly maxTokens: number; readonly tokensPerFill: number }) =>
    b.tokensPerFill <= b.maxTokens || { path: ["tokensPerFill"], issue: `tokensPerFill (${b.tokensPerFill}) may not exceed maxTokens (${b.maxTokens})` }
  )
).annotate({ description: "A token bucket kept in Redis (effect-agentgateway extension; upstream leaves limits to the service)." })

export const Descriptor = Schema.Struct({
  entries: req(Schema.Array(KV), "Descriptor key/value entries; values are CEL expressions evaluated on the request."),
  type: opt(Schema.Literals(["requests", "tokens"]), "What the descriptor limits: `requests` (default) or `tokens` (charged after the response)."),
  cost: opt(
    Schema.String,
    "CEL cost of the request (hits). Default: 1 for `requests`, `llm.totalTokens` for `tokens` (evaluated on the response). An error skips the descriptor."
  ),
  limitOverride: opt(
    Schema.String,
    "CEL map `{\"unit\": \"second|minute|hour|day|month|year\", \"requestsPerUnit\": n}` sent as the descriptor's limit (with Redis: a bucket of n per unit). An error skips the descriptor."
  ),
  limit: opt(Limit, "Redis backend only (effect-agentgateway extension): the descriptor's token bucket.")
}).annotate({ description: "A rate limit descriptor." })
export type Descriptor = typeof Descriptor.Type

export const Redis = Schema.Struct({
  url: req(
    Schema.String.check(Schema.makeFilter((u: string) => /^rediss?:\/\/[^/]/.test(u) || "expected a redis:// or rediss:// URL")),
    "Redis URL: `redis://[user:password@]host:port[/db]`, `rediss://` for TLS."
  ),
  commandTimeout: opt(DurationString, `Deadline of each Redis command (and of the first connect). Default ${DEFAULT_REDIS_TIMEOUT}.`)
}).annotate({ description: "Redis holding the buckets (effect-agentgateway extension)." })

export const ServicePolicies = SidecarPolicies.schema("remoteRateLimit", "the rate limit service")

const FailureMode = Schema.Literals(["failClosed", "FailClosed", "failOpen", "FailOpen"])

const fields = {
  host: opt(Schema.String, "Rate limit service address `host:port`."),
  backend: opt(Schema.String, "Name of a top-level `backends` entry serving the rate limit service."),
  service: unsupported("remoteRateLimit.service"),
  redis: opt(Redis, "Keep the buckets in Redis instead of calling a service (effect-agentgateway extension)."),
  domain: opt(Schema.String, "Rate limit domain sent to the service (with Redis: part of every key)."),
  descriptors: opt(Schema.Array(Descriptor), "Descriptors to limit on; a request must pass all of them."),
  failureMode: opt(FailureMode, "When the limiter fails: `failClosed` (default) answers 500, `failOpen` lets the request through."),
  policies: opt(ServicePolicies, "Policies used when connecting to the rate limit service.")
}

const FIELD_NAMES = ["host", "backend", "service", "redis", "domain", "descriptors", "failureMode", "policies"] as const satisfies ReadonlyArray<keyof typeof fields>

interface Shape {
  readonly host?: string | null | undefined
  readonly backend?: string | null | undefined
  readonly service?: null | undefined
  readonly redis?: typeof Redis.Type | null | undefined
  readonly domain?: string | null | undefined
  readonly descriptors?: ReadonlyArray<Descriptor> | null | undefined
  readonly failureMode?: typeof FailureMode.Type | null | undefined
  readonly policies?: typeof ServicePolicies.Type | null | undefined
}

const present = <A>(v: A | null | undefined): v is A => v !== undefined && v !== null

const TARGETS = ["host", "backend", "service", "redis"] as const

/** Issues of one plain (non-conditional) rate limit, or undefined. */
const checkPlain = (c: Shape): { readonly path: ReadonlyArray<string | number>; readonly issue: string } | string | undefined => {
  const targets = TARGETS.filter((k) => present(c[k]))
  if (targets.length !== 1) {
    return targets.length === 0 ? `expected exactly one of: ${TARGETS.join(", ")}` : `only one of ${targets.join(", ")} may be set`
  }
  if (!present(c.domain)) return { path: ["domain"], issue: "missing required field \"domain\"" }
  if (!present(c.descriptors)) return { path: ["descriptors"], issue: "missing required field \"descriptors\"" }
  const redis = present(c.redis)
  if (redis && present(c.policies)) return { path: ["policies"], issue: "policies apply to a rate limit service, not to redis" }
  for (let i = 0; i < c.descriptors.length; i++) {
    const d = c.descriptors[i]!
    if (!redis && present(d.limit)) {
      return { path: ["descriptors", i, "limit"], issue: "limit applies only with redis (a rate limit service keeps its own limits)" }
    }
    if (redis && !present(d.limit) && !present(d.limitOverride)) {
      return { path: ["descriptors", i], issue: "with redis, a descriptor needs limit or limitOverride" }
    }
  }
  return undefined
}

/** One entry of the conditional form. */
export const Entry = Schema.Struct({ condition: Conditional.condition, ...fields })
  .check(Schema.makeFilter(checkPlain))
  .annotate({ description: "A remote rate limit applied when its condition holds." })
export type Entry = typeof Entry.Type

export const Config = Schema.Struct({
  ...fields,
  conditional: opt(Conditional.entries(Entry), "Conditional rate limits: the first entry whose condition holds applies; none: no limit.")
}).check(
  Schema.makeFilter((c: Shape & { readonly conditional?: unknown }) => {
    if (!present(c.conditional)) return checkPlain(c)
    const other = FIELD_NAMES.find((k) => present(c[k]))
    return other === undefined || { path: [other], issue: "conditional cannot be combined with other fields" }
  })
).annotate({ description: "Rate limits decided by an Envoy rate limit service over gRPC, or by token buckets in Redis." })
export type Config = typeof Config.Type

// ---------------------------------------------------------------------------------------------
// The limiter seen by the middleware
// ---------------------------------------------------------------------------------------------

/** A Redis bucket's shape. */
export interface BucketLimit {
  readonly capacity: number
  readonly amount: number
  readonly intervalMs: number
}

/** A descriptor evaluated for one request. */
export interface Evaluated {
  readonly entries: ReadonlyArray<readonly [string, string]>
  /** Hits this request adds (0: only check that the limit is not spent). */
  readonly cost: number
  readonly override: Rls.LimitOverride | undefined
  /** Redis: the bucket (from `limit`, else the override). */
  readonly bucket: BucketLimit | undefined
}

export interface RateLimitHeaders {
  readonly limit: number
  readonly remaining: number
  readonly resetSeconds: number
}

export interface Verdict {
  readonly overLimit: boolean
  /** x-ratelimit-* to queue, if the limiter knows them. */
  readonly headers: RateLimitHeaders | undefined
  readonly responseHeaders: ReadonlyArray<Rls.HeaderValue>
  readonly requestHeaders: ReadonlyArray<Rls.HeaderValue>
}

/** Why a limiter call failed (logged, never sent to the client). */
export class LimiterFailed {
  readonly _tag = "LimiterFailed"
  readonly detail: string
  constructor(detail: string) {
    this.detail = detail
  }
}

/**
 * The decision procedure behind the middleware: `check` decides a request (taking its hits),
 * `charge` adds hits known only after the response, unconditionally.
 */
/** The CLIENT span of a traced request's rate limit decision (gRPC call or Redis script). */
export const SPAN_NAME = "remote_rate_limit"

export interface Limiter {
  readonly name: string
  /** `span`: the decision's span when the request is traced; the limiter adds its attributes and context. */
  readonly check: (descriptors: ReadonlyArray<Evaluated>, span?: Tracing.ClientSpan) => Effect.Effect<Verdict, LimiterFailed>
  readonly charge: (descriptors: ReadonlyArray<Evaluated>) => Effect.Effect<void, LimiterFailed>
}

// ---------------------------------------------------------------------------------------------
// gRPC (Envoy RLS)
// ---------------------------------------------------------------------------------------------

/** Request-wide hits: the shared cost of every descriptor, else 0 (the per-descriptor ones decide). */
const commonCost = (descriptors: ReadonlyArray<Evaluated>): number => {
  const first = descriptors[0]!.cost
  for (const d of descriptors) if (d.cost !== first) return 0
  return first
}

export const encodeCheck = (domain: string, descriptors: ReadonlyArray<Evaluated>): Uint8Array =>
  Rls.encodeRequest({
    domain,
    descriptors: descriptors.map((d) => ({
      entries: d.entries.map(([key, value]) => ({ key, value })),
      limit: d.override,
      hitsAddend: d.cost
    })),
    hitsAddend: commonCost(descriptors)
  })

const RATELIMIT_HEADER = /^x-ratelimit-/i

/** The x-ratelimit-* of an RLS answer: the most constrained status that carries its limit. */
export const headersOf = (response: Rls.RateLimitResponse, overLimit: boolean, nowMs: number): RateLimitHeaders | undefined => {
  if (response.responseHeadersToAdd.some((h) => RATELIMIT_HEADER.test(h.key))) return undefined
  let best: Rls.DescriptorStatus | undefined
  let bestReset = 0
  for (const s of response.statuses) {
    if (s.currentLimit === undefined) continue
    if (overLimit && s.code !== Rls.Code.OVER_LIMIT && best?.code === Rls.Code.OVER_LIMIT) continue
    const unitSeconds = Rls.UNIT_SECONDS[s.currentLimit.unit] ?? 1
    // Without `duration_until_reset`, the end of the service's current unit window (Envoy's rule).
    const reset = s.durationUntilResetMs !== undefined
      ? Math.ceil(s.durationUntilResetMs / 1000)
      : unitSeconds - (Math.floor(nowMs / 1000) % unitSeconds)
    const better = best === undefined ||
      (overLimit && s.code === Rls.Code.OVER_LIMIT && best.code !== Rls.Code.OVER_LIMIT) ||
      s.limitRemaining < best.limitRemaining ||
      (s.limitRemaining === best.limitRemaining && reset > bestReset)
    if (better) {
      best = s
      bestReset = reset
    }
  }
  if (best?.currentLimit === undefined) return undefined
  return { limit: best.currentLimit.requestsPerUnit, remaining: best.limitRemaining, resetSeconds: bestReset }
}

const grpcFailure = (e: GrpcUnary.GrpcError) => new LimiterFailed(`gRPC status ${e.code}: ${e.details}`)

/** `rpc.service` / `rpc.method` of the span: `Rls.METHOD` in OTel's split form. */
const RLS_SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
const RLS_METHOD = "ShouldRateLimit"

const grpcSpan = (span: Tracing.ClientSpan, client: GrpcUnary.Client) => {
  span.set("rpc.system", "grpc")
  span.set("rpc.service", RLS_SERVICE)
  span.set("rpc.method", RLS_METHOD)
  span.set("server.address", client.name)
}

export const grpcLimiter = (client: GrpcUnary.Client, domain: string, now: () => number): Limiter => ({
  name: client.name,
  check: (descriptors, span) => {
    if (span !== undefined) {
      grpcSpan(span, client)
      span.set("ratelimit.domain", domain)
    }
    return client.unary(Rls.METHOD, encodeCheck(domain, descriptors), { timeoutMs: RLS_TIMEOUT_MS, traceparent: span?.traceparent() }).pipe(
      Effect.tapError((e) => Effect.sync(() => span?.set("rpc.grpc.status_code", e.code))),
      Effect.mapError(grpcFailure),
      Effect.flatMap((bytes) =>
        Effect.try({
          try: () => {
            const response = Rls.decodeResponse(bytes)
            const overLimit = response.overallCode !== Rls.Code.OK
            return {
              overLimit,
              headers: headersOf(response, overLimit, now()),
              responseHeaders: response.responseHeadersToAdd,
              requestHeaders: response.requestHeadersToAdd
            }
          },
          catch: () => new LimiterFailed("malformed RateLimitResponse")
        })
      )
    )
  },
  charge: (descriptors) =>
    Effect.asVoid(Effect.mapError(client.unary(Rls.METHOD, encodeCheck(domain, descriptors), { timeoutMs: RLS_TIMEOUT_MS }), grpcFailure))
})

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

const NO_HEADERS: ReadonlyArray<Rls.HeaderValue> = []

const bucketsOf = (domain: string, descriptors: ReadonlyArray<Evaluated>): Array<RedisRateLimiter.Bucket> => {
  const out: Array<RedisRateLimiter.Bucket> = []
  for (const d of descriptors) {
    if (d.bucket === undefined) continue
    out.push({ key: RedisRateLimiter.key(domain, d.entries), ...d.bucket, cost: d.cost })
  }
  return out
}

const redisFailure = (error: unknown) => new LimiterFailed(error instanceof Error ? error.message : String(error))

const ALLOWED: Verdict = { overLimit: false, headers: undefined, responseHeaders: NO_HEADERS, requestHeaders: NO_HEADERS }

export const redisLimiter = (store: RedisRateLimiter.RedisRateLimiter, domain: string, name: string): Limiter => ({
  name,
  check: (descriptors, span) => {
    const buckets = bucketsOf(domain, descriptors)
    if (span !== undefined) {
      span.set("db.system.name", "redis")
      span.set("ratelimit.domain", domain)
      span.set("ratelimit.buckets", buckets.length)
    }
    if (buckets.length === 0) return Effect.succeed(ALLOWED)
    return Effect.map(
      Effect.tryPromise({ try: () => store.decide(buckets, "check"), catch: redisFailure }),
      (d): Verdict => ({
        overLimit: !d.allowed,
        headers: { limit: d.capacity, remaining: d.remaining, resetSeconds: Math.ceil(d.resetMs / 1000) },
        responseHeaders: NO_HEADERS,
        requestHeaders: NO_HEADERS
      })
    )
  },
  charge: (descriptors) => {
    const buckets = bucketsOf(domain, descriptors)
    if (buckets.length === 0) return Effect.void
    return Effect.asVoid(Effect.tryPromise({ try: () => store.decide(buckets, "take"), catch: redisFailure }))
  }
})

// ---------------------------------------------------------------------------------------------
// Descriptors
// ---------------------------------------------------------------------------------------------

interface Compiled {
  readonly keys: ReadonlyArray<string>
  readonly values: ReadonlyArray<Cel.Program>
  readonly tokens: boolean
  readonly cost: Cel.Program | undefined
  readonly limitOverride: Cel.Program | undefined
  readonly limit: BucketLimit | undefined
}

/** CEL values a descriptor entry accepts (upstream `as_string`, plus numbers and booleans). */
const entryText = (value: unknown): string | undefined => {
  if (typeof value === "string") return value
  if (typeof value === "bigint" || typeof value === "boolean") return String(value)
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : undefined
  return undefined
}

/** A non-negative whole number of hits, or undefined. */
const hits = (value: unknown): number | undefined => {
  const n = typeof value === "bigint" ? Number(value) : value
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0 ? n : undefined
}

const UNITS: Readonly<Record<string, number>> = {
  SECOND: Rls.Unit.SECOND,
  MINUTE: Rls.Unit.MINUTE,
  HOUR: Rls.Unit.HOUR,
  DAY: Rls.Unit.DAY,
  MONTH: Rls.Unit.MONTH,
  YEAR: Rls.Unit.YEAR
}

const field = (value: unknown, name: string): unknown => {
  if (value instanceof Map) return value.get(name)
  if (typeof value === "object" && value !== null && Object.hasOwn(value, name)) return Reflect.get(value, name)
  return undefined
}

/** `{unit, requestsPerUnit}` (also `requests_per_unit`, as upstream reads it); undefined when invalid. */
export const overrideOf = (value: unknown): Rls.LimitOverride | undefined => {
  const perUnit = hits(field(value, "requestsPerUnit") ?? field(value, "requests_per_unit"))
  const rawUnit = field(value, "unit")
  const unit = typeof rawUnit === "string" ? UNITS[rawUnit.toUpperCase()] : hits(rawUnit)
  if (perUnit === undefined || perUnit === 0 || unit === undefined || Rls.UNIT_SECONDS[unit] === undefined) return undefined
  return { requestsPerUnit: perUnit, unit }
}

/** The request side of one descriptor; undefined when it is dropped (an expression failed). */
const evaluate = (d: Compiled, activation: object): Evaluated | undefined => {
  const entries: Array<readonly [string, string]> = []
  for (let i = 0; i < d.keys.length; i++) {
    const value = entryText(d.values[i]!.evalValue(activation))
    if (value === undefined) return undefined
    entries.push([d.keys[i]!, value])
  }
  // Rate limit services require at least one entry per descriptor.
  if (entries.length === 0) return undefined
  let cost = d.tokens ? 0 : 1
  if (!d.tokens && d.cost !== undefined) {
    const c = hits(d.cost.evalValue(activation))
    if (c === undefined) return undefined
    cost = c
  }
  let override: Rls.LimitOverride | undefined
  if (d.limitOverride !== undefined) {
    override = overrideOf(d.limitOverride.evalValue(activation))
    if (override === undefined) return undefined
  }
  const bucket = d.limit ?? (override === undefined ? undefined : {
    capacity: override.requestsPerUnit,
    amount: override.requestsPerUnit,
    intervalMs: Rls.UNIT_SECONDS[override.unit]! * 1000
  })
  return { entries, cost, override, bucket }
}

const compile = (list: ReadonlyArray<Descriptor>, path: string): Effect.Effect<Array<Compiled>, ConfigError> =>
  Effect.forEach(list, (d, i) =>
    Effect.gen(function*() {
      const at = `${path}.descriptors[${i}]`
      const values = yield* Effect.forEach(d.entries, (e, j) => Cel.compile(e.value, `${at}.entries[${j}].value`))
      const tokens = d.type === "tokens"
      const costSource = present(d.cost) ? d.cost : tokens ? "llm.totalTokens" : undefined
      const cost = costSource === undefined ? undefined : yield* Cel.compile(costSource, `${at}.cost`)
      if (tokens && cost !== undefined && cost.references.responseBody) {
        return yield* Effect.fail(new ConfigError({ issues: [{ path: `${at}.cost`, message: "a tokens cost may read the response's status and headers, not its body" }] }))
      }
      const limitOverride = present(d.limitOverride) ? yield* Cel.compile(d.limitOverride, `${at}.limitOverride`) : undefined
      const limit = present(d.limit)
        ? { capacity: d.limit.maxTokens, amount: d.limit.tokensPerFill, intervalMs: Duration.parseMillis(d.limit.fillInterval) }
        : undefined
      return { keys: d.entries.map((e) => e.key), values, tokens, cost, limitOverride, limit }
    }))

// ---------------------------------------------------------------------------------------------
// Middleware
// ---------------------------------------------------------------------------------------------

const rateLimited = ProxyError.make({ _tag: "RateLimited" })
const rateLimitFailed = ProxyError.make({ _tag: "RateLimitFailed" })

const queueHeaders = (ctx: ProxyRequest, verdict: Verdict): void => {
  const h = verdict.headers
  if (h !== undefined) {
    ctx.queueResponseHeader("x-ratelimit-limit", String(h.limit))
    ctx.queueResponseHeader("x-ratelimit-remaining", String(h.remaining))
    ctx.queueResponseHeader("x-ratelimit-reset", String(h.resetSeconds))
  }
  for (const { key, value } of verdict.responseHeaders) {
    const name = key.toLowerCase()
    const text = HeaderExpressions.text(value)
    if (HeaderExpressions.isHeaderName(name) && text !== undefined) ctx.queueResponseHeader(name, text)
  }
}

const setRequestHeaders = (ctx: ProxyRequest, headers: ReadonlyArray<Rls.HeaderValue>): void => {
  for (const { key, value } of headers) {
    const name = key.toLowerCase()
    const text = HeaderExpressions.text(value)
    if (HeaderExpressions.isHeaderName(name) && text !== undefined && name !== "host" && !name.startsWith(":")) {
      Headers.set(ctx.headers, name, text)
    }
  }
}

export interface Settings {
  readonly descriptors: ReadonlyArray<Descriptor>
  readonly failOpen: boolean
}

/**
 * The middleware over a `Limiter` (exported so tests can drive it with a scripted one). Needs
 * the snapshot's Scope for the post-response charges.
 */
export const middleware = (settings: Settings, limiter: Limiter, env: Policy.BuildEnv, path: string) =>
  Effect.gen(function*() {
    const compiled = yield* compile(settings.descriptors, path)
    if (compiled.length === 0) return ((next) => next) satisfies Middleware
    const tokenDescriptors = compiled.filter((d) => d.tokens)
    const fibers = yield* FiberSet.make<void, never>()
    const fork = yield* FiberSet.runtime(fibers)<never>()
    let charging = 0
    let failures = 0
    let dropped = 0
    const failOpen = settings.failOpen

    const requestPrograms = compiled.flatMap((d) => [...d.values, ...(d.tokens ? [] : d.cost === undefined ? [] : [d.cost]), ...(d.limitOverride === undefined ? [] : [d.limitOverride])])
    const readBody = CelContext.needsBody(requestPrograms) ? CelContext.bodyReader(requestPrograms, env.maxBufferSize) : undefined

    const onFailure = (failure: LimiterFailed, next: Policy.Handler): Policy.Handler => {
      failures++
      const log = failures === 1 || failures % FAILURE_LOG_EVERY === 0
        ? Effect.logWarning(`rate limit ${limiter.name} at ${path} failed (${failures} so far; ${failOpen ? "failOpen: allowing" : "failClosed: denying"}): ${failure.detail}`)
        : Effect.void
      return Effect.andThen(log, failOpen ? next : Effect.fail(rateLimitFailed))
    }

    const charge = (ctx: ProxyRequest, evaluated: ReadonlyArray<Evaluated | undefined>, response: ProxyResponse): void => {
      const activation = CelContext.forResponse(ctx, response)
      const charged: Array<Evaluated> = []
      for (let i = 0; i < tokenDescriptors.length; i++) {
        const d = evaluated[i]
        const program = tokenDescriptors[i]!.cost
        if (d === undefined || program === undefined) continue
        const cost = hits(program.evalValue(activation))
        if (cost !== undefined && cost > 0) charged.push({ ...d, cost })
      }
      if (charged.length === 0) return
      if (charging >= MAX_CHARGES_IN_FLIGHT) {
        dropped++
        if (dropped === 1 || dropped % FAILURE_LOG_EVERY === 0) fork(Effect.logWarning(`rate limit ${limiter.name} at ${path}: ${dropped} token charges dropped`))
        return
      }
      charging++
      fork(limiter.charge(charged).pipe(
        Effect.catchCause((cause: Cause.Cause<LimiterFailed>) => Effect.logDebug("rate limit token charge failed", cause)),
        Effect.ensuring(Effect.sync(() => void charging--))
      ))
    }

    const traced = (trace: Tracing.RequestTrace, evaluated: ReadonlyArray<Evaluated>) =>
      Tracing.child(trace, SPAN_NAME, (span) => {
        span.set("ratelimit.descriptors", evaluated.length)
        return limiter.check(evaluated, span).pipe(
          Effect.tap((verdict) => Effect.sync(() => span.set("ratelimit.over_limit", verdict.overLimit))),
          Effect.tapError((failure) => Effect.sync(() => void (span.error = failure.detail)))
        )
      })

    return ((next) => {
      const decide = (ctx: ProxyRequest): Policy.Handler => {
        const activation = CelContext.forRequest(ctx)
        const evaluated: Array<Evaluated> = []
        // Token descriptors by index, for the charge after the response.
        let tokenEvaluated: Array<Evaluated | undefined> | undefined
        for (let i = 0; i < compiled.length; i++) {
          const d = compiled[i]!
          const e = evaluate(d, activation)
          if (e !== undefined) evaluated.push(e)
          if (d.tokens) (tokenEvaluated ??= []).push(e)
        }
        if (evaluated.length === 0) return next
        const charged = tokenEvaluated
        const afterResponse = charged !== undefined && charged.some((d) => d !== undefined)
          ? Effect.tap(next, (response) => Effect.sync(() => charge(ctx, charged, response)))
          : next
        const trace = ctx.trace
        const checked = trace === undefined ? limiter.check(evaluated) : traced(trace, evaluated)
        return Effect.matchEffect(checked, {
          onFailure: (failure) => onFailure(failure, afterResponse),
          onSuccess: (verdict) => {
            queueHeaders(ctx, verdict)
            if (verdict.overLimit) return Effect.fail(rateLimited)
            setRequestHeaders(ctx, verdict.requestHeaders)
            return afterResponse
          }
        })
      }
      return Effect.flatMap(currentRequest, (ctx) =>
        readBody !== undefined && ctx.body._tag === "Stream" ? Effect.flatMap(readBody(ctx), () => decide(ctx)) : decide(ctx))
    }) satisfies Middleware
  })

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/** Redis clients per declaration, for the snapshot's life (a policy merged into several routes is built once per route). */
const redisClients = new WeakMap<object, RedisRateLimiter.RedisRateLimiter>()

const redisStore = (redis: typeof Redis.Type, path: string) =>
  Effect.gen(function*() {
    const cached = redisClients.get(redis)
    if (cached !== undefined) return cached
    const timeoutMs = Duration.parseMillis(present(redis.commandTimeout) ? redis.commandTimeout : DEFAULT_REDIS_TIMEOUT)
    let errors = 0
    const fibers = yield* FiberSet.make<void, never>()
    const log = yield* FiberSet.runtime(fibers)<never>()
    const store = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () =>
          RedisRateLimiter.connect({
            url: redis.url,
            commandTimeoutMs: Math.max(1, Math.round(timeoutMs)),
            // ioredis reports every failed reconnect; the URL may hold a password, so it is not logged.
            onError: (error) => {
              errors++
              if (errors === 1 || errors % FAILURE_LOG_EVERY === 0) log(Effect.logWarning(`rate limit redis at ${path}: ${error.message} (${errors} errors)`))
            }
          }),
        catch: () => new ConfigError({ issues: [{ path: `${path}.redis.url`, message: "invalid redis url" }] })
      }),
      (s) => Effect.promise(() => s.close())
    )
    redisClients.set(redis, store)
    return store
  })

const makePlain = (config: Shape, env: Policy.BuildEnv, path: string) =>
  Effect.gen(function*() {
    const domain = config.domain ?? ""
    const settings: Settings = {
      descriptors: config.descriptors ?? [],
      failOpen: config.failureMode === "failOpen" || config.failureMode === "FailOpen"
    }
    if (present(config.redis)) {
      const store = yield* redisStore(config.redis, path)
      return yield* middleware(settings, redisLimiter(store, domain, "redis"), env, path)
    }
    const client = yield* GrpcUnary.connect({ host: config.host, backend: config.backend, policies: config.policies }, env, path)
    const clock = yield* Clock.clockWith(Effect.succeed)
    return yield* middleware(settings, grpcLimiter(client, domain, () => clock.currentTimeMillisUnsafe()), env, path)
  })

export const policy = Policy.define({
  key: "remoteRateLimit",
  make: Conditional.plainOrConditional(makePlain)
})
