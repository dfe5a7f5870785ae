/**
 * The watchdog limits taken from the environment (REQUEST_BODY_IDLE_TIMEOUT,
 * RESPONSE_SEND_TIMEOUT): a value that is not a duration is a config error naming the
 * variable; unset takes the 30 s default; "0s" is 0 (off). What each limit does:
 * test/e2e/SlowBody.test.ts and test/e2e/SlowRead.test.ts.
 */
import * as Effect from "effect/Effect"
import { describe, expect, it } from "vitest"
import { BODY_IDLE_TIMEOUT_ENV, SEND_TIMEOUT_ENV } from "../../src/config/Normalize.ts"
import * as Gateway from "../../src/Gateway.ts"

const CONFIG = { _tag: "Inline", text: "binds: []\n" } as const

describe.each([
  { name: BODY_IDLE_TIMEOUT_ENV, setting: "requestBodyIdleTimeoutMs" },
  { name: SEND_TIMEOUT_ENV, setting: "responseSendTimeoutMs" }
] as const)("$name", ({ name, setting }) => {
  it("is a config error when it is not a duration", async () => {
    const error = await Effect.runPromise(Effect.flip(Gateway.validate(CONFIG, (n) => (n === name ? "soon" : undefined))))
    expect(error.issues).toContainEqual(expect.objectContaining({
      path: name,
      message: 'invalid duration "soon" (expected e.g. "30s", "1m"; "0s" turns it off)'
    }))
  })

  it("defaults to 30 s, and 0s turns it off", async () => {
    const unset = await Effect.runPromise(Gateway.validate(CONFIG, () => undefined))
    expect(unset.settings[setting]).toBe(30_000)
    const off = await Effect.runPromise(Gateway.validate(CONFIG, (n) => (n === name ? "0s" : undefined)))
    expect(off.settings[setting]).toBe(0)
  })
})
