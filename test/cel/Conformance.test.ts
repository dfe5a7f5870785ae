/**
 * A table of expressions and the values they evaluate to, against one representative request
 * (and its response). It holds every CEL expression of upstream's example configs
 * (`reference/agentgateway/examples/*`) and the function list of `cel-functions.md`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import * as Cel from "../../src/cel/Cel.ts"
import * as CelContext from "../../src/cel/Context.ts"
import * as Functions from "../../src/cel/Functions.ts"
import { ProxyResponse } from "../../src/pipeline/ProxyResponse.ts"
import * as Headers from "../../src/shared/headers.ts"
import { request } from "../support/Requests.ts"

const ctx = request({
  method: "GET",
  path: "/api/test",
  query: "?foo=bar&foo=baz",
  host: "example.com",
  headers: {
    "x-env": "prod",
    "x-chaos": "1",
    "x-forwarded-for": ["10.0.0.1, 10.0.0.2", "10.0.0.3"],
    "user-agent": "curl/8",
    authorization: "Bearer abc.def.ghi",
    cookie: "session=s3cr3t; theme=dark"
  }
})
ctx.bind = "bind/3000"
ctx.gateway = "default"
ctx.listener = "web"
ctx.route = { key: "default/api", name: "api", namespace: "default", ruleName: undefined, label: "default/api" }
ctx.backend = "/default/api/backend0"
CelContext.attach(ctx, "jwt", Functions.fromJson({ sub: "test-user", email: "me@example.com", nested: { key: "value" }, exp: 1900000000 }))
CelContext.attach(ctx, "mcp", { tool: { name: "echo", target: "everything" } })
CelContext.attach(ctx, "llmRequest", Functions.fromJson({ model: "anthropic/claude-3", max_tokens: 2000, metadata: {} }))
CelContext.attach(ctx, "extauthz", { githubUser: "octocat", githubEmail: "octo@example.com", tailscaleNode: "node-1", tailscaleEmail: "ts@example.com" })

const resHeaders = Headers.empty()
resHeaders["x-auth-request-user"] = "octocat"
resHeaders["x-auth-request-email"] = "octo@example.com"
resHeaders["set-cookie"] = ["a=1", "b=2"]
const res = new ProxyResponse(200, resHeaders, `{"Node":{"Name":"node-1"},"UserProfile":{"LoginName":"ts@example.com"}}`)
const activation = CelContext.forResponse(ctx, res)

/** `undefined` expected = the expression must evaluate to an error; a function = a predicate. */
type Expected = unknown

const ERROR = Symbol("error")

/** Every CEL expression in upstream's example configs, with the file it comes from. */
const upstreamExamples: ReadonlyArray<readonly [string, Expected]> = [
  // traffic-ratelimiting-global: descriptor values
  ["request.method", "GET"],
  ["request.path", "/api/test"],
  // traffic-spiffe: no client certificate on this request, so no SPIFFE id
  [`"Your SPIFFE ID is: " + source.spiffeId`, ERROR],
  // mcp-authorization
  [`mcp.tool.name == "echo"`, true],
  [`jwt.sub == "test-user" && mcp.tool.name == "get-sum"`, false],
  [`mcp.tool.name == "get-env" && jwt.nested.key == "value"`, false],
  // traffic-http
  [`cidr("127.0.0.1/8").containsIP(source.address)\n`, true],
  // llm-cost-routing
  [`default(llmRequest.metadata.cost_tier, "") == "economy" || (default(llmRequest.metadata.cost_tier, "") == "" && default(llmRequest.max_tokens, 1024) <= 1024)`, false],
  [`default(llmRequest.metadata.cost_tier, "") == "balanced" || (default(llmRequest.metadata.cost_tier, "") == "" && default(llmRequest.max_tokens, 1024) <= 4096)`, true],
  // fault-injection
  [`random() < 0.1 ? 2000 : 0`, (v: unknown) => v === 2000n || v === 0n],
  [`request.headers["x-chaos"] == "1" ? 500 : 0`, 500n],
  [`random() < 0.1`, (v: unknown) => typeof v === "boolean"],
  // traffic-unified-gateway
  [`jwt.email.endsWith("@example.com")`, true],
  [`llmRequest.model.stripPrefix("ollama/")`, "anthropic/claude-3"],
  // llm-basic
  [`llmRequest.model.stripPrefix("anthropic/")`, "claude-3"],
  // traffic-oauth2-proxy
  [`extauthz.githubUser`, "octocat"],
  [`extauthz.githubEmail`, "octo@example.com"],
  [`"/oauth2/auth"`, "/oauth2/auth"],
  [`"/oauth2/start?rd=" + request.path`, "/oauth2/start?rd=/api/test"],
  [`response.headers["x-auth-request-user"]`, "octocat"],
  [`response.headers["x-auth-request-email"]`, "octo@example.com"],
  [`request.host`, "example.com"],
  // traffic-tailscale-auth
  [`extauthz.tailscaleNode`, "node-1"],
  [`extauthz.tailscaleEmail`, "ts@example.com"],
  [`"/localapi/v0/whois?addr=" + source.address\n`, "/localapi/v0/whois?addr=127.0.0.1"],
  [`"local-tailscaled.sock"`, "local-tailscaled.sock"],
  [`json(response.body).Node.Name`, "node-1"],
  [`json(response.body).UserProfile.LoginName`, "ts@example.com"],
  // traffic-oidc
  [`jwt.sub`, "test-user"],
  [`jwt.email`, "me@example.com"],
  // traffic-egress-proxy (single-quoted string literal)
  [`'Hello from AgentGateway!'`, "Hello from AgentGateway!"],
  // traffic-a2a: the whole backend object, as logged
  [`toJson(backend)`, `{"name":"/default/api/backend0","type":"static","protocol":"http"}`]
]

const functions: ReadonlyArray<readonly [string, Expected]> = [
  // Context
  [`request.uri`, "http://example.com/api/test?foo=bar&foo=baz"],
  [`request.scheme`, "http"],
  [`request.pathAndQuery`, "/api/test?foo=bar&foo=baz"],
  [`request.version`, "HTTP/1.1"],
  [`request.startTime > timestamp("2000-01-01T00:00:00Z")`, true],
  [`source.port`, 1234n],
  [`source.subjectCn`, ERROR],
  [`response.code`, 200n],
  [`response.code >= 200 && response.code < 300`, true],
  [`proxy.bind`, "bind/3000"],
  [`proxy.gateway.name`, "default"],
  [`proxy.listener.name`, "web"],
  [`proxy.route.name + "/" + proxy.route.namespace`, "api/default"],
  [`proxy.route.rule`, ERROR],
  [`backend.name`, "/default/api/backend0"],
  [`backend.type == "static" && backend.protocol == "http"`, true],
  [`apiKey.key`, ERROR],
  [`basicAuth.username`, ERROR],
  [`jwt.exp`, 1900000000n],
  // Headers: a string for one value, a list for repeated ones; lower-case names
  [`request.headers["x-env"] == "prod"`, true],
  [`request.headers["X-Env"]`, "prod"],
  [`request.headers["x-forwarded-for"]`, ["10.0.0.1, 10.0.0.2", "10.0.0.3"]],
  [`request.headers["missing"]`, ERROR],
  [`"x-env" in request.headers`, true],
  [`has(request.headers.missing)`, false],
  [`request.method == "GET" && request.path.startsWith("/api") && request.headers["x-env"] == "prod"`, true],
  [`request.headers.join()["x-forwarded-for"]`, "10.0.0.1, 10.0.0.2,10.0.0.3"],
  [`request.headers.raw()["x-env"]`, ["prod"]],
  [`request.headers.split()["x-forwarded-for"]`, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]],
  [`request.headers.redacted().authorization`, "<redacted>"],
  [`request.headers.redacted().split()["authorization"]`, ["<redacted>"]],
  [`request.headers.cookie("session")`, "s3cr3t"],
  [`request.headers.cookie("nope")`, ERROR],
  [`response.headers.raw()["set-cookie"]`, ["a=1", "b=2"]],
  // Query accessors
  [`request.pathAndQuery.query("foo") == ["bar", "baz"]`, true],
  [`request.uri.query("zap")`, ERROR],
  [`request.pathAndQuery.addQuery("foo", "qux") == "/api/test?foo=bar&foo=baz&foo=qux"`, true],
  [`request.uri.setQuery("foo", "qux") == "http://example.com/api/test?foo=qux"`, true],
  // agentgateway functions
  [`json("{\\"a\\": 1, \\"b\\": [1.5, true, null]}")`, { a: 1n, b: [1.5, true, null] }],
  [`json(b"{\\"x\\": 42}").x`, 42n],
  [`toJson({"hello": "world"})`, `{"hello":"world"}`],
  [`toJson(request.headers.redacted()["authorization"])`, `"<redacted>"`],
  [`unvalidatedJwtPayload("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.sig").sub`, "u1"],
  [`json("{\\"field_a\\": 1, \\"field_b\\": 2}").with(b, b.field_a + b.field_b)`, 3n],
  [`{"a": 1, "b": 2}.mapValues(v, v * 2)`, { a: 2n, b: 4n }],
  [`{"a": 1, "b": 2}.filterKeys(k, k == "a")`, { a: 1n }],
  [`{"a": 2, "k": "v"}.merge({"a": 3})`, { a: 3n, k: "v" }],
  [`base64.encode("hello")`, "aGVsbG8="],
  [`string(base64.decode("aGVsbG8K"))`, "hello\n"],
  [`url.encode("hello world/?x=1")`, "hello%20world%2F%3Fx%3D1"],
  [`url.decode("hello%20world+x")`, "hello world+x"],
  [`form.decode("a=1&a=2")`, { a: ["1", "2"] }],
  [`form.decode("b=x+y")`, { b: "x y" }],
  [`form.encode({"scope": "openid profile"})`, "scope=openid+profile"],
  [`form.encode({"z": "1", "a": ["x", "y"], "n": null})`, "a=x&a=y&z=1"],
  [`sha1.encode("hello")`, "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"],
  [`sha256.encode("hello")`, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"],
  [`md5.encode(b"hello")`, "5d41402abc4b2a76b9719d911017c592"],
  [`random() >= 0.0 && random() <= 1.0`, true],
  [`uuid().matches("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")`, true],
  [`default(request.headers["missing-header"], "fallback")`, "fallback"],
  [`default(request.headers["x-env"], "fallback")`, "prod"],
  [`default(jwt.role, "user")`, "user"],
  [`default(json("{\\"a\\": null}").a, 7)`, 7n],
  [`default(1 / 0, 7)`, ERROR],
  [`coalesce(request.headers["x-id"], jwt.sub, "fallback")`, "test-user"],
  [`coalesce(1 / 0, "x")`, "x"],
  [`coalesce(json("{\\"a\\": null}").a, request.headers["x-id"])`, null],
  [`"/id/1234/data".regexReplace("/id/[0-9]*/", "/id/{id}/")`, "/id/{id}/data"],
  [`"a-1-2".regexReplace("(\\\\d)", "<$1>")`, "a-<1>-2"],
  [`fail()`, ERROR],
  [`fail("custom")`, ERROR],
  // Standard functions and macros
  [`[1, 2, 3].exists(x, x > 2) && [1, 2].all(x, x > 0) && [1, 2].exists_one(x, x == 1)`, true],
  [`[1, 2, 3].map(x, x * 2).filter(x, x > 2)`, [4n, 6n]],
  [`size("héllo") == 5 && "hello".contains("ell") && "abc".matches("^a")`, true],
  [`int("42") + 1`, 43n],
  [`duration("1m30s").getSeconds()`, 90n],
  [`max([3, 7, 5])`, 7n],
  // Strings extension
  [`"hello".charAt(1)`, "e"],
  [`"hello".indexOf("l")`, 2n],
  [`"hello".lastIndexOf("l")`, 3n],
  [`["a", "b"].join(",")`, "a,b"],
  [`"AbC".lowerAscii() + "AbC".upperAscii()`, "abcABC"],
  [`"  x  ".trim()`, "x"],
  [`"a.b.c".replace(".", "/")`, "a/b/c"],
  [`"a.b.c".replace(".", "/", 1)`, "a/b.c"],
  [`"a,b,c".split(",")`, ["a", "b", "c"]],
  [`"hello".substring(1, 3)`, "el"],
  [`"prefix/rest".stripPrefix("prefix/")`, "rest"],
  [`"file.json".stripSuffix(".json")`, "file"],
  // Math extension
  [`math.least(3, 1, 2)`, 1n],
  [`math.greatest(1.5, 2.5)`, 2.5],
  [`math.greatest([4, 9, 2])`, 9n],
  [`math.ceil(1.2) == 2.0 && math.floor(1.8) == 1.0 && math.trunc(-1.5) == -1.0`, true],
  [`math.round(-2.5)`, -3],
  [`math.abs(-5) == 5 && math.sign(-3) == -1`, true],
  [`math.isNaN(0.0 / 0.0) && math.isInf(1.0 / 0.0) && math.isFinite(1.0)`, true],
  [`math.sqrt(9)`, 3],
  [`math.bitAnd(6, 3) == 2 && math.bitOr(4, 1) == 5 && math.bitXor(6, 3) == 5 && math.bitNot(0) == -1`, true],
  [`math.bitShiftLeft(1, 4) == 16 && math.bitShiftRight(-1, 60) == 15`, true],
  // Kubernetes IP / CIDR
  [`isIP("10.1.2.3") && isIP("::1") && !isIP("10.01.2.3") && !isIP("::ffff:1.2.3.4") && !isIP("nope")`, true],
  [`ip("10.1.2.3").family() == 4 && ip("fe80::1").family() == 6`, true],
  [`ip("0.0.0.0").isUnspecified() && ip("127.0.0.1").isLoopback() && ip("::1").isLoopback()`, true],
  [`ip("224.0.0.1").isLinkLocalMulticast() && ip("169.254.1.1").isLinkLocalUnicast() && ip("fe80::1").isLinkLocalUnicast()`, true],
  [`ip("8.8.8.8").isGlobalUnicast() && !ip("127.0.0.1").isGlobalUnicast()`, true],
  [`ip("10.0.0.1") == ip("10.0.0.1") && string(ip("10.0.0.1")) == "10.0.0.1"`, true],
  [`cidr("10.0.0.0/8").containsIP("10.2.3.4") && !cidr("10.0.0.0/8").containsIP("11.0.0.1")`, true],
  [`cidr("10.0.0.0/8").containsIP(ip("10.2.3.4")) && !cidr("10.0.0.0/8").containsIP("::1")`, true],
  [`cidr("10.0.0.0/8").containsCIDR(cidr("10.1.0.0/16")) && !cidr("10.1.0.0/16").containsCIDR("10.0.0.0/8")`, true],
  [`cidr("2001:db8::/32").containsIP("2001:db8::1")`, true],
  [`string(cidr("10.1.2.3/8").masked()) == "10.0.0.0/8" && cidr("10.1.2.3/8").prefixLength() == 8 && string(cidr("10.1.2.3/8").ip()) == "10.1.2.3"`, true],
  [`string(cidr("2001:db8::1/32").masked())`, "2001:db8::/32"],
  [`cidr("10.0.0.0/33")`, ERROR],
  [`ip("not-an-ip")`, ERROR]
]

const check = (source: string, expected: Expected) =>
  Effect.gen(function*() {
    const program = yield* Cel.compile(source, "conformance")
    const result = program.eval(activation)
    if (expected === ERROR) {
      assert.isTrue(Result.isFailure(result), `${source} should fail, got ${Result.isSuccess(result) ? String(result.success) : ""}`)
      return
    }
    if (Result.isFailure(result)) return assert.fail(`${source} failed: ${result.failure.message}`)
    if (typeof expected === "function") assert.isTrue(expected(result.success), `${source} gave ${String(result.success)}`)
    else assert.deepStrictEqual(result.success, expected, source)
  })

describe("cel conformance", () => {
  describe("upstream example expressions", () => {
    for (const [source, expected] of upstreamExamples) it.effect(source.trim(), () => check(source, expected))
  })
  describe("functions and context", () => {
    for (const [source, expected] of functions) it.effect(source, () => check(source, expected))
  })
})
