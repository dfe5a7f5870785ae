import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Cors from "../../src/policies/Cors.ts"
import { run, upstream } from "../support/Policies.ts"
import { request } from "../support/Requests.ts"

const config: Cors.Config = {
  allowOrigins: ["https://app.example.com", "https://*.example.org"],
  allowMethods: ["GET", "POST"],
  allowHeaders: ["content-type", "x-custom"],
  exposeHeaders: ["x-trace"],
  allowCredentials: true,
  maxAge: "100s"
}

describe("cors", () => {
  it.effect("requests without Origin pass through untouched", () =>
    Effect.gen(function*() {
      const next = upstream()
      const req = request({ method: "OPTIONS" })
      const res = yield* run(Cors.policy, config, next.handler, req)
      assert.strictEqual(next.calls.length, 1)
      assert.strictEqual(res.body, "upstream")
      assert.strictEqual(req.queuedResponseHeaders, undefined)
    }))

  it.effect("an OPTIONS with an allowed Origin is a preflight answered here", () =>
    Effect.gen(function*() {
      const next = upstream()
      const res = yield* run(
        Cors.policy,
        config,
        next.handler,
        request({ method: "OPTIONS", headers: { origin: "https://app.example.com", "access-control-request-method": "POST" } })
      )
      assert.strictEqual(next.calls.length, 0)
      assert.strictEqual(res.status, 200)
      assert.strictEqual(res.headers["access-control-allow-origin"], "https://app.example.com")
      assert.strictEqual(res.headers["access-control-allow-methods"], "GET,POST")
      assert.strictEqual(res.headers["access-control-allow-headers"], "content-type,x-custom")
      assert.strictEqual(res.headers["access-control-allow-credentials"], "true")
      assert.strictEqual(res.headers["access-control-max-age"], "100")
      assert.strictEqual(res.headers["access-control-expose-headers"], "x-trace")
    }))

  it.effect("a preflight from a disallowed origin gets 200 without CORS headers", () =>
    Effect.gen(function*() {
      const next = upstream()
      const res = yield* run(Cors.policy, config, next.handler, request({ method: "OPTIONS", headers: { origin: "https://evil.example" } }))
      assert.strictEqual(next.calls.length, 0)
      assert.strictEqual(res.status, 200)
      assert.strictEqual(res.headers["access-control-allow-origin"], undefined)
    }))

  it.effect("allowed simple requests get headers queued for any response, including errors", () =>
    Effect.gen(function*() {
      const req = request({ headers: { origin: "https://a.b.example.org" } })
      yield* run(Cors.policy, config, upstream().handler, req)
      assert.deepStrictEqual(req.queuedResponseHeaders, [
        ["access-control-allow-origin", "https://a.b.example.org"],
        ["vary", "origin"],
        ["access-control-allow-credentials", "true"],
        ["access-control-expose-headers", "x-trace"]
      ])
    }))

  it.effect("disallowed simple requests pass through without CORS headers", () =>
    Effect.gen(function*() {
      const next = upstream()
      const req = request({ headers: { origin: "http://a.example.org" } })
      yield* run(Cors.policy, config, next.handler, req)
      assert.strictEqual(next.calls.length, 1)
      assert.strictEqual(req.queuedResponseHeaders, undefined)
    }))

  it.effect("`*` echoes the requested method and headers when credentials are allowed, else answers `*`", () =>
    Effect.gen(function*() {
      const headers = { origin: "https://x.test", "access-control-request-method": "PATCH", "access-control-request-headers": "x-a,x-b" }
      const withCreds = yield* run(
        Cors.policy,
        { allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"], allowCredentials: true },
        upstream().handler,
        request({ method: "OPTIONS", headers })
      )
      assert.strictEqual(withCreds.headers["access-control-allow-origin"], "https://x.test")
      assert.strictEqual(withCreds.headers["access-control-allow-methods"], "PATCH")
      assert.strictEqual(withCreds.headers["access-control-allow-headers"], "x-a,x-b")
      const without = yield* run(
        Cors.policy,
        { allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"] },
        upstream().handler,
        request({ method: "OPTIONS", headers })
      )
      assert.strictEqual(without.headers["access-control-allow-methods"], "*")
      assert.strictEqual(without.headers["access-control-allow-headers"], "*")
      assert.strictEqual(without.headers["access-control-allow-credentials"], undefined)
    }))

  it("wildcard origins need the same scheme and any sub-domain depth, not the bare domain", () => {
    const c = Cors.compile({ allowOrigins: ["https://*.example.com"] })
    assert.isTrue(c.allows("https://a.example.com"))
    assert.isTrue(c.allows("https://a.b.example.com"))
    assert.isFalse(c.allows("https://example.com"))
    assert.isFalse(c.allows("http://a.example.com"))
    assert.isFalse(c.allows("https://a.example.com.evil.net"))
    assert.isFalse(c.allows("https://evilexample.com"))
  })
})
