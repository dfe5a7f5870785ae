import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Schema, Scope } from "effect"
import { TestClock } from "effect/testing"
import type { Handler } from "../../src/pipeline/Policy.ts"
import * as ProxyError from "../../src/pipeline/ProxyError.ts"
import { RequestContext } from "../../src/pipeline/RequestContext.ts"
import * as LocalRateLimit from "../../src/policies/LocalRateLimit.ts"
import { buildEnv, upstream } from "../support/Policies.ts"
import { request } from "../support/Requests.ts"

interface Outcome {
  readonly status: number
  readonly body: unknown
  readonly headers: Record<string, string>
}

/** Builds the policy once (one snapshot) and returns a function sending one request through it. */
const limiter = (config: LocalRateLimit.Config) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const next = upstream()
    const middleware = yield* Effect.orDie(Scope.provide(LocalRateLimit.policy.make(config, buildEnv(), "policies.localRateLimit"), scope))
    const handler: Handler = middleware(next.handler)
    const send = Effect.gen(function*() {
      const req = request()
      const exit = yield* Effect.exit(Effect.provideService(handler, RequestContext, req))
      const headers: Record<string, string> = {}
      for (const [k, v] of req.queuedResponseHeaders ?? []) headers[k] = v
      const response = Exit.isSuccess(exit)
        ? exit.value
        : ProxyError.toResponse(exit.cause.reasons[0]?._tag === "Fail" ? exit.cause.reasons[0].error : ProxyError.make({ _tag: "Internal", cause: exit.cause }))
      const outcome: Outcome = { status: response.status, body: response.body, headers }
      return outcome
    })
    return { send, next }
  })

const limitHeaders = (limit: number, remaining: number, reset: number) => ({
  "x-ratelimit-limit": String(limit),
  "x-ratelimit-remaining": String(remaining),
  "x-ratelimit-reset": String(reset)
})

describe("localRateLimit", () => {
  it.effect("a bucket starts full, then rejects with 429 and the limit headers", () =>
    Effect.gen(function*() {
      const { send, next } = yield* limiter([{ maxTokens: 3, tokensPerFill: 1, fillInterval: "1s" }])
      assert.deepStrictEqual(yield* send, { status: 200, body: "upstream", headers: limitHeaders(3, 2, 1) })
      assert.deepStrictEqual((yield* send).headers, limitHeaders(3, 1, 1))
      assert.deepStrictEqual((yield* send).headers, limitHeaders(3, 0, 1))
      const rejected = yield* send
      assert.deepStrictEqual(rejected, { status: 429, body: "rate limit exceeded", headers: limitHeaders(3, 0, 1) })
      assert.strictEqual(next.calls.length, 3)
    }))

  it.effect("refills tokensPerFill per whole fillInterval, capped at maxTokens", () =>
    Effect.gen(function*() {
      const { send } = yield* limiter([{ maxTokens: 3, tokensPerFill: 2, fillInterval: "10s" }])
      for (let i = 0; i < 3; i++) assert.strictEqual((yield* send).status, 200)
      yield* TestClock.adjust("9999 millis")
      const early = yield* send
      assert.strictEqual(early.status, 429)
      assert.strictEqual(early.headers["x-ratelimit-reset"], "1", "1 ms left rounds up to 1 s")
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual((yield* send).headers, limitHeaders(3, 1, 10))
      assert.deepStrictEqual((yield* send).headers, limitHeaders(3, 0, 10))
      assert.strictEqual((yield* send).status, 429)
      // Five intervals would add 10 tokens; the bucket holds 3.
      yield* TestClock.adjust("50 seconds")
      assert.deepStrictEqual((yield* send).headers, limitHeaders(3, 2, 10))
    }))

  it.effect("x-ratelimit-reset counts down to the next refill, in whole seconds rounded up", () =>
    Effect.gen(function*() {
      const { send } = yield* limiter([{ maxTokens: 10, tokensPerFill: 1, fillInterval: "60s" }])
      yield* TestClock.adjust("1500 millis")
      assert.deepStrictEqual((yield* send).headers, limitHeaders(10, 9, 59))
      yield* TestClock.adjust("60 seconds")
      // The refill at 60 s found the bucket nearly full; the next one is at 120 s.
      assert.deepStrictEqual((yield* send).headers, limitHeaders(10, 9, 59))
    }))

  it.effect("several buckets: each request takes a token from each; headers are the most constrained bucket's", () =>
    Effect.gen(function*() {
      const { send } = yield* limiter([
        { maxTokens: 5, tokensPerFill: 5, fillInterval: "1s" },
        { maxTokens: 2, tokensPerFill: 1, fillInterval: "1m" }
      ])
      assert.deepStrictEqual((yield* send).headers, limitHeaders(2, 1, 60))
      assert.deepStrictEqual((yield* send).headers, limitHeaders(2, 0, 60))
      assert.deepStrictEqual(yield* send, { status: 429, body: "rate limit exceeded", headers: limitHeaders(2, 0, 60) })
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(yield* send, { status: 429, body: "rate limit exceeded", headers: limitHeaders(2, 0, 59) })
    }))

  it.effect("a request rejected by one bucket takes nothing from the others", () =>
    Effect.gen(function*() {
      const { send } = yield* limiter([
        { maxTokens: 2, tokensPerFill: 1, fillInterval: "1h" },
        { maxTokens: 1, tokensPerFill: 1, fillInterval: "1s" }
      ])
      assert.deepStrictEqual((yield* send).headers, limitHeaders(1, 0, 1))
      assert.strictEqual((yield* send).status, 429)
      yield* TestClock.adjust("1 second")
      // Had the rejected request taken the hourly bucket's last token, this one would be 429.
      assert.deepStrictEqual(yield* send, { status: 200, body: "upstream", headers: limitHeaders(2, 0, 3599) })
      assert.strictEqual((yield* send).status, 429)
    }))

  it.effect("when the second bucket is tighter only after refills, the headers follow it", () =>
    Effect.gen(function*() {
      const { send } = yield* limiter([
        { maxTokens: 2, tokensPerFill: 1, fillInterval: "1s" },
        { maxTokens: 3, tokensPerFill: 3, fillInterval: "1h" }
      ])
      assert.deepStrictEqual((yield* send).headers, limitHeaders(2, 1, 1))
      yield* TestClock.adjust("1 second")
      // Bucket 1: 2 → 1 left; bucket 2: 1 left. Same remaining: the later refill wins.
      assert.deepStrictEqual((yield* send).headers, limitHeaders(3, 1, 3599))
    }))

  it.effect("a declaration merged into several routes shares its buckets within a snapshot", () =>
    Effect.gen(function*() {
      const config: LocalRateLimit.Config = [{ maxTokens: 2, tokensPerFill: 1, fillInterval: "1m" }]
      const routeA = yield* limiter(config)
      const routeB = yield* limiter(config)
      assert.strictEqual((yield* routeA.send).status, 200)
      assert.strictEqual((yield* routeB.send).status, 200)
      assert.strictEqual((yield* routeA.send).status, 429)
      // A reload decodes a new config object: its buckets start full.
      const reloaded = yield* limiter([{ maxTokens: 2, tokensPerFill: 1, fillInterval: "1m" }])
      assert.strictEqual((yield* reloaded.send).status, 200)
    }))

  it.effect("an empty list limits nothing and adds no headers", () =>
    Effect.gen(function*() {
      const { send } = yield* limiter([])
      assert.deepStrictEqual(yield* send, { status: 200, body: "upstream", headers: {} })
    }))

  it.effect("conditional: the first matching entry's bucket limits the request; no match, no limit", () =>
    Effect.gen(function*() {
      const config = Schema.decodeUnknownSync(LocalRateLimit.Config)({
        conditional: [
          { condition: 'request.headers["x-tier"] == "free"', maxTokens: 1, tokensPerFill: 1, fillInterval: "1m" },
          { condition: 'request.headers["x-tier"] == "pro"', maxTokens: 2, tokensPerFill: 1, fillInterval: "1m" }
        ]
      })
      const scope = yield* Scope.make()
      const middleware = yield* Effect.orDie(Scope.provide(LocalRateLimit.policy.make(config, buildEnv(), "policies.localRateLimit"), scope))
      const handler = middleware(upstream().handler)
      const send = (tier: string | undefined) =>
        Effect.gen(function*() {
          const req = request(tier === undefined ? {} : { headers: { "x-tier": tier } })
          const exit = yield* Effect.exit(Effect.provideService(handler, RequestContext, req))
          return { ok: Exit.isSuccess(exit), remaining: req.queuedResponseHeaders?.find(([k]) => k === "x-ratelimit-remaining")?.[1] }
        })
      assert.deepStrictEqual(yield* send("free"), { ok: true, remaining: "0" })
      assert.deepStrictEqual(yield* send("free"), { ok: false, remaining: "0" })
      assert.deepStrictEqual(yield* send("pro"), { ok: true, remaining: "1" })
      assert.deepStrictEqual(yield* send("pro"), { ok: true, remaining: "0" })
      assert.deepStrictEqual(yield* send("pro"), { ok: false, remaining: "0" })
      assert.deepStrictEqual(yield* send(undefined), { ok: true, remaining: undefined })
    }))

  it("conditional config errors: a non-last entry without condition; an entry over capacity", () => {
    const decode = Schema.decodeUnknownSync(LocalRateLimit.Config)
    assert.throws(() => decode({ conditional: [{ maxTokens: 1, tokensPerFill: 1, fillInterval: "1s" }, { condition: "true", maxTokens: 1, tokensPerFill: 1, fillInterval: "1s" }] }), /only the last entry may omit it/)
    assert.throws(() => decode({ conditional: [{ condition: "true", maxTokens: 1, tokensPerFill: 2, fillInterval: "1s" }] }), /may not exceed maxTokens/)
  })
})
