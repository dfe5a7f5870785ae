import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Schema, Scope } from "effect"
import { vi } from "vitest"
import { TestClock } from "effect/testing"
import * as Delay from "../../src/policies/Delay.ts"
import { buildEnv, run, upstream } from "../support/Policies.ts"
import { request } from "../support/Requests.ts"

describe("delay", () => {
  it.effect("holds the request for the duration, then forwards it", () =>
    Effect.gen(function*() {
      const next = upstream()
      const fiber = yield* Effect.forkChild(run(Delay.policy, { duration: "2s" }, next.handler, request()))
      yield* TestClock.adjust("1999 millis")
      assert.strictEqual(next.calls.length, 0)
      yield* TestClock.adjust("1 millis")
      const response = yield* Fiber.join(fiber)
      assert.strictEqual(response.status, 200)
      assert.strictEqual(next.calls.length, 1)
    }))

  it.effect("a zero duration injects no delay", () =>
    Effect.gen(function*() {
      const next = upstream()
      const response = yield* run(Delay.policy, { duration: "0s" }, next.handler, request())
      assert.strictEqual(response.status, 200)
      assert.strictEqual(next.calls.length, 1)
    }))

  it.effect("a client gone mid-delay never reaches the backend", () =>
    Effect.gen(function*() {
      const next = upstream()
      const fiber = yield* Effect.forkChild(run(Delay.policy, { duration: "5s" }, next.handler, request()))
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(fiber)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(next.calls.length, 0)
    }))

  it.effect("a CEL duration in milliseconds: the header forces the branch, a missing header (an error) injects none", () =>
    Effect.gen(function*() {
      const config = { duration: 'request.headers["x-chaos"] == "1" ? 500 : 0' }
      const next = upstream()
      const fiber = yield* Effect.forkChild(run(Delay.policy, config, next.handler, request({ headers: { "x-chaos": "1" } })))
      yield* TestClock.adjust("499 millis")
      assert.strictEqual(next.calls.length, 0)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual((yield* Fiber.join(fiber)).status, 200)
      // No header: the comparison errors, which is no delay (no clock needed).
      assert.strictEqual((yield* run(Delay.policy, config, next.handler, request())).status, 200)
      assert.strictEqual(next.calls.length, 2)
    }))

  it.effect("random() picks the branch: below the threshold waits 2s, above does not", () =>
    Effect.gen(function*() {
      const config = { duration: "random() < 0.1 ? 2000 : 0" }
      const next = upstream()
      const spy = vi.spyOn(Math, "random").mockReturnValue(0.05)
      try {
        const fiber = yield* Effect.forkChild(run(Delay.policy, config, next.handler, request()))
        yield* TestClock.adjust("1999 millis")
        assert.strictEqual(next.calls.length, 0)
        yield* TestClock.adjust("1 millis")
        yield* Fiber.join(fiber)
        spy.mockReturnValue(0.5)
        yield* run(Delay.policy, config, next.handler, request())
        assert.strictEqual(next.calls.length, 2)
      } finally {
        spy.mockRestore()
      }
    }))

  it.effect("a CEL duration value, capped at MAX_DELAY_MS", () =>
    Effect.gen(function*() {
      const next = upstream()
      const fiber = yield* Effect.forkChild(run(Delay.policy, { duration: 'duration("1500ms")' }, next.handler, request()))
      yield* TestClock.adjust("1499 millis")
      assert.strictEqual(next.calls.length, 0)
      yield* TestClock.adjust("1 millis")
      yield* Fiber.join(fiber)
      const capped = yield* Effect.forkChild(run(Delay.policy, { duration: "100000000000" }, next.handler, request()))
      yield* TestClock.adjust(Delay.MAX_DELAY_MS)
      yield* Fiber.join(capped)
      assert.strictEqual(next.calls.length, 2)
    }))

  it.effect("a CEL expression of the wrong type or with a syntax error is a ConfigError at delay.duration", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const wrongType = yield* Effect.exit(Scope.provide(Delay.policy.make({ duration: '"soon"' }, buildEnv(), "r.policies.delay"), scope))
      assert.include(String(wrongType), "r.policies.delay.duration")
      assert.include(String(wrongType), "must evaluate to a duration or a number of milliseconds, not string")
      const syntax = yield* Effect.exit(Scope.provide(Delay.policy.make({ duration: "random( <" }, buildEnv(), "r.policies.delay"), scope))
      assert.include(String(syntax), "r.policies.delay.duration: invalid CEL expression")
      assert.strictEqual(Schema.decodeUnknownExit(Delay.Config)({})._tag, "Failure")
    }))
})
