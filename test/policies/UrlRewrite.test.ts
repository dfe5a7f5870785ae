import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as RequestRedirect from "../../src/policies/RequestRedirect.ts"
import * as UrlRewrite from "../../src/policies/UrlRewrite.ts"
import { run, upstream } from "../support/Policies.ts"
import { requestForUrl } from "../support/Requests.ts"


/** Runs the rewrite and returns what the backend saw, as a URL plus the Host header. */
const rewrite = (config: UrlRewrite.Config, url: string, matchedPrefix: string | undefined) =>
  Effect.gen(function*() {
    const next = upstream()
    const res = yield* run(UrlRewrite.policy, config, next.handler, requestForUrl(url, matchedPrefix))
    assert.strictEqual(res.body, "upstream")
    const seen = next.calls[0]!
    return {
      url: `${seen.scheme}://${seen.authority}${seen.path}${seen.query}`,
      host: seen.headers["host"],
      authorityRewritten: seen.authorityRewritten
    }
  })

// Upstream's filters_test.rs `rewrite_test` table.
const cases: ReadonlyArray<readonly [string, UrlRewrite.Config, string, string | undefined, string]> = [
  ["no rewrite config", {}, "http://test.com/hello/world", "", "http://test.com/hello/world"],
  ["host", { authority: { host: "newhost.com" } }, "http://test.com/hello/world", "", "http://newhost.com/hello/world"],
  ["port", { authority: { port: 8080 } }, "http://test.com/hello/world", "", "http://test.com:8080/hello/world"],
  ["full path", { path: { full: "/new/path" } }, "http://test.com/hello/world", "", "http://test.com/new/path"],
  ["prefix path", { path: { prefix: "/v1" } }, "http://test.com/api/users/123", "/api", "http://test.com/v1/users/123"],
  [
    "host and prefix",
    { authority: { host: "newhost.com" }, path: { prefix: "/new" } },
    "http://test.com/old/api/users",
    "/old",
    "http://newhost.com/new/api/users"
  ],
  ["port 80 on https is not a default", { authority: { port: 80 } }, "https://test.com:443/hello/world", "", "https://test.com:80/hello/world"],
  ["port 443 on http is not a default", { authority: { port: 443 } }, "http://test.com:80/hello/world", "", "http://test.com:443/hello/world"],
  ["port 443 on https is omitted", { authority: { port: 443 } }, "https://test.com:8443/a", "", "https://test.com/a"],
  ["non-default port on https", { authority: { port: 8080 } }, "https://test.com:443/hello/world", "", "https://test.com:8080/hello/world"],
  ["query kept", {}, "http://test.com/hello/world?param1=value1&param2=value2", "", "http://test.com/hello/world?param1=value1&param2=value2"],
  ["prefix with query", { path: { prefix: "/v2" } }, "http://test.com/api/users?page=1&limit=10", "/api", "http://test.com/v2/users?page=1&limit=10"],
  ["prefix, path equal to the prefix", { path: { prefix: "/v1" } }, "http://test.com/api", "/api", "http://test.com/v1"],
  ["prefix with trailing slashes", { path: { prefix: "/v1/" } }, "http://test.com/api/users", "/api", "http://test.com/v1/users"],
  ["prefix with trailing slash, path equal to the prefix", { path: { prefix: "/v1/" } }, "http://test.com/api", "/api", "http://test.com/v1/"],
  ["prefix replaced by /", { path: { prefix: "/" } }, "http://test.com/api/users", "/api", "http://test.com/users"],
  ["prefix replaced by empty", { path: { prefix: "" } }, "http://test.com/api/users", "/api", "http://test.com/users"],
  ["host drops the request port", { authority: { host: "newhost.com" } }, "http://test.com:8080/hello/world", "", "http://newhost.com/hello/world"],
  ["host on https", { authority: { host: "newhost.com" } }, "https://test.com/hello/world", "", "https://newhost.com/hello/world"],
  ["full path keeps the query", { path: { full: "/new/path" } }, "http://test.com/hello/world?param1=value1&param2=value2", "", "http://test.com/new/path?param1=value1&param2=value2"],
  ["full authority without port", { authority: { full: "custom-host-header" } }, "http://test.com:3000/x", "", "http://custom-host-header/x"],
  ["full authority with port", { authority: { full: "backend.internal:9000" } }, "http://test.com/x", "", "http://backend.internal:9000/x"]
]

describe("urlRewrite", () => {
  for (const [name, config, url, matchedPrefix, expected] of cases) {
    it.effect(name, () =>
      Effect.gen(function*() {
        const seen = yield* rewrite(config, url, matchedPrefix)
        assert.strictEqual(seen.url, expected)
        assert.strictEqual(seen.host, expected.split("/")[2])
      }))
  }

  it.effect("an explicit authority, `none` included, disables the auto host rewrite; `auto` and no authority keep it", () =>
    Effect.gen(function*() {
      assert.isTrue((yield* rewrite({ authority: { host: "h" } }, "http://a/x", "")).authorityRewritten)
      assert.isTrue((yield* rewrite({ authority: "none" }, "http://a/x", "")).authorityRewritten)
      assert.isFalse((yield* rewrite({ authority: "auto" }, "http://a/x", "")).authorityRewritten)
      assert.isFalse((yield* rewrite({ path: { full: "/y" } }, "http://a/x", "")).authorityRewritten)
    }))

  it.effect("records the original URL once, and updates host for later policies", () =>
    Effect.gen(function*() {
      const next = upstream()
      const req = requestForUrl("http://Test.com:3000/api/x?q=1", "/api")
      yield* run(UrlRewrite.policy, { authority: { full: "NewHost:81" }, path: { prefix: "/v1" } }, next.handler, req)
      assert.deepStrictEqual(req.originalUrl, { authority: "Test.com:3000", host: "test.com", path: "/api/x", query: "?q=1" })
      assert.strictEqual(req.host, "newhost")
      assert.strictEqual(req.authority, "NewHost:81")
      assert.strictEqual(req.path, "/v1/x")
      assert.strictEqual(req.matchedPrefix, "/v1")
    }))

  it.effect("a prefix redirect after a prefix rewrite replaces the rewritten prefix", () =>
    Effect.gen(function*() {
      const req = requestForUrl("http://test.com/api/x", "/api")
      const redirect = upstream()
      const res = yield* run(
        UrlRewrite.policy,
        { path: { prefix: "/v1" } },
        Effect.suspend(() => run(RequestRedirect.policy, { path: { prefix: "/v2" } }, redirect.handler, req)),
        req
      )
      assert.strictEqual(res.headers["location"], "http://test.com/v2/x")
    }))

  it.effect("a prefix rewrite on a route matched by exact path or regex fails (500) and forwards nothing", () =>
    Effect.gen(function*() {
      const next = upstream()
      const exit = yield* Effect.exit(run(UrlRewrite.policy, { path: { prefix: "/v1" } }, next.handler, requestForUrl("http://a/exact", undefined)))
      assert.strictEqual(next.calls.length, 0)
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const reason = exit.cause.reasons[0]
        assert.isTrue(reason?._tag === "Fail" && reason.error.reason._tag === "Internal")
      }
    }))
})
