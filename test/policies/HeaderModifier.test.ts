import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as HeaderModifier from "../../src/policies/HeaderModifier.ts"
import { run, upstream } from "../support/Policies.ts"
import { request } from "../support/Requests.ts"

describe("requestHeaderModifier", () => {
  it.effect("adds (appending), sets (replacing), then removes", () =>
    Effect.gen(function*() {
      const next = upstream()
      const req = request({ headers: { "x-a": "1", "x-b": "old", "x-illegal-header": "bad", "x-keep": "k" } })
      yield* run(
        HeaderModifier.request,
        { add: { "X-A": "2", "x-new": "n" }, set: { "x-b": "new", "X-C": "c" }, remove: ["X-Illegal-Header"] },
        next.handler,
        req
      )
      assert.strictEqual(next.calls.length, 1)
      assert.deepStrictEqual(req.headers["x-a"], ["1", "2"])
      assert.strictEqual(req.headers["x-new"], "n")
      assert.strictEqual(req.headers["x-b"], "new")
      assert.strictEqual(req.headers["x-c"], "c")
      assert.strictEqual(req.headers["x-illegal-header"], undefined)
      assert.strictEqual(req.headers["x-keep"], "k")
    }))

  it.effect("remove wins over add and set of the same header", () =>
    Effect.gen(function*() {
      const req = request()
      yield* run(HeaderModifier.request, { add: { x: "1" }, set: { y: "2" }, remove: ["x", "y"] }, upstream().handler, req)
      assert.strictEqual(req.headers["x"], undefined)
      assert.strictEqual(req.headers["y"], undefined)
    }))
})

describe("responseHeaderModifier", () => {
  it.effect("edits the response headers of whatever next returns", () =>
    Effect.gen(function*() {
      const res = yield* run(
        HeaderModifier.response,
        { add: { "x-added": "a", "x-multi": "2" }, set: { "content-type": "application/json" }, remove: ["server"] },
        upstream({ "x-multi": "1", server: "upstream/1.0", "content-type": "text/plain" }).handler,
        request()
      )
      assert.strictEqual(res.headers["x-added"], "a")
      assert.deepStrictEqual(res.headers["x-multi"], ["1", "2"])
      assert.strictEqual(res.headers["content-type"], "application/json")
      assert.strictEqual(res.headers["server"], undefined)
    }))
})

describe("header modifier config", () => {
  const decode = Schema.decodeUnknownSync(HeaderModifier.Config)

  it("rejects an invalid header name in add, set and remove instead of dropping it", () => {
    assert.throws(() => decode({ add: { "bad name": "1" } }), /invalid header name "bad name"/)
    assert.throws(() => decode({ set: { "x-ok": "1", "a:b": "2" } }), /invalid header name "a:b"/)
    assert.throws(() => decode({ remove: ["white space"] }), /invalid header name "white space"/)
  })

  it("rejects CR/LF in values and keeps valid entries", () => {
    assert.throws(() => decode({ set: { "x-a": "1\r\nx-b: 2" } }), /CR, LF or NUL/)
    assert.deepStrictEqual(decode({ set: { "x-a": "1" }, add: { "x-b": "2" } }), { set: { "x-a": "1" }, add: { "x-b": "2" } })
  })
})
