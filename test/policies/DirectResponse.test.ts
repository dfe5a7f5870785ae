import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema, Scope } from "effect"
import * as DirectResponse from "../../src/policies/DirectResponse.ts"
import { buildEnv, run, upstream } from "../support/Policies.ts"

const decode = Schema.decodeUnknownSync(DirectResponse.Config)
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

  it.effect("bodyExpression and CEL headers: strings as is, other values as JSON; a failing header is omitted", () =>
    Effect.gen(function*() {
      const config = decode({
        status: 200,
        bodyExpression: '{"path": request.path, "n": 1}',
        headers: { "x-method": "request.method", "x-missing": 'request.headers["nope"]', "x-crlf": '"a\\nb"', "x-num": "1" }
      })
      const res = yield* run(DirectResponse.policy, config, upstream().handler, request({ path: "/p" }))
      assert.strictEqual(Buffer.from(res.body as Uint8Array).toString(), '{"path":"/p","n":1}')
      assert.strictEqual(res.headers["content-length"], "19")
      assert.strictEqual(res.headers["x-method"], "GET")
      assert.strictEqual(res.headers["x-missing"], undefined)
      assert.strictEqual(res.headers["x-crlf"], undefined)
      assert.strictEqual(res.headers["x-num"], undefined)
      const failing = yield* run(DirectResponse.policy, decode({ status: 500, bodyExpression: "fail()" }), upstream().handler, request())
      assert.strictEqual(Buffer.from(failing.body as Uint8Array).toString(), "")
      const str = yield* run(DirectResponse.policy, decode({ status: 200, bodyExpression: '"plain"', body: null }), upstream().handler, request())
      assert.strictEqual(Buffer.from(str.body as Uint8Array).toString(), "plain")
      const bytes = yield* run(DirectResponse.policy, decode({ status: 200, body: [104, 105] }), upstream().handler, request())
      assert.strictEqual(Buffer.from(bytes.body as Uint8Array).toString(), "hi")
    }))

  it.effect("conditional: first matching entry answers; none and no fallback forwards to the backend", () =>
    Effect.gen(function*() {
      const config = decode({
        conditional: [
          { condition: 'request.headers["x-fault"] == "abort"', status: 503, body: "injected fault" },
          { condition: 'request.path.startsWith("/teapot")', status: 418 }
        ]
      })
      const next = upstream()
      const aborted = yield* run(DirectResponse.policy, config, next.handler, request({ headers: { "x-fault": "abort" }, path: "/teapot" }))
      assert.strictEqual(aborted.status, 503)
      assert.strictEqual(Buffer.from(aborted.body as Uint8Array).toString(), "injected fault")
      assert.strictEqual((yield* run(DirectResponse.policy, config, next.handler, request({ path: "/teapot" }))).status, 418)
      const req = request({ path: "/other" })
      const forwarded = yield* run(DirectResponse.policy, config, next.handler, req)
      assert.strictEqual(forwarded.body, "upstream")
      assert.isFalse(req.directResponse)
      assert.strictEqual(next.calls.length, 1)
      const withFallback = decode({ conditional: [{ condition: "false", status: 500 }, { status: 204 }] })
      assert.strictEqual((yield* run(DirectResponse.policy, withFallback, next.handler, request())).status, 204)
    }))

  it("config errors name the field: a non-last entry without condition, body with bodyExpression, mixed forms, a bad header name", () => {
    assert.throws(() => decode({ conditional: [{ status: 200 }, { condition: "true", status: 503 }] }), /only the last entry may omit it[^]*\["conditional"\]\[0\]\["condition"\]/)
    assert.throws(() => decode({ status: 200, body: "a", bodyExpression: '"b"' }), /exclusive[^]*\["bodyExpression"\]/)
    assert.throws(() => decode({ status: 200, conditional: [] }), /conditional cannot be combined[^]*\["status"\]/)
    assert.throws(() => decode({ headers: { "x-a": '"1"' } }), /missing required field "status"/)
    assert.throws(() => decode({ status: 200, headers: { "bad name": '"1"' } }), /invalid header name "bad name"/)
  })

  it.effect("a bad CEL expression in a condition, a header or the body is a ConfigError at its path", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const make = (config: unknown) =>
        Effect.exit(Scope.provide(DirectResponse.policy.make(decode(config), buildEnv(), "r.policies.directResponse"), scope))
      assert.include(String(yield* make({ conditional: [{ condition: "1 +", status: 200 }] })), "r.policies.directResponse.conditional[0].condition: invalid CEL expression")
      assert.include(String(yield* make({ conditional: [{ condition: '"s"', status: 200 }] })), "must evaluate to bool")
      assert.include(String(yield* make({ status: 200, headers: { "x-a": "nope.x" } })), "r.policies.directResponse.headers.x-a: invalid CEL expression")
      assert.include(String(yield* make({ status: 200, bodyExpression: "(" })), "r.policies.directResponse.bodyExpression: invalid CEL expression")
    }))
})
