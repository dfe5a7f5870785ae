import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import * as Deadline from "../../src/pipeline/Deadline.ts"

const timedOut = () => Effect.fail("timed out" as const)

/** An effect that never ends on its own and records that it was interrupted. */
const hanging = () => {
  const state = { interrupted: false }
  const effect = Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => void (state.interrupted = true))))
  return { effect, state }
}

describe("Deadline.within (live clock: one child fiber and a Node timer)", () => {
  it.live("passes a success through, synchronous or not", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* Deadline.within(Effect.succeed(1), 1000, timedOut), 1)
      assert.strictEqual(yield* Deadline.within(Effect.sleep(5).pipe(Effect.as(2)), 1000, timedOut), 2)
    }))

  it.live("passes a failure through unchanged", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Deadline.within(Effect.sleep(5).pipe(Effect.andThen(Effect.fail("boom" as const))), 1000, timedOut))
      assert.deepStrictEqual(exit, Exit.fail("boom"))
    }))

  it.live("continues with onTimeout and interrupts the effect at the deadline", () =>
    Effect.gen(function*() {
      const { effect, state } = hanging()
      const exit = yield* Effect.exit(Deadline.within(effect, 20, timedOut))
      assert.deepStrictEqual(exit, Exit.fail("timed out"))
      yield* Effect.sleep(5)
      assert.isTrue(state.interrupted)
    }))

  it.live("interrupting the caller interrupts the effect, and the deadline no longer fires", () =>
    Effect.gen(function*() {
      const { effect, state } = hanging()
      let fired = false
      const fiber = yield* Effect.forkChild(Deadline.within(effect, 30, () => Effect.sync(() => void (fired = true))))
      yield* Effect.sleep(5)
      yield* Fiber.interrupt(fiber)
      assert.isTrue(state.interrupted)
      yield* Effect.sleep(50)
      assert.isFalse(fired)
    }))
})

describe("Deadline.within (test clock)", () => {
  it.effect("runs on virtual time", () =>
    Effect.gen(function*() {
      const { effect, state } = hanging()
      const fiber = yield* Effect.forkChild(Effect.exit(Deadline.within(effect, 1000, timedOut)))
      yield* TestClock.adjust("999 millis")
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* Fiber.join(fiber), Exit.fail("timed out"))
      assert.isTrue(state.interrupted)
    }))
})
