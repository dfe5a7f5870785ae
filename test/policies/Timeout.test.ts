import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Schema } from "effect"
import { TestClock } from "effect/testing"
import type { Handler } from "../../src/pipeline/Policy.ts"
import * as ProxyError from "../../src/pipeline/ProxyError.ts"
import { ProxyResponse } from "../../src/pipeline/ProxyResponse.ts"
import { RequestContext } from "../../src/pipeline/RequestContext.ts"
import * as Timeout from "../../src/policies/Timeout.ts"
import * as Headers from "../../src/shared/headers.ts"
import { run } from "../support/Policies.ts"
import { request } from "../support/Requests.ts"

/** A `next` that answers after `ms` and records whether it was interrupted. */
const slow = (ms: number) => {
  const state = { interrupted: false }
  const handler: Handler = Effect.sleep(ms).pipe(
    Effect.as(new ProxyResponse(200, Headers.empty(), "late")),
    Effect.onInterrupt(() => Effect.sync(() => void (state.interrupted = true)))
  )
  return { handler, state }
}

describe("timeout", () => {
  it.effect("requestTimeout answers 504 request timeout and interrupts what runs under it", () =>
    Effect.gen(function*() {
      const next = slow(5000)
      const fiber = yield* Effect.forkChild(Effect.flip(run(Timeout.policy, { requestTimeout: "1s" }, next.handler, request())))
      yield* TestClock.adjust("999 millis")
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error.reason._tag, "RequestTimeout")
      const response = ProxyError.toResponse(error)
      assert.strictEqual(response.status, 504)
      assert.strictEqual(response.body, "request timeout")
      assert.isTrue(next.state.interrupted)
    }))

  it.effect("a response within requestTimeout passes through", () =>
    Effect.gen(function*() {
      const next = slow(500)
      const fiber = yield* Effect.forkChild(run(Timeout.policy, { requestTimeout: "1s" }, next.handler, request()))
      yield* TestClock.adjust("500 millis")
      const response = yield* Fiber.join(fiber)
      assert.strictEqual(response.status, 200)
      assert.strictEqual(response.body, "late")
      assert.isFalse(next.state.interrupted)
    }))

  it.effect("backendRequestTimeout is recorded on the request for the backend call, and bounds nothing here", () =>
    Effect.gen(function*() {
      const seen: Array<number | undefined> = []
      const next: Handler = Effect.flatMap(Effect.service(RequestContext), (ctx) => {
        seen.push(ctx.backendRequestTimeoutMs)
        return Effect.as(Effect.sleep("5 seconds"), new ProxyResponse(200, Headers.empty(), "ok"))
      })
      const fiber = yield* Effect.forkChild(run(Timeout.policy, { backendRequestTimeout: "250ms" }, next, request()))
      yield* TestClock.adjust("5 seconds")
      const response = yield* Fiber.join(fiber)
      assert.strictEqual(response.status, 200)
      assert.deepStrictEqual(seen, [250])
    }))

  it.effect("without fields it changes nothing", () =>
    Effect.gen(function*() {
      const req = request()
      const response = yield* run(Timeout.policy, {}, Effect.succeed(new ProxyResponse(204, Headers.empty(), undefined)), req)
      assert.strictEqual(response.status, 204)
      assert.isUndefined(req.backendRequestTimeoutMs)
    }))

  it("rejects a malformed duration when decoding", () => {
    const exit = Schema.decodeUnknownExit(Timeout.Config)({ requestTimeout: "soon" })
    assert.strictEqual(exit._tag, "Failure")
    assert.include(String(exit), "invalid duration \"soon\"")
  })
})
