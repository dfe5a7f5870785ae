/**
 * Constant-time credential comparison, checked structurally (no timings asserted): every
 * secret comparison in `apiKey` and `basicAuth` goes through `crypto.timingSafeEqual`, and
 * `apiKey` compares with every configured digest whether or not (and wherever) one matches, so
 * the time depends on the number of keys only. Unknown basicAuth users cost a bcrypt run like
 * real ones (Bcrypt.test.ts).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { vi } from "vitest"
import * as ApiKey from "../../src/policies/ApiKey.ts"
import * as BasicAuth from "../../src/policies/BasicAuth.ts"
import { exchange } from "../support/Policies.ts"
import { request } from "../support/Requests.ts"

const calls = vi.hoisted(() => ({ timingSafeEqual: 0 }))

vi.mock("node:crypto", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:crypto")>()
  return {
    ...actual,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
      calls.timingSafeEqual++
      return actual.timingSafeEqual(a, b)
    }
  }
})

const counted = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    calls.timingSafeEqual = 0
    const result = yield* effect
    return { result, comparisons: calls.timingSafeEqual }
  })

describe("constant-time comparisons", () => {
  it.effect("apiKey compares a presented key with every digest, first match, last match or none", () =>
    Effect.gen(function*() {
      const { send } = yield* exchange(ApiKey.policy, { mode: "strict", keys: [{ key: "k-one" }, { key: "k-two" }, { key: "k-three" }] })
      for (const [key, status] of [["k-one", 200], ["k-three", 200], ["k-nope", 401]] as const) {
        const { result, comparisons } = yield* counted(send(request({ headers: { authorization: `Bearer ${key}` } })))
        assert.strictEqual(result.response.status, status)
        assert.strictEqual(comparisons, 3, key)
      }
    }))

  it.effect("basicAuth compares {SHA} and MD5-crypt hashes with timingSafeEqual", () =>
    Effect.gen(function*() {
      const htpasswd = ["ann:$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0", "sha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="].join("\n")
      const { send } = yield* exchange(BasicAuth.policy, { htpasswd })
      const basic = (user: string, password: string) =>
        send(request({ headers: { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` } }))
      for (const [user, password, status] of [["ann", "secret", 200], ["ann", "wrong", 401], ["sha", "password", 200], ["sha", "wrong", 401]] as const) {
        const { result, comparisons } = yield* counted(basic(user, password))
        assert.strictEqual(result.response.status, status, `${user}:${password}`)
        assert.strictEqual(comparisons, 1, `${user}:${password}`)
      }
    }))
})
