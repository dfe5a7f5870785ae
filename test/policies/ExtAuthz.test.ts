/**
 * `extAuthz` without sockets: the Envoy messages (checked against field numbers written here by
 * hand, not only against our own decoder), the config shape, and the HTTP protocol mode over a
 * stub side-service (`BuildEnv.backendCall` answers with a handler): allow, denial passed to the
 * client, redirect, failure modes, forwarded headers, and the decision cache on virtual time.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Schema, Scope } from "effect"
import { TestClock } from "effect/testing"
import type { Handler, Middleware } from "../../src/pipeline/Policy.ts"
import * as ProxyError from "../../src/pipeline/ProxyError.ts"
import { ProxyResponse } from "../../src/pipeline/ProxyResponse.ts"
import { type ProxyRequest, RequestContext } from "../../src/pipeline/RequestContext.ts"
import * as ExtAuthz from "../../src/policies/ExtAuthz.ts"
import * as Headers from "../../src/shared/headers.ts"
import * as Proto from "../../src/sidecar/ExtAuthzProto.ts"
import { rawAt, rawFields } from "../support/ExtAuthzPeers.ts"
import { buildEnv, upstream } from "../support/Policies.ts"
import { request } from "../support/Requests.ts"

const text = (b: Uint8Array | bigint | undefined) => (b instanceof Uint8Array ? Buffer.from(b).toString("utf8") : String(b))

describe("ExtAuthzProto", () => {
  const sample: Proto.CheckRequest = {
    source: { address: { address: "10.1.2.3", port: 5555 } },
    destination: { address: { address: "127.0.0.1", port: 8080 } },
    timeMs: 1_700_000_000_250,
    http: {
      id: "req-1",
      method: "POST",
      headers: [["x-user", "alice"], [":path", "/a?b=1"]],
      path: "/a?b=1",
      host: "api.example.com",
      scheme: "https",
      size: 11,
      protocol: "HTTP/1.1",
      body: "hello world",
      rawBody: new Uint8Array(0)
    },
    contextExtensions: [["tenant", "t1"]],
    metadata: [["envoy.filters.http.jwt_authn", { jwt_payload: { sub: "alice", n: 3, ok: true, l: ["a", null] } }]],
    sni: "api.example.com"
  }

  it("CheckRequest bytes carry Envoy's field numbers (walked by a separate decoder)", () => {
    const bytes = Proto.encodeCheckRequest(sample)
    // CheckRequest.attributes = 1 → AttributeContext.request = 4 → Request.http = 2 → HttpRequest.method = 2
    assert.strictEqual(text(rawAt(bytes, [1, 4, 2, 2])[0]), "POST")
    assert.strictEqual(text(rawAt(bytes, [1, 4, 2, 4])[0]), "/a?b=1") // path
    assert.strictEqual(text(rawAt(bytes, [1, 4, 2, 5])[0]), "api.example.com") // host
    assert.strictEqual(text(rawAt(bytes, [1, 4, 2, 6])[0]), "https") // scheme
    assert.strictEqual(rawAt(bytes, [1, 4, 2, 9])[0], 11n) // size (int64 varint)
    assert.strictEqual(text(rawAt(bytes, [1, 4, 2, 10])[0]), "HTTP/1.1") // protocol
    assert.strictEqual(text(rawAt(bytes, [1, 4, 2, 11])[0]), "hello world") // body
    // headers = 3: map entries {key = 1, value = 2}
    const entries = rawAt(bytes, [1, 4, 2, 3]).map((e) => e instanceof Uint8Array ? rawFields(e) : new Map())
    assert.deepStrictEqual(entries.map((m) => [text(m.get(1)?.[0]), text(m.get(2)?.[0])]), [["x-user", "alice"], [":path", "/a?b=1"]])
    // Request.time = 1 → Timestamp {seconds = 1, nanos = 2}
    assert.strictEqual(rawAt(bytes, [1, 4, 1, 1])[0], 1_700_000_000n)
    assert.strictEqual(rawAt(bytes, [1, 4, 1, 2])[0], 250_000_000n)
    // source = 1 → Peer.address = 1 → Address.socket_address = 1 → {address = 2, port_value = 3}
    assert.strictEqual(text(rawAt(bytes, [1, 1, 1, 1, 2])[0]), "10.1.2.3")
    assert.strictEqual(rawAt(bytes, [1, 1, 1, 1, 3])[0], 5555n)
    assert.strictEqual(rawAt(bytes, [1, 2, 1, 1, 3])[0], 8080n) // destination = 2
    // context_extensions = 10 (map), tls_session = 12 → sni = 1
    assert.strictEqual(text(rawAt(bytes, [1, 10, 1])[0]), "tenant")
    assert.strictEqual(text(rawAt(bytes, [1, 10, 2])[0]), "t1")
    assert.strictEqual(text(rawAt(bytes, [1, 12, 1])[0]), "api.example.com")
    // metadata_context = 11 → filter_metadata = 1 (map<string, Struct>) → value = 2 → Struct.fields = 1
    assert.strictEqual(text(rawAt(bytes, [1, 11, 1, 1])[0]), "envoy.filters.http.jwt_authn")
    assert.strictEqual(text(rawAt(bytes, [1, 11, 1, 2, 1, 1])[0]), "jwt_payload")
    // Value.struct_value = 5 → fields = 1 → {key "sub", value Value.string_value = 3}
    const inner = rawAt(bytes, [1, 11, 1, 2, 1, 2, 5, 1]).map((e) => e instanceof Uint8Array ? rawFields(e) : new Map())
    const sub = inner.find((m) => text(m.get(1)?.[0]) === "sub")
    assert.strictEqual(text(rawAt(sub?.get(2)?.[0] instanceof Uint8Array ? sub.get(2)![0] as Uint8Array : new Uint8Array(), [3])[0]), "alice")
  })

  it("CheckRequest round-trips through the peer-side decoder", () => {
    const back = Proto.decodeCheckRequest(Proto.encodeCheckRequest(sample))
    assert.strictEqual(back.http.method, "POST")
    assert.deepStrictEqual(back.http.headers, sample.http.headers)
    assert.strictEqual(back.http.size, 11)
    assert.deepStrictEqual(back.contextExtensions, [["tenant", "t1"]])
    assert.deepStrictEqual(JSON.parse(JSON.stringify(back.metadata)), [["envoy.filters.http.jwt_authn", { jwt_payload: { sub: "alice", n: 3, ok: true, l: ["a", null] } }]])
    assert.deepStrictEqual(back.source?.address, { address: "10.1.2.3", port: 5555 })
    assert.strictEqual(back.timeMs, 1_700_000_000_250)
  })

  /** Bytes of a CheckResponse written field by field here, without our encoder. */
  const handWritten = (): Uint8Array => {
    const ld = (field: number, body: Array<number>) => [(field << 3) | 2, body.length, ...body]
    const vi = (field: number, n: number) => [(field << 3) | 0, n]
    const s = (field: number, str: string) => ld(field, [...Buffer.from(str)])
    const headerOption = ld(2, [...ld(1, [...s(1, "x-why"), ...s(2, "nope")]), ...vi(3, 2)])
    // status = 1 {code = 7}; denied_response = 2 {status = 1 {code = 1 = 401}, headers = 2, body = 3}
    return Uint8Array.from([...ld(1, vi(1, 7)), ...ld(2, [...ld(1, vi(1, 401 & 0x7f | 0x80).concat([401 >> 7])), ...headerOption.slice(0), ...s(3, "denied!")])])
  }

  it("decodes a CheckResponse written with hand-typed field numbers", () => {
    const bytes = handWritten()
    const r = Proto.decodeCheckResponse(bytes)
    assert.strictEqual(r.code, 7)
    assert.strictEqual(r.denied?.status, 401)
    assert.strictEqual(r.denied?.body, "denied!")
    assert.deepStrictEqual(r.denied?.headers, [{ key: "x-why", value: "nope", append: undefined, appendAction: 2 }])
  })

  it("CheckResponse round-trips, dynamic metadata included; malformed bytes throw", () => {
    const response: Proto.CheckResponse = {
      code: 0,
      ok: {
        headers: [{ key: "x-user", value: "alice", appendAction: 0 }],
        headersToRemove: ["authorization"],
        queryParametersToSet: [{ key: "a", value: "1" }],
        queryParametersToRemove: ["b"],
        responseHeadersToAdd: [{ key: "x-resp", value: "r", appendAction: 0, append: true }]
      },
      dynamicMetadata: { user: "alice", groups: ["a", "b"], depth: { n: 1.5 } }
    }
    const back = Proto.decodeCheckResponse(Proto.encodeCheckResponse(response))
    assert.deepStrictEqual(back.ok?.headersToRemove, ["authorization"])
    assert.deepStrictEqual(back.ok?.queryParametersToSet, [{ key: "a", value: "1" }])
    assert.strictEqual(back.ok?.responseHeadersToAdd[0]?.append, true)
    assert.deepStrictEqual(JSON.parse(JSON.stringify(back.dynamicMetadata)), { user: "alice", groups: ["a", "b"], depth: { n: 1.5 } })
    // ok_response = 3 → headers = 2 → HeaderOption.header = 1 → HeaderValue.raw_value = 3
    assert.strictEqual(text(rawAt(Proto.encodeCheckResponse(response), [3, 2, 1, 3])[0]), "alice")
    assert.throws(() => Proto.decodeCheckResponse(Uint8Array.from([0x12, 0x7f, 0x01])))
  })

  it("drops Struct nesting deeper than MAX_STRUCT_DEPTH instead of recursing without bound", () => {
    let v: Proto.Json = "leaf"
    for (let i = 0; i < Proto.MAX_STRUCT_DEPTH + 5; i++) v = { k: v }
    const back = Proto.decodeCheckResponse(Proto.encodeCheckResponse({ code: 0, dynamicMetadata: { root: v } }))
    let depth = 0
    let cur: unknown = back.dynamicMetadata?.["root"]
    while (cur !== null && typeof cur === "object" && "k" in cur) {
      cur = cur.k
      depth++
    }
    assert.isTrue(depth < Proto.MAX_STRUCT_DEPTH + 5)
  })
})

describe("extAuthz config", () => {
  const decode = Schema.decodeUnknownExit(ExtAuthz.Config)
  it("accepts upstream's shapes", () => {
    assert.isTrue(Exit.isSuccess(decode({ host: "127.0.0.1:9000" })))
    assert.isTrue(Exit.isSuccess(decode({ backend: "authz", protocol: { grpc: { context: { a: "b" }, metadata: { m: "{\"x\": 1}" } } }, failureMode: "allow" })))
    assert.isTrue(Exit.isSuccess(decode({
      host: "authz:80",
      protocol: { http: { path: '"/check"', redirect: '"https://login"', includeResponseHeaders: ["x-user"], addRequestHeaders: { "x-a": '"1"' }, metadata: { u: "response.code" } } },
      failureMode: { denyWithStatus: 503 },
      includeRequestHeaders: ["authorization", ":path"],
      includeRequestBody: { maxRequestBytes: 1024, allowPartialMessage: true, packAsBytes: true },
      cache: { key: ["request.headers.authorization"], ttl: "5m", maxEntries: 10 }
    })))
    assert.isTrue(Exit.isSuccess(decode({ conditional: [{ condition: "true", host: "a:1" }, { host: "b:1" }] })))
  })
  it("rejects no target, two targets, conditional mixed with fields, bad failureMode, service", () => {
    assert.isTrue(Exit.isFailure(decode({})))
    assert.isTrue(Exit.isFailure(decode({ host: "a:1", backend: "b" })))
    assert.isTrue(Exit.isFailure(decode({ host: "a:1", conditional: [{ host: "b:1" }] })))
    assert.isTrue(Exit.isFailure(decode({ host: "a:1", failureMode: "maybe" })))
    assert.isTrue(Exit.isFailure(decode({ service: { name: "x", port: 1 } })))
    assert.isTrue(Exit.isFailure(decode({ host: "a:1", protocol: { grpc: {}, http: {} } })))
    assert.isTrue(Exit.isFailure(decode({ host: "a:1", includeRequestHeaders: ["bad header"] })))
  })
})

// ---------------------------------------------------------------------------------------------
// HTTP protocol over a stub side-service
// ---------------------------------------------------------------------------------------------

/** A stub authorization service: records the requests it got and answers with `answer`. */
const stubService = (answer: (check: ProxyRequest) => Effect.Effect<ProxyResponse, ProxyError.ProxyError>) => {
  const calls: Array<ProxyRequest> = []
  const handler: Handler = Effect.flatMap(Effect.service(RequestContext), (check) => {
    calls.push(check)
    return answer(check)
  })
  return { handler, calls }
}

const answer = (status: number, headers: Record<string, string> = {}, body = "") => {
  const h = Headers.empty()
  for (const [k, v] of Object.entries(headers)) h[k] = v
  return Effect.succeed(new ProxyResponse(status, h, body))
}

const build = (config: ExtAuthz.Config, backend: Handler) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const middleware: Middleware = yield* Effect.orDie(Scope.provide(ExtAuthz.policy.make(config, buildEnv(backend), "policies.extAuthz"), scope))
    return middleware
  })

/** One request through the middleware: the client's answer (errors mapped) and what `next` saw. */
const run = (middleware: Middleware, req: ProxyRequest) =>
  Effect.gen(function*() {
    const next = upstream()
    const exit = yield* Effect.exit(Effect.provideService(middleware(next.handler), RequestContext, req))
    const response = Exit.isSuccess(exit)
      ? exit.value
      : ProxyError.toResponse(exit.cause.reasons[0]?._tag === "Fail" ? exit.cause.reasons[0].error : ProxyError.make({ _tag: "Internal", cause: exit.cause }))
    return { response, forwarded: next.calls[0] }
  })

const http = (extra: Partial<ExtAuthz.Config> = {}, protocol: Record<string, unknown> = {}): ExtAuthz.Config => ({
  host: "127.0.0.1:9001",
  protocol: { http: protocol },
  ...extra
})

describe("extAuthz (http protocol)", () => {
  it.effect("2xx allows: the request's method, path and authorization go to the service; includeResponseHeaders come back", () =>
    Effect.gen(function*() {
      const svc = stubService(() => answer(200, { "x-user": "alice", "x-other": "no" }))
      const mw = yield* build(http({}, { includeResponseHeaders: ["x-user"] }), svc.handler)
      const { response, forwarded } = yield* run(mw, request({ method: "DELETE", path: "/items/7", query: "?x=1", headers: { authorization: "Bearer t", cookie: "c=1", "x-user": "forged" } }))
      assert.strictEqual(response.status, 200)
      assert.strictEqual(response.body, "upstream")
      assert.strictEqual(forwarded?.headers["x-user"], "alice")
      assert.isUndefined(forwarded?.headers["x-other"])
      const check = svc.calls[0]!
      assert.strictEqual(check.method, "DELETE")
      assert.strictEqual(check.pathAndQuery, "/items/7?x=1")
      assert.strictEqual(check.headers["authorization"], "Bearer t")
      assert.isUndefined(check.headers["cookie"])
      assert.strictEqual(check.headers["host"], "127.0.0.1:9001")
    }))

  it.effect("a non-2xx answer is the client's answer: status, headers and body as the service gave them", () =>
    Effect.gen(function*() {
      const svc = stubService(() => answer(401, { "www-authenticate": "Bearer realm=\"x\"", "content-type": "application/json" }, "{\"error\":\"who\"}"))
      const mw = yield* build(http(), svc.handler)
      const { response, forwarded } = yield* run(mw, request())
      assert.isUndefined(forwarded)
      assert.strictEqual(response.status, 401)
      assert.strictEqual(response.headers["www-authenticate"], "Bearer realm=\"x\"")
      assert.strictEqual(Buffer.from(response.body instanceof Uint8Array ? response.body : new Uint8Array()).toString(), "{\"error\":\"who\"}")
    }))

  it.effect("redirect (CEL) answers 401/403 with a 302 to that location", () =>
    Effect.gen(function*() {
      const svc = stubService(() => answer(403))
      const mw = yield* build(http({}, { redirect: '"https://login.example.com/?next=" + request.path' }), svc.handler)
      const { response } = yield* run(mw, request({ path: "/app" }))
      assert.strictEqual(response.status, 302)
      assert.strictEqual(response.headers["location"], "https://login.example.com/?next=/app")
    }))

  it.effect("path, body and addRequestHeaders are CEL; includeRequestHeaders replaces the default", () =>
    Effect.gen(function*() {
      const svc = stubService(() => answer(204))
      const mw = yield* build(
        http({ includeRequestHeaders: ["x-tenant", ":method"] }, { path: '"/authz" + request.path', body: '{"m": request.method}', addRequestHeaders: { "x-from": '"gw"', "x-bad": "1 + 1" } }),
        svc.handler
      )
      const { response } = yield* run(mw, request({ method: "PUT", path: "/p", headers: { authorization: "secret", "x-tenant": "t9" } }))
      assert.strictEqual(response.status, 200)
      const check = svc.calls[0]!
      assert.strictEqual(check.path, "/authz/p")
      assert.strictEqual(check.method, "PUT")
      assert.strictEqual(check.headers["x-tenant"], "t9")
      assert.strictEqual(check.headers["x-from"], "gw")
      assert.isUndefined(check.headers["x-bad"])
      assert.isUndefined(check.headers["authorization"])
      assert.strictEqual(check.body._tag === "Buffered" ? Buffer.from(check.body.bytes).toString() : "", "{\"m\":\"PUT\"}")
      assert.strictEqual(check.headers["content-length"], "11")
    }))

  it.effect("a path expression that fails denies with 403 external authorization failed (not the failureMode)", () =>
    Effect.gen(function*() {
      const svc = stubService(() => answer(200))
      const mw = yield* build(http({ failureMode: "allow" }, { path: 'request.headers["missing"]' }), svc.handler)
      const { response } = yield* run(mw, request())
      assert.strictEqual(response.status, 403)
      assert.strictEqual(response.body, "external authorization failed")
      assert.strictEqual(svc.calls.length, 0)
    }))

  it.effect("metadata (CEL over the service's response) becomes extauthz.*", () =>
    Effect.gen(function*() {
      const svc = stubService(() => answer(200, { "x-user": "bob" }, "{\"role\":\"admin\"}"))
      const mw = yield* build(http({}, { metadata: { user: 'response.headers["x-user"]', role: "json(response.body).role", code: "response.code" } }), svc.handler)
      const { forwarded } = yield* run(mw, request())
      const ext = forwarded?.celExtensions?.extauthz
      assert.deepStrictEqual(JSON.parse(JSON.stringify(ext, (_k, v: unknown) => typeof v === "bigint" ? Number(v) : v)), { user: "bob", role: "admin", code: 200 })
    }))

  describe("no decision", () => {
    const down = () => stubService(() => Effect.fail(ProxyError.make({ _tag: "UpstreamFailed", cause: new Error("ECONNREFUSED 10.0.0.1") })))
    it.effect("deny (default): 403 external authorization failed, no upstream detail", () =>
      Effect.gen(function*() {
        const { response, forwarded } = yield* run(yield* build(http(), down().handler), request())
        assert.isUndefined(forwarded)
        assert.strictEqual(response.status, 403)
        assert.strictEqual(response.body, "external authorization failed")
      }))
    it.effect("allow: the request goes on", () =>
      Effect.gen(function*() {
        const { response, forwarded } = yield* run(yield* build(http({ failureMode: "allow" }), down().handler), request())
        assert.strictEqual(response.status, 200)
        assert.isDefined(forwarded)
      }))
    it.effect("denyWithStatus: that status, Authorization service unavailable; an invalid status is 403", () =>
      Effect.gen(function*() {
        const a = yield* run(yield* build(http({ failureMode: { denyWithStatus: 503 } }), down().handler), request())
        assert.strictEqual(a.response.status, 503)
        assert.strictEqual(a.response.body, "Authorization service unavailable")
        const b = yield* run(yield* build(http({ failureMode: { denyWithStatus: 42 } }), down().handler), request())
        assert.strictEqual(b.response.status, 403)
      }))
    it.effect("a service that never answers is cut at EXT_AUTHZ_TIMEOUT_MS", () =>
      Effect.gen(function*() {
        const svc = stubService(() => Effect.never)
        const mw = yield* build(http({ failureMode: { denyWithStatus: 504 } }), svc.handler)
        const fiber = yield* Effect.forkChild(run(mw, request()))
        yield* TestClock.adjust(`${ExtAuthz.EXT_AUTHZ_TIMEOUT_MS} millis`)
        const { response } = yield* Fiber.join(fiber)
        assert.strictEqual(response.status, 504)
        assert.strictEqual(response.body, "Authorization service unavailable")
      }))
  })

  it.effect("cache: equal keys reuse the decision until the ttl; other keys and errors call the service", () =>
    Effect.gen(function*() {
      const svc = stubService((check) => answer(check.headers["authorization"] === "good" ? 200 : 403, {}, "no"))
      const mw = yield* build(http({ cache: { key: ['request.headers["authorization"]'], ttl: "10s" } }), svc.handler)
      const good = () => request({ headers: { authorization: "good" } })
      assert.strictEqual((yield* run(mw, good())).response.status, 200)
      assert.strictEqual((yield* run(mw, good())).response.status, 200)
      assert.strictEqual(svc.calls.length, 1)
      // A 403 is cached too (upstream caches 401/403 answers).
      const bad = () => request({ headers: { authorization: "bad" } })
      assert.strictEqual((yield* run(mw, bad())).response.status, 403)
      assert.strictEqual((yield* run(mw, bad())).response.status, 403)
      assert.strictEqual(svc.calls.length, 2)
      // A key expression that errors is a miss every time.
      yield* run(mw, request())
      yield* run(mw, request())
      assert.strictEqual(svc.calls.length, 4)
      // Past the ttl the service is asked again.
      yield* TestClock.adjust("10001 millis")
      assert.strictEqual((yield* run(mw, good())).response.status, 200)
      assert.strictEqual(svc.calls.length, 5)
    }))

  it.effect("cache: in the refresh window one request asks again while the entry still serves", () =>
    Effect.gen(function*() {
      const svc = stubService(() => answer(200))
      const mw = yield* build(http({ cache: { key: ["request.path"], ttl: "duration(\"100s\")" } }), svc.handler)
      yield* run(mw, request())
      yield* TestClock.adjust("96 seconds") // last 5 s of 100 s
      yield* run(mw, request())
      assert.strictEqual(svc.calls.length, 2)
      yield* run(mw, request())
      assert.strictEqual(svc.calls.length, 2)
    }))

  it.effect("cache: a 500 from the service is passed on but not cached", () =>
    Effect.gen(function*() {
      const svc = stubService(() => answer(500, {}, "boom"))
      const mw = yield* build(http({ cache: { key: ["request.path"], ttl: "1m" } }), svc.handler)
      assert.strictEqual((yield* run(mw, request())).response.status, 500)
      assert.strictEqual((yield* run(mw, request())).response.status, 500)
      assert.strictEqual(svc.calls.length, 2)
    }))

  it.effect("conditional: the first entry whose condition holds checks; no match skips the check", () =>
    Effect.gen(function*() {
      const svc = stubService(() => answer(403))
      const mw = yield* build({ conditional: [{ condition: 'request.path.startsWith("/admin")', host: "127.0.0.1:9001", protocol: { http: {} } }] }, svc.handler)
      assert.strictEqual((yield* run(mw, request({ path: "/admin/x" }))).response.status, 403)
      assert.strictEqual((yield* run(mw, request({ path: "/public" }))).response.status, 200)
      assert.strictEqual(svc.calls.length, 1)
    }))
})
