import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Schema } from "effect"
import { TestClock } from "effect/testing"
import * as Delay from "../../src/policies/Delay.ts"
import { run, upstream } from "../support/Policies.ts"
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

  it("accepts literal durations and refuses CEL expressions for now", () => {
    assert.strictEqual(Schema.decodeUnknownExit(Delay.Config)({ duration: "150ms" })._tag, "Success")
    const cel = Schema.decodeUnknownExit(Delay.Config)({ duration: "random() < 0.1 ? 2000 : 0" })
    assert.strictEqual(cel._tag, "Failure")
    assert.include(String(cel), Delay.CEL_DURATION_UNSUPPORTED)
    assert.strictEqual(Schema.decodeUnknownExit(Delay.Config)({})._tag, "Failure")
  })
})
