import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Schema, Scope } from "effect"
import protobuf from "protobufjs"
import type { Handler } from "../../src/pipeline/Policy.ts"
import * as ProxyError from "../../src/pipeline/ProxyError.ts"
import { ProxyResponse } from "../../src/pipeline/ProxyResponse.ts"
import { type ProxyRequest, RequestContext } from "../../src/pipeline/RequestContext.ts"
import * as RemoteRateLimit from "../../src/policies/RemoteRateLimit.ts"
import * as Headers from "../../src/shared/headers.ts"
import * as Rls from "../../src/sidecar/RateLimitProto.ts"
import { buildEnv } from "../support/Policies.ts"
import { request, type RequestSpec } from "../support/Requests.ts"

const decodeConfig = Schema.decodeUnknownExit(RemoteRateLimit.Config, { onExcessProperty: "error" })

/** The first issue of a rejected config, as text. */
const rejection = (input: unknown): string => {
  const exit = decodeConfig(input)
  assert.isTrue(Exit.isFailure(exit), "expected the config to be rejected")
  return String(Exit.isFailure(exit) ? exit.cause : "")
}

interface Scripted {
  readonly limiter: RemoteRateLimit.Limiter
  readonly checks: Array<ReadonlyArray<RemoteRateLimit.Evaluated>>
  readonly charges: Array<ReadonlyArray<RemoteRateLimit.Evaluated>>
}

/** A limiter answering `verdict` (or failing) and recording what it was asked. */
const scripted = (verdict: RemoteRateLimit.Verdict | "fail"): Scripted => {
  const checks: Array<ReadonlyArray<RemoteRateLimit.Evaluated>> = []
  const charges: Array<ReadonlyArray<RemoteRateLimit.Evaluated>> = []
  return {
    checks,
    charges,
    limiter: {
      name: "test",
      check: (d) =>
        Effect.suspend(() => {
          checks.push(d)
          return verdict === "fail" ? Effect.fail(new RemoteRateLimit.LimiterFailed("down")) : Effect.succeed(verdict)
        }),
      charge: (d) => Effect.sync(() => void charges.push(d))
    }
  }
}

const ok: RemoteRateLimit.Verdict = { overLimit: false, headers: undefined, responseHeaders: [], requestHeaders: [] }

interface Outcome {
  readonly status: number
  readonly body: unknown
  readonly queued: Record<string, string>
  readonly forwarded: ProxyRequest | undefined
}

const upstreamWith = (headers: Record<string, string>) => {
  const calls: Array<ProxyRequest> = []
  const handler: Handler = Effect.map(Effect.service(RequestContext), (ctx) => {
    calls.push(ctx)
    const h = Headers.empty()
    for (const [k, v] of Object.entries(headers)) h[k] = v
    return new ProxyResponse(200, h, "upstream")
  })
  return { handler, calls }
}

const run = (
  settings: RemoteRateLimit.Settings,
  limiter: RemoteRateLimit.Limiter,
  specs: ReadonlyArray<RequestSpec>,
  responseHeaders: Record<string, string> = {}
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const middleware = yield* Effect.orDie(Scope.provide(RemoteRateLimit.middleware(settings, limiter, buildEnv(), "policies.remoteRateLimit"), scope))
    const out: Array<Outcome> = []
    for (const spec of specs) {
      const next = upstreamWith(responseHeaders)
      const req = request(spec)
      const exit = yield* Effect.exit(Effect.provideService(middleware(next.handler), RequestContext, req))
      const response = Exit.isSuccess(exit)
        ? exit.value
        : ProxyError.toResponse(exit.cause.reasons[0]?._tag === "Fail" ? exit.cause.reasons[0].error : ProxyError.make({ _tag: "Internal", cause: exit.cause }))
      const queued: Record<string, string> = {}
      for (const [k, v] of req.queuedResponseHeaders ?? []) queued[k] = v
      out.push({ status: response.status, body: response.body, queued, forwarded: next.calls[0] })
    }
    // Let forked charges run before the scope closes.
    yield* Effect.yieldNow
    yield* Scope.close(scope, Exit.void)
    return out
  })

const methodAndPath: RemoteRateLimit.Settings = {
  failOpen: false,
  descriptors: [{ entries: [{ key: "method", value: "request.method" }, { key: "path", value: "request.path" }] }]
}

describe("remoteRateLimit config", () => {
  it("decodes the upstream example's shape and the redis extension", () => {
    assert.isTrue(Exit.isSuccess(decodeConfig({
      domain: "agentgateway",
      host: "127.0.0.1:8081",
      failureMode: "failOpen",
      descriptors: [{ entries: [{ key: "method", value: "request.method" }], type: "requests" }]
    })))
    assert.isTrue(Exit.isSuccess(decodeConfig({
      redis: { url: "redis://127.0.0.1:6379", commandTimeout: "50ms" },
      domain: "d",
      descriptors: [{ entries: [{ key: "k", value: "\"v\"" }], limit: { maxTokens: 5, tokensPerFill: 5, fillInterval: "1m" } }]
    })))
    assert.isTrue(Exit.isSuccess(decodeConfig({
      conditional: [{ condition: "true", host: "h:1", domain: "d", descriptors: [] }, { backend: "rls", domain: "d", descriptors: [] }]
    })))
  })

  it("rejects a missing target, two targets, and limits on the wrong backend", () => {
    assert.include(rejection({ domain: "d", descriptors: [] }), "expected exactly one of: host, backend, service, redis")
    assert.include(rejection({ host: "h:1", redis: { url: "redis://h:1" }, domain: "d", descriptors: [] }), "only one of host, redis may be set")
    assert.include(rejection({ host: "h:1", descriptors: [] }), "missing required field \"domain\"")
    assert.include(
      rejection({ host: "h:1", domain: "d", descriptors: [{ entries: [], limit: { maxTokens: 1, tokensPerFill: 1, fillInterval: "1s" } }] }),
      "limit applies only with redis"
    )
    assert.include(rejection({ redis: { url: "redis://h:1" }, domain: "d", descriptors: [{ entries: [] }] }), "with redis, a descriptor needs limit or limitOverride")
    assert.include(rejection({ redis: { url: "http://h:1" }, domain: "d", descriptors: [] }), "expected a redis:// or rediss:// URL")
    assert.include(rejection({ conditional: [], domain: "d" }), "conditional cannot be combined with other fields")
    assert.include(rejection({ service: { name: "x", port: 1 }, domain: "d", descriptors: [] }), "remoteRateLimit.service is not supported yet")
  })
})

describe("RateLimitProto against protobufjs", () => {
  const root = protobuf.parse(`
    syntax = "proto3";
    message U64 { uint64 value = 1; }
    message Desc { message E { string key = 1; string value = 2; } message O { uint32 requests_per_unit = 1; int32 unit = 2; }
      repeated E entries = 1; O limit = 2; U64 hits_addend = 3; }
    message Req { string domain = 1; repeated Desc descriptors = 2; uint32 hits_addend = 3; }
    message Dur { int64 seconds = 1; int32 nanos = 2; }
    message RL { uint32 requests_per_unit = 1; int32 unit = 2; string name = 3; }
    message St { int32 code = 1; RL current_limit = 2; uint32 limit_remaining = 3; Dur duration_until_reset = 4; }
    message HV { string key = 1; string value = 2; bytes raw_value = 3; }
    message Res { int32 overall_code = 1; repeated St statuses = 2; repeated HV response_headers_to_add = 3; repeated HV request_headers_to_add = 4; bytes raw_body = 5; }
  `, { keepCase: true }).root

  it("encodes RateLimitRequest with Envoy's field numbers", () => {
    const bytes = RemoteRateLimit.encodeCheck("dom", [
      { entries: [["method", "GET"], ["path", "/a"]], cost: 2, override: { requestsPerUnit: 7, unit: Rls.Unit.MINUTE }, bucket: undefined },
      { entries: [["user", "bob"]], cost: 2, override: undefined, bucket: undefined }
    ])
    const Req = root.lookupType("Req")
    assert.deepStrictEqual(Req.toObject(Req.decode(bytes), { longs: Number }), {
      domain: "dom",
      hits_addend: 2,
      descriptors: [
        { entries: [{ key: "method", value: "GET" }, { key: "path", value: "/a" }], limit: { requests_per_unit: 7, unit: 2 }, hits_addend: { value: 2 } },
        { entries: [{ key: "user", value: "bob" }], hits_addend: { value: 2 } }
      ]
    })
    assert.deepStrictEqual(Rls.decodeRequest(bytes).descriptors[1], { entries: [{ key: "user", value: "bob" }], limit: undefined, hitsAddend: 2 })
  })

  it("differing costs: request-wide hits_addend 0, each descriptor its own (0 included)", () => {
    const Req = root.lookupType("Req")
    const bytes = RemoteRateLimit.encodeCheck("d", [
      { entries: [["a", "1"]], cost: 1, override: undefined, bucket: undefined },
      { entries: [["b", "2"]], cost: 0, override: undefined, bucket: undefined }
    ])
    const decoded = Req.toObject(Req.decode(bytes), { longs: Number, defaults: true })
    assert.strictEqual(decoded["hits_addend"], 0)
    assert.deepStrictEqual(decoded["descriptors"].map((d: { hits_addend: unknown }) => d.hits_addend), [{ value: 1 }, { value: 0 }])
  })

  it("decodes RateLimitResponse (statuses, durations, raw_value headers, unknown fields)", () => {
    const Res = root.lookupType("Res")
    const bytes = Res.encode(Res.fromObject({
      overall_code: 2,
      statuses: [
        { code: 1, current_limit: { requests_per_unit: 10, unit: 2, name: "n" }, limit_remaining: 4, duration_until_reset: { seconds: 30, nanos: 500_000_000 } },
        { code: 2, current_limit: { requests_per_unit: 5, unit: 1 } }
      ],
      response_headers_to_add: [{ key: "x-a", value: "1" }, { key: "x-b", raw_value: Buffer.from("raw") }],
      request_headers_to_add: [{ key: "x-c", value: "3" }],
      raw_body: Buffer.from("ignored")
    })).finish()
    assert.deepStrictEqual(Rls.decodeResponse(bytes), {
      overallCode: 2,
      statuses: [
        { code: 1, currentLimit: { requestsPerUnit: 10, unit: 2, name: "n" }, limitRemaining: 4, durationUntilResetMs: 30_500 },
        { code: 2, currentLimit: { requestsPerUnit: 5, unit: 1, name: "" }, limitRemaining: 0, durationUntilResetMs: undefined }
      ],
      responseHeadersToAdd: [{ key: "x-a", value: "1" }, { key: "x-b", value: "raw" }],
      requestHeadersToAdd: [{ key: "x-c", value: "3" }]
    })
    // And our encoder's output reads back the same through protobufjs.
    const ours = Rls.encodeResponse(Rls.decodeResponse(bytes))
    assert.deepStrictEqual(Rls.decodeResponse(ours).statuses, Rls.decodeResponse(bytes).statuses)
    assert.strictEqual(Res.toObject(Res.decode(ours))["statuses"][0].limit_remaining, 4)
  })

  it("a truncated response is an error, not a partial answer", () => {
    assert.throws(() => Rls.decodeResponse(Uint8Array.from([0x12, 0x05, 0x08])))
  })
})

describe("remoteRateLimit x-ratelimit headers from RLS statuses", () => {
  const status = (code: number, perUnit: number, remaining: number, resetMs: number | undefined): Rls.DescriptorStatus => ({
    code,
    currentLimit: { requestsPerUnit: perUnit, unit: Rls.Unit.MINUTE, name: "" },
    limitRemaining: remaining,
    durationUntilResetMs: resetMs
  })
  const response = (statuses: ReadonlyArray<Rls.DescriptorStatus>, headers: ReadonlyArray<Rls.HeaderValue> = []): Rls.RateLimitResponse => ({
    overallCode: 1,
    statuses,
    responseHeadersToAdd: headers,
    requestHeadersToAdd: []
  })

  it("the fewest remaining wins; a rejection reports an over-limit status", () => {
    const statuses = [status(1, 10, 3, 20_000), status(1, 100, 1, 5_000), status(2, 50, 9, 59_000)]
    assert.deepStrictEqual(RemoteRateLimit.headersOf(response(statuses.slice(0, 2)), false, 0), { limit: 100, remaining: 1, resetSeconds: 5 })
    assert.deepStrictEqual(RemoteRateLimit.headersOf(response(statuses), true, 0), { limit: 50, remaining: 9, resetSeconds: 59 })
  })

  it("without duration_until_reset, the end of the unit window; none with the service's own x-ratelimit headers", () => {
    assert.deepStrictEqual(RemoteRateLimit.headersOf(response([status(1, 10, 3, undefined)]), false, 45_000), { limit: 10, remaining: 3, resetSeconds: 15 })
    assert.isUndefined(RemoteRateLimit.headersOf(response([status(1, 10, 3, 1000)], [{ key: "X-RateLimit-Limit", value: "10" }]), false, 0))
    assert.isUndefined(RemoteRateLimit.headersOf(response([{ code: 1, currentLimit: undefined, limitRemaining: 0, durationUntilResetMs: undefined }]), false, 0))
  })

  it("limitOverride maps", () => {
    assert.deepStrictEqual(RemoteRateLimit.overrideOf(new Map<string, unknown>([["unit", "minute"], ["requestsPerUnit", 5n]])), { requestsPerUnit: 5, unit: Rls.Unit.MINUTE })
    assert.deepStrictEqual(RemoteRateLimit.overrideOf({ unit: "SECOND", requests_per_unit: 2 }), { requestsPerUnit: 2, unit: Rls.Unit.SECOND })
    assert.isUndefined(RemoteRateLimit.overrideOf({ unit: "fortnight", requestsPerUnit: 2 }))
    assert.isUndefined(RemoteRateLimit.overrideOf({ unit: "minute", requestsPerUnit: -1 }))
  })
})

describe("remoteRateLimit middleware", () => {
  it.effect("sends descriptor entries evaluated by CEL, cost 1 by default", () =>
    Effect.gen(function*() {
      const s = scripted(ok)
      const [out] = yield* run(methodAndPath, s.limiter, [{ method: "POST", path: "/v1/x" }])
      assert.strictEqual(out!.status, 200)
      assert.deepStrictEqual(s.checks, [[{ entries: [["method", "POST"], ["path", "/v1/x"]], cost: 1, override: undefined, bucket: undefined }]])
    }))

  it.effect("drops a descriptor whose entry, cost or override fails; none left: no call", () =>
    Effect.gen(function*() {
      const s = scripted(ok)
      const settings: RemoteRateLimit.Settings = {
        failOpen: false,
        descriptors: [
          { entries: [{ key: "user", value: "request.headers[\"x-user\"]" }] },
          { entries: [{ key: "path", value: "request.path" }], cost: "int(request.headers[\"x-cost\"])" },
          { entries: [{ key: "m", value: "request.method" }], limitOverride: "{\"unit\": \"minute\", \"requestsPerUnit\": 3}" },
          { entries: [{ key: "m", value: "request.method" }], limitOverride: "{\"unit\": \"nope\"}" },
          { entries: [{ key: "obj", value: "{\"a\": 1}" }] }
        ]
      }
      const outs = yield* run(settings, s.limiter, [{ headers: { "x-user": "bob", "x-cost": "3" } }, { headers: {} }])
      assert.deepStrictEqual(outs.map((o) => o.status), [200, 200])
      assert.deepStrictEqual(s.checks[0], [
        { entries: [["user", "bob"]], cost: 1, override: undefined, bucket: undefined },
        { entries: [["path", "/"]], cost: 3, override: undefined, bucket: undefined },
        { entries: [["m", "GET"]], cost: 1, override: { requestsPerUnit: 3, unit: Rls.Unit.MINUTE }, bucket: { capacity: 3, amount: 3, intervalMs: 60_000 } }
      ])
      assert.deepStrictEqual(s.checks[1], [
        { entries: [["m", "GET"]], cost: 1, override: { requestsPerUnit: 3, unit: Rls.Unit.MINUTE }, bucket: { capacity: 3, amount: 3, intervalMs: 60_000 } }
      ])
      const none = scripted(ok)
      const [passed] = yield* run({ failOpen: false, descriptors: [{ entries: [{ key: "u", value: "request.headers[\"x-user\"]" }] }] }, none.limiter, [{}])
      assert.strictEqual(passed!.status, 200)
      assert.strictEqual(none.checks.length, 0)
    }))

  it.effect("over the limit: 429 with x-ratelimit-* and the service's response headers, nothing forwarded", () =>
    Effect.gen(function*() {
      const s = scripted({ overLimit: true, headers: { limit: 5, remaining: 0, resetSeconds: 42 }, responseHeaders: [{ key: "X-Why", value: "quota" }, { key: "bad name", value: "x" }], requestHeaders: [] })
      const [out] = yield* run(methodAndPath, s.limiter, [{}])
      assert.deepStrictEqual({ status: out!.status, body: out!.body, queued: out!.queued }, {
        status: 429,
        body: "rate limit exceeded",
        queued: { "x-ratelimit-limit": "5", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "42", "x-why": "quota" }
      })
      assert.isUndefined(out!.forwarded)
    }))

  it.effect("allowed: request headers from the service are set on the forwarded request, limits queued", () =>
    Effect.gen(function*() {
      const s = scripted({ overLimit: false, headers: { limit: 5, remaining: 4, resetSeconds: 60 }, responseHeaders: [], requestHeaders: [{ key: "X-Tier", value: "gold" }, { key: "host", value: "evil" }, { key: "x-bad", value: "a\r\nb" }] })
      const [out] = yield* run(methodAndPath, s.limiter, [{ headers: { "x-tier": "free" } }])
      assert.strictEqual(out!.status, 200)
      assert.deepStrictEqual(out!.queued, { "x-ratelimit-limit": "5", "x-ratelimit-remaining": "4", "x-ratelimit-reset": "60" })
      assert.strictEqual(out!.forwarded!.headers["x-tier"], "gold")
      assert.strictEqual(out!.forwarded!.headers["host"], "example.com")
      assert.isUndefined(out!.forwarded!.headers["x-bad"])
    }))

  it.effect("service failure: failClosed answers 500 `rate limit failed`, failOpen forwards", () =>
    Effect.gen(function*() {
      const [closed] = yield* run(methodAndPath, scripted("fail").limiter, [{}])
      assert.deepStrictEqual({ status: closed!.status, body: closed!.body }, { status: 500, body: "rate limit failed" })
      assert.isUndefined(closed!.forwarded)
      const [open] = yield* run({ ...methodAndPath, failOpen: true }, scripted("fail").limiter, [{}])
      assert.deepStrictEqual({ status: open!.status, body: open!.body }, { status: 200, body: "upstream" })
    }))

  it.effect("type tokens: checked with 0 hits before, charged with the response's cost after", () =>
    Effect.gen(function*() {
      const s = scripted(ok)
      const settings: RemoteRateLimit.Settings = {
        failOpen: false,
        descriptors: [
          { entries: [{ key: "path", value: "request.path" }] },
          { entries: [{ key: "user", value: "\"bob\"" }], type: "tokens", cost: "int(response.headers[\"x-tokens\"])" },
          { entries: [{ key: "llm", value: "\"default-cost\"" }], type: "tokens" }
        ]
      }
      const [out] = yield* run(settings, s.limiter, [{}], { "x-tokens": "120" })
      assert.strictEqual(out!.status, 200)
      assert.deepStrictEqual(s.checks, [[
        { entries: [["path", "/"]], cost: 1, override: undefined, bucket: undefined },
        { entries: [["user", "bob"]], cost: 0, override: undefined, bucket: undefined },
        { entries: [["llm", "default-cost"]], cost: 0, override: undefined, bucket: undefined }
      ]])
      // `llm.totalTokens` (the default cost) is not there without the LLM gateway: never charged.
      assert.deepStrictEqual(s.charges, [[{ entries: [["user", "bob"]], cost: 120, override: undefined, bucket: undefined }]])
    }))

  it.effect("a bad CEL expression is a ConfigError naming the field", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const exit = yield* Effect.exit(Scope.provide(
        RemoteRateLimit.middleware({ failOpen: false, descriptors: [{ entries: [{ key: "a", value: "request.nope(" }] }] }, scripted(ok).limiter, buildEnv(), "p"),
        scope
      ))
      assert.isTrue(Exit.isFailure(exit))
      assert.include(String(Exit.isFailure(exit) ? exit.cause : ""), "p.descriptors[0].entries[0].value")
    }))
})
