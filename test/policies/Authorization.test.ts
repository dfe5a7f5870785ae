import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Schema, Scope } from "effect"
import { IncomingMessage } from "node:http"
import { Socket } from "node:net"
import * as CelContext from "../../src/cel/Context.ts"
import * as Functions from "../../src/cel/Functions.ts"
import { loadIr } from "../../src/Gateway.ts"
import type * as Ir from "../../src/ir/Ir.ts"
import * as ProxyError from "../../src/pipeline/ProxyError.ts"
import { ProxyRequest } from "../../src/pipeline/RequestContext.ts"
import * as Authorization from "../../src/policies/Authorization.ts"
import * as Headers from "../../src/shared/headers.ts"
import { buildEnv, run, upstream } from "../support/Policies.ts"
import { request, type RequestSpec } from "../support/Requests.ts"

const denied = "403 authorization failed"

/** "200" when the stub upstream was reached, else the error's status and body. */
const outcomeOf = (config: Authorization.Config, req: ProxyRequest) =>
  Effect.gen(function*() {
    const next = upstream()
    const exit = yield* Effect.exit(run(Authorization.policy, config, next.handler, req))
    if (Exit.isSuccess(exit)) {
      assert.strictEqual(next.calls.length, 1)
      return `${exit.value.status}`
    }
    assert.strictEqual(next.calls.length, 0)
    const reason = exit.cause.reasons[0]
    if (reason?._tag !== "Fail") throw new Error("expected a ProxyError")
    assert.strictEqual(reason.error.reason._tag, "AuthorizationFailed")
    const response = ProxyError.toResponse(reason.error)
    return `${response.status} ${String(response.body)}`
  })

const outcome = (rules: Authorization.Config["rules"], spec: RequestSpec = {}) => outcomeOf({ rules }, request(spec))

const isGet = `request.method == "GET"`
const isPost = `request.method == "POST"`

/** The ConfigError message `make` fails with. */
const makeError = (config: unknown) =>
  Effect.gen(function*() {
    const decoded = Schema.decodeUnknownSync(Authorization.Config)(config)
    const scope = yield* Scope.make()
    const exit = yield* Effect.exit(Scope.provide(Authorization.policy.make(decoded, buildEnv(), "policies.authorization"), scope))
    if (Exit.isSuccess(exit)) throw new Error("expected a ConfigError")
    return String(exit.cause)
  })

describe("authorization decision", () => {
  it.effect("no rules allow", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome([]), "200")
    }))

  it.effect("a bare expression is an allow rule: with allow rules, a request no rule allows is denied", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome([isGet]), "200")
      assert.strictEqual(yield* outcome([isGet], { method: "POST" }), denied)
      assert.strictEqual(yield* outcome([{ allow: isGet }], { method: "POST" }), denied)
    }))

  it.effect("any true allow rule allows", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome([isPost, { allow: isGet }], { method: "GET" }), "200")
      assert.strictEqual(yield* outcome([isPost, { allow: isGet }], { method: "POST" }), "200")
      assert.strictEqual(yield* outcome([isPost, { allow: isGet }], { method: "PUT" }), denied)
    }))

  it.effect("deny rules only: a deny-list passes what it does not name", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome([{ deny: isPost }], { method: "GET" }), "200")
      assert.strictEqual(yield* outcome([{ deny: isPost }], { method: "POST" }), denied)
    }))

  it.effect("a true deny wins over a true allow", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome([{ allow: isGet }, { deny: `request.path.startsWith("/admin")` }], { path: "/admin/x" }), denied)
      assert.strictEqual(yield* outcome([{ allow: isGet }, { deny: `request.path.startsWith("/admin")` }], { path: "/public" }), "200")
    }))

  it.effect("every require rule must hold, whatever the allow rules say", () =>
    Effect.gen(function*() {
      const rules = [{ require: `request.headers["x-tenant"] == "a"` }, { allow: isGet }]
      assert.strictEqual(yield* outcome(rules, { headers: { "x-tenant": "a" } }), "200")
      assert.strictEqual(yield* outcome(rules, { headers: { "x-tenant": "b" } }), denied)
      assert.strictEqual(yield* outcome(rules, { method: "POST", headers: { "x-tenant": "a" } }), denied, "require holds, no allow")
      assert.strictEqual(yield* outcome([{ require: isGet }]), "200", "require only: allowed when it holds")
      assert.strictEqual(yield* outcome([{ require: isGet }, { require: `request.path == "/x"` }]), denied)
    }))

  it.effect("header and source address rules", () =>
    Effect.gen(function*() {
      const rules = [`request.headers["X-Env"] == "prod" && cidr("127.0.0.0/8").containsIP(source.address)`]
      assert.strictEqual(yield* outcome(rules, { headers: { "x-env": "prod" } }), "200")
      assert.strictEqual(yield* outcome(rules, { headers: { "x-env": "dev" } }), denied)
      const remote = new ProxyRequest(new IncomingMessage(new Socket()), "GET", "/", "", "example.com", "example.com", "http", "HTTP/1.1", { host: "example.com", "x-env": "prod" }, "10.1.2.3", 1234, 0)
      assert.strictEqual(yield* outcomeOf({ rules }, remote), denied)
    }))

  it.effect("claims attached by an earlier policy are visible", () =>
    Effect.gen(function*() {
      const req = request()
      CelContext.attach(req, "jwt", Functions.fromJson({ sub: "alice", groups: ["admin"] }))
      assert.strictEqual(yield* outcomeOf({ rules: [`jwt.sub == "alice" && "admin" in jwt.groups`] }, req), "200")
      assert.strictEqual(yield* outcomeOf({ rules: [`jwt.sub == "bob"`] }, req), denied)
    }))
})

describe("authorization errors", () => {
  // No JWT policy ran: `jwt` is absent, so every expression naming it errors.
  const noJwt = `has(jwt.sub)`

  it.effect("an erroring allow rule does not allow (as upstream)", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome([noJwt]), denied)
      assert.strictEqual(yield* outcome([{ allow: `request.headers["x-missing"] == "a"` }]), denied)
      assert.strictEqual(yield* outcome([noJwt, isGet]), "200", "another allow rule still allows")
    }))

  it.effect("an erroring deny rule DENIES (stricter than upstream, where it does not fire)", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome([{ deny: `jwt.sub == "mallory"` }]), denied)
      assert.strictEqual(yield* outcome([{ deny: `request.headers["x-block"] == "1"` }, { allow: isGet }]), denied)
      assert.strictEqual(yield* outcome([{ deny: `!${noJwt}` }]), denied, "negating an error is still an error")
      assert.strictEqual(yield* outcome([{ deny: `default(request.headers["x-block"], "") == "1"` }]), "200", "a defensive rule passes")
    }))

  it.effect("a deny rule with a non-boolean result denies; an allow rule with one does not allow", () =>
    Effect.gen(function*() {
      // Header values are `dyn`: the checker lets them through, the value is a string.
      assert.strictEqual(yield* outcome([{ deny: `request.headers["x-flag"]` }], { headers: { "x-flag": "no" } }), denied)
      assert.strictEqual(yield* outcome([{ allow: `request.headers["x-flag"]` }], { headers: { "x-flag": "yes" } }), denied)
    }))

  it.effect("an erroring require rule is not satisfied and denies", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* outcome([{ require: noJwt }, { allow: isGet }]), denied)
      assert.strictEqual(yield* outcome([{ require: `request.headers["x-tenant"] != ""` }]), denied)
    }))

  it.effect("a bad expression is a ConfigError naming the rule", () =>
    Effect.gen(function*() {
      const syntax = yield* makeError({ rules: [isGet, { deny: `request.method ==` }] })
      assert.include(syntax, "policies.authorization.rules[1].deny")
      assert.include(syntax, `invalid CEL expression "request.method =="`)
      const unknown = yield* makeError({ rules: [`requests.method == "GET"`] })
      assert.include(unknown, "policies.authorization.rules[0]")
      const notBool = yield* makeError({ rules: [{ require: `request.path` }] })
      assert.include(notBool, "policies.authorization.rules[0].require")
      assert.include(notBool, "must evaluate to bool, not string")
    }))

  it("decodes upstream's rule shapes and rejects others", () => {
    const decode = Schema.decodeUnknownExit(Authorization.Config)
    assert.strictEqual(decode({ rules: [isGet, { allow: isGet }, { deny: isGet }, { require: isGet }] })._tag, "Success")
    assert.strictEqual(decode({ rules: [] })._tag, "Success")
    assert.include(String(decode({ rules: [{ allow: isGet, deny: isGet }] })), "only one of allow, deny may be set")
    assert.include(String(decode({ rules: [{}] })), "expected exactly one of: allow, deny, require")
    assert.strictEqual(decode({ rules: [{ permit: isGet }] })._tag, "Failure")
    assert.strictEqual(decode({})._tag, "Failure")
  })
})

describe("authorization and the request body", () => {
  const withBody = (text: string): ProxyRequest => {
    const raw = new IncomingMessage(new Socket())
    raw.headers = { "content-length": String(Buffer.byteLength(text)) }
    raw.push(Buffer.from(text))
    raw.push(null)
    const headers = Headers.empty()
    headers["host"] = "example.com"
    const req = new ProxyRequest(raw, "POST", "/", "", "example.com", "example.com", "http", "HTTP/1.1", headers, "127.0.0.1", 1, 0)
    req.hasBody = true
    return req
  }

  it.effect("the body is buffered only when a rule reads request.body", () =>
    Effect.gen(function*() {
      const reads = withBody(`{"action":"read"}`)
      assert.strictEqual(yield* outcomeOf({ rules: [`json(request.body).action == "read"`] }, reads), "200")
      assert.strictEqual(reads.body._tag, "Buffered")
      assert.strictEqual(yield* outcomeOf({ rules: [`json(request.body).action == "read"`] }, withBody(`{"action":"write"}`)), denied)
      const untouched = withBody(`{"action":"read"}`)
      assert.strictEqual(yield* outcomeOf({ rules: [isPost] }, untouched), "200")
      assert.strictEqual(untouched.body._tag, "Stream")
    }))
})

describe("authorization rule sets accumulate across attachment points", () => {
  const ir = (yaml: string): Ir.Snapshot => Effect.runSync(loadIr(yaml, "config.yaml", () => undefined)).ir
  const denyPath = (p: string) => ({ deny: `request.path == "${p}"` })

  const snap = ir(`
binds:
- port: 3000
  listeners:
  - name: web
    policies:
      authorization: {rules: [{deny: 'request.path == "/listener-own"'}]}
    routes:
    - name: api
      policies:
        authorization: {rules: ['request.method == "GET"']}
      backends:
      - host: 127.0.0.1:8080
        policies:
          authorization: {rules: [{require: 'request.path != "/ref"'}]}
      - backend: named
backends:
- name: named
  host: 127.0.0.1:8081
  policies:
    authorization: {rules: [{deny: 'request.path == "/named-own"'}]}
policies:
- name: {name: listener-route-phase, namespace: default}
  target: {gateway: {gatewayName: default, gatewayNamespace: default, listenerName: web}}
  policy:
    authorization: {rules: [{deny: 'request.path == "/listener-targeted"'}]}
- name: {name: gateway-phase, namespace: default}
  phase: gateway
  target: {gateway: {gatewayName: default, gatewayNamespace: default}}
  policy:
    authorization: {rules: [{deny: 'request.path == "/gateway-targeted"'}]}
- name: {name: route-targeted, namespace: default}
  target: {route: {name: api, namespace: default}}
  policy:
    authorization: {rules: [{deny: 'request.path == "/route-targeted"'}]}
- name: {name: backend-targeted, namespace: default}
  target: {backend: {backend: {name: named, namespace: default}}}
  policy:
    authorization: {rules: [{deny: 'request.path == "/backend-targeted"'}]}
`)
  const listener = snap.binds[0]!.listeners[0]!
  const route = listener.routes[0]!

  it("gateway phase: the listener's own rules and gateway-targeted ones", () => {
    assert.deepStrictEqual(listener.policies.authorization, { rules: [denyPath("/gateway-targeted"), denyPath("/listener-own")] })
  })

  it("route phase: listener-targeted, route-targeted, then the route's own rules", () => {
    assert.deepStrictEqual(route.policies.authorization, {
      rules: [denyPath("/listener-targeted"), denyPath("/route-targeted"), `request.method == "GET"`]
    })
  })

  it("backend phase: the reference's own rules; the named backend's own and backend-targeted ones", () => {
    assert.deepStrictEqual(route.backends[0]!.policies.authorization, { rules: [{ require: `request.path != "/ref"` }] })
    assert.deepStrictEqual(route.backends[1]!.policies.authorization, { rules: [denyPath("/backend-targeted"), denyPath("/named-own")] })
  })

  it.effect("a deny merged in from the listener denies although the route's own rule allows", () =>
    Effect.gen(function*() {
      const merged = route.policies.authorization
      if (merged === undefined || merged === null) throw new Error("expected merged rules")
      assert.strictEqual(yield* outcomeOf(merged, request({ path: "/anything" })), "200")
      assert.strictEqual(yield* outcomeOf(merged, request({ path: "/listener-targeted" })), denied)
      assert.strictEqual(yield* outcomeOf(merged, request({ path: "/route-targeted" })), denied)
      assert.strictEqual(yield* outcomeOf(merged, request({ method: "POST", path: "/anything" })), denied, "the route's allow-list")
    }))
})
