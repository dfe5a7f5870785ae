import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as DirectResponse from "../../src/policies/DirectResponse.ts"
import { run, upstream } from "../support/Policies.ts"
import { request } from "../support/Requests.ts"

describe("directResponse", () => {
  it.effect("answers with status and body and never calls next", () =>
    Effect.gen(function*() {
      const next = upstream()
      const req = request()
      const res = yield* run(DirectResponse.policy, { status: 418, body: "short and stout" }, next.handler, req)
      assert.strictEqual(res.status, 418)
      assert.strictEqual(Buffer.from(res.body as Uint8Array).toString(), "short and stout")
      assert.strictEqual(res.headers["content-length"], "15")
      assert.strictEqual(next.calls.length, 0)
      assert.isTrue(req.directResponse)
    }))

  it.effect("without a body it answers an empty response", () =>
    Effect.gen(function*() {
      const res = yield* run(DirectResponse.policy, { status: 204 }, upstream().handler, request())
      assert.strictEqual(res.status, 204)
      assert.strictEqual(res.body, undefined)
    }))
})
