import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as RequestRedirect from "../../src/policies/RequestRedirect.ts"
import { run, upstream } from "../support/Policies.ts"
import { requestForUrl } from "../support/Requests.ts"

/** A request for `url`, selected by a route whose match was `matchedPrefix` (undefined: exact/regex). */

const redirect = (config: RequestRedirect.Config, url: string, matchedPrefix: string | undefined) =>
  Effect.gen(function*() {
    const next = upstream()
    const req = requestForUrl(url, matchedPrefix)
    const res = yield* run(RequestRedirect.policy, config, next.handler, req)
    assert.strictEqual(next.calls.length, 0, "a redirect never calls the backend")
    assert.isTrue(req.directResponse)
    assert.strictEqual(res.body, undefined)
    assert.strictEqual(res.headers["content-length"], "0")
    return { status: res.status, location: res.headers["location"] }
  })

// Upstream's filters_test.rs `redirection_test` table, plus the prefix edge cases.
const cases: ReadonlyArray<readonly [string, RequestRedirect.Config, string, string | undefined, number, string]> = [
  ["no redirect config: the request URL", {}, "http://test.com/hello/world", "", 302, "http://test.com/hello/world"],
  ["scheme http → https", { scheme: "https" }, "http://test.com/hello/world", "", 302, "https://test.com/hello/world"],
  ["host", { authority: { host: "newhost.com" } }, "http://test.com/hello/world", "", 302, "http://newhost.com/hello/world"],
  ["host keeps the request port without a scheme", { authority: { host: "newhost.com" } }, "http://test.com:8080/a", "", 302, "http://newhost.com:8080/a"],
  ["host with a scheme drops the port", { scheme: "https", authority: { host: "newhost.com" } }, "http://test.com:8080/a", "", 302, "https://newhost.com/a"],
  ["full authority", { authority: { full: "newhost.com:8080" } }, "http://test.com/hello/world", "", 302, "http://newhost.com:8080/hello/world"],
  ["port", { authority: { port: 8080 } }, "http://test.com/hello/world", "", 302, "http://test.com:8080/hello/world"],
  ["full path", { path: { full: "/new/path" } }, "http://test.com/hello/world", "", 302, "http://test.com/new/path"],
  ["prefix path", { path: { prefix: "/v1" } }, "http://test.com/api/users/123", "/api", 302, "http://test.com/v1/users/123"],
  ["status override", { status: 301 }, "http://test.com/hello/world", "", 301, "http://test.com/hello/world"],
  [
    "combined",
    { scheme: "https", authority: { host: "newhost.com" }, path: { prefix: "/new" }, status: 308 },
    "http://test.com/old/api/users",
    "/old",
    308,
    "https://newhost.com/new/api/users"
  ],
  ["port 80 on http is omitted", { scheme: "http", authority: { port: 80 } }, "https://test.com:443/hello/world", "", 302, "http://test.com/hello/world"],
  ["port 443 on https is omitted", { scheme: "https", authority: { port: 443 } }, "http://test.com:80/hello/world", "", 302, "https://test.com/hello/world"],
  ["non-default port on http is kept", { scheme: "http", authority: { port: 8080 } }, "https://test.com:443/hello/world", "", 302, "http://test.com:8080/hello/world"],
  ["non-default port on https is kept", { scheme: "https", authority: { port: 8443 } }, "http://test.com:80/hello/world", "", 302, "https://test.com:8443/hello/world"],
  ["query kept", {}, "http://test.com/hello/world?param1=value1&param2=value2", "", 302, "http://test.com/hello/world?param1=value1&param2=value2"],
  ["prefix with query", { path: { prefix: "/v2" } }, "http://test.com/api/users?page=1&limit=10", "/api", 302, "http://test.com/v2/users?page=1&limit=10"],
  ["prefix, path equal to the prefix", { path: { prefix: "/v1" } }, "http://test.com/api", "/api", 302, "http://test.com/v1"],
  // `pathPrefix: /api/` is recorded as `/api` (Match.ts), so these are upstream's `/api/` cases.
  ["prefix with trailing slashes", { path: { prefix: "/v1/" } }, "http://test.com/api/users", "/api", 302, "http://test.com/v1/users"],
  ["prefix with trailing slash, path equal to the prefix", { path: { prefix: "/v1/" } }, "http://test.com/api", "/api", 302, "http://test.com/v1/"],
  ["prefix replaced by /", { path: { prefix: "/" } }, "http://test.com/api/users", "/api", 302, "http://test.com/users"],
  ["prefix replaced by empty", { path: { prefix: "" } }, "http://test.com/api/users", "/api", 302, "http://test.com/users"],
  ["prefix replaced by empty, nothing left", { path: { prefix: "" } }, "http://test.com/api", "/api", 302, "http://test.com/"],
  ["catch-all prefix `/`", { path: { prefix: "/v1" } }, "http://test.com/users", "", 302, "http://test.com/v1/users"],
  ["307", { status: 307 }, "http://test.com/hello/world", "", 307, "http://test.com/hello/world"],
  ["full path on an exact match", { path: { full: "/new-exact" } }, "http://test.com/exact", undefined, 302, "http://test.com/new-exact"],
  [
    "escaped query kept byte for byte",
    {},
    "http://test.com/hello/world?param1=value%201&param2=value%2B2&param3=value%3D3",
    "",
    302,
    "http://test.com/hello/world?param1=value%201&param2=value%2B2&param3=value%3D3"
  ],
  ["a default port in the request authority is dropped", {}, "http://test.com:80/a", "", 302, "http://test.com/a"],
  ["a non-default request port is kept", { path: { full: "/b" } }, "http://test.com:3000/a", "", 302, "http://test.com:3000/b"],
  ["auto keeps the authority", { authority: "auto" }, "http://test.com:3000/a", "", 302, "http://test.com:3000/a"],
  ["IPv6 authority with port", { authority: { port: 9000 } }, "http://[::1]:3000/a", "", 302, "http://[::1]:9000/a"]
]

describe("requestRedirect", () => {
  for (const [name, config, url, matchedPrefix, status, location] of cases) {
    it.effect(name, () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* redirect(config, url, matchedPrefix), { status, location })
      }))
  }

  it.effect("a prefix redirect on a route matched by exact path or regex fails with 500 internal error", () =>
    Effect.gen(function*() {
      const req = requestForUrl("http://test.com/exact", undefined)
      const exit = yield* Effect.exit(run(RequestRedirect.policy, { path: { prefix: "/v1" } }, upstream().handler, req))
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const error = exit.cause.reasons[0]
        assert.strictEqual(error?._tag, "Fail")
        if (error?._tag === "Fail") assert.strictEqual(error.error.reason._tag, "Internal")
      }
    }))
})
