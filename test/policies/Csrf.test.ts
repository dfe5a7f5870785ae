import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as ProxyError from "../../src/pipeline/ProxyError.ts"
import * as Csrf from "../../src/policies/Csrf.ts"
import { run, upstream } from "../support/Policies.ts"
import { request, type RequestSpec } from "../support/Requests.ts"

const config: Csrf.Config = { additionalOrigins: ["https://trusted.example", "http://LOCALHOST:8080"] }

/** The status the policy leads to: 200 from the stub upstream, or the error's status and body. */
const outcome = (spec: RequestSpec, c: Csrf.Config = config) =>
  Effect.gen(function*() {
    const next = upstream()
    const exit = yield* Effect.exit(run(Csrf.policy, c, next.handler, request({ host: "app.example", ...spec })))
    if (Exit.isSuccess(exit)) {
      assert.strictEqual(next.calls.length, 1)
      return `${exit.value.status}`
    }
    assert.strictEqual(next.calls.length, 0)
    const reason = exit.cause.reasons[0]
    if (reason?._tag !== "Fail") throw new Error("expected a ProxyError")
    const response = ProxyError.toResponse(reason.error)
    return `${response.status} ${String(response.body)}`
  })

const rejected = "403 CSRF validation failed"

describe("csrf", () => {
  it.effect("safe methods always pass, even cross-site", () =>
    Effect.gen(function*() {
      for (const method of ["GET", "HEAD", "OPTIONS"]) {
        assert.strictEqual(yield* outcome({ method, headers: { origin: "https://evil.example", "sec-fetch-site": "cross-site" } }), "200")
      }
    }))

  it.effect("Sec-Fetch-Site same-origin or none passes whatever the Origin", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome({ method: "POST", headers: { "sec-fetch-site": "same-origin", origin: "https://evil.example" } }), "200")
      assert.strictEqual(yield* outcome({ method: "DELETE", headers: { "sec-fetch-site": "none" } }), "200")
    }))

  it.effect("Sec-Fetch-Site cross-site or same-site is rejected unless Origin is trusted", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome({ method: "POST", headers: { "sec-fetch-site": "cross-site", origin: "https://evil.example" } }), rejected)
      assert.strictEqual(yield* outcome({ method: "PUT", headers: { "sec-fetch-site": "same-site", origin: "https://sub.app.example" } }), rejected)
      assert.strictEqual(yield* outcome({ method: "POST", headers: { "sec-fetch-site": "cross-site" } }), rejected)
      assert.strictEqual(yield* outcome({ method: "POST", headers: { "sec-fetch-site": "cross-site", origin: "https://trusted.example" } }), "200")
    }))

  it.effect("Sec-Fetch-Site wins over a same-origin Origin", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome({ method: "POST", headers: { "sec-fetch-site": "cross-site", origin: "http://app.example" } }), rejected)
    }))

  it.effect("without Sec-Fetch-Site: the request's own origin passes, others are rejected", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome({ method: "POST", headers: { origin: "http://app.example" } }), "200")
      assert.strictEqual(yield* outcome({ method: "POST", headers: { origin: "https://app.example" } }), rejected, "scheme differs")
      assert.strictEqual(yield* outcome({ method: "POST", headers: { origin: "http://app.example:8080" } }), rejected, "port differs")
      assert.strictEqual(yield* outcome({ method: "PATCH", headers: { origin: "https://evil.example" } }), rejected)
      assert.strictEqual(yield* outcome({ method: "POST", scheme: "https", host: "app.example", authority: "app.example:8443", headers: { origin: "https://app.example:8443" } }), "200")
    }))

  it.effect("origins compare as serialised: case-insensitive, default port equals no port", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome({ method: "POST", authority: "App.Example:80", headers: { origin: "http://app.example" } }), "200")
      assert.strictEqual(yield* outcome({ method: "POST", scheme: "https", authority: "app.example", headers: { origin: "https://app.example:443" } }), "200")
      assert.strictEqual(yield* outcome({ method: "POST", headers: { origin: "http://localhost:8080" } }), "200", "trusted, configured upper-case")
    }))

  it.effect("no Origin, or Origin: null, without Sec-Fetch-Site passes (non-browser clients), as upstream", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome({ method: "POST" }), "200")
      assert.strictEqual(yield* outcome({ method: "POST", headers: { origin: "null" } }), "200")
    }))

  it.effect("a malformed Origin is never same-origin", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome({ method: "POST", headers: { origin: "http://app.example/" } }), rejected)
      assert.strictEqual(yield* outcome({ method: "POST", headers: { origin: ["http://app.example", "https://evil.example"] } }), rejected)
    }))

  it.effect("trusted origins are only the configured ones", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome({ method: "POST", headers: { origin: "https://trusted.example" } }, {}), rejected)
      assert.strictEqual(yield* outcome({ method: "POST", headers: { origin: "https://trusted.example.evil" } }), rejected)
    }))
})
