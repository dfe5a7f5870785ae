/**
 * Child spans and request-span attributes without sockets: `Tracing.child` (success, failure,
 * interruption), the request span's protocol fields and CEL attributes (compiled from a real
 * config by `Telemetry.compile`), the MCP upstream decorator, and the config errors.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { describe, expect, it } from "vitest"
import * as A2aTelemetry from "../../src/a2a/Telemetry.ts"
import { ConfigError } from "../../src/config/ConfigError.ts"
import { validate } from "../../src/Gateway.ts"
import type * as Ir from "../../src/ir/Ir.ts"
import * as Traced from "../../src/mcp/Traced.ts"
import type { CallContext, Upstream } from "../../src/mcp/Upstream.ts"
import * as Telemetry from "../../src/observability/Telemetry.ts"
import * as Tracing from "../../src/observability/Tracing.ts"
import * as ProxyError from "../../src/pipeline/ProxyError.ts"
import { ProxyResponse } from "../../src/pipeline/ProxyResponse.ts"
import type { ProxyRequest } from "../../src/pipeline/RequestContext.ts"
import { request } from "../support/Requests.ts"

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
const PARENT = "00f067aa0ba902b7"

const settings: Ir.TracingSettings = {
  protocol: "http",
  endpoint: "http://127.0.0.1:1",
  path: "/v1/traces",
  headers: {},
  randomSampling: 0,
  clientSampling: 1
}

const capture = () => {
  const spans: Array<Tracing.SpanRecord> = []
  return { spans, sink: { push: (s: Tracing.SpanRecord) => void spans.push(s) } }
}

/** A request continuing TRACE, traced by a tracer whose spans land in `spans`. */
const traced = (fields?: Tracing.SpanFields, headers: Record<string, string> = {}) => {
  const { spans, sink } = capture()
  const tracer = new Tracing.Tracer(settings, sink, () => 0, fields)
  const ctx = request({ method: "POST", path: "/api/x", headers: { traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: "v=1", ...headers } })
  ctx.pathMatch = "/api/*"
  tracer.begin(ctx)
  return { spans, tracer, ctx, trace: ctx.trace! }
}

const attrs = (span: Tracing.SpanRecord | undefined) => Object.fromEntries(span?.attributes ?? [])

describe("Tracing.child", () => {
  it("records a CLIENT span parented on the request span, with the caller's attributes and context", async () => {
    const { spans, trace } = traced()
    let sent: string | undefined
    const result = await Effect.runPromise(Tracing.child(trace, "ext_authz", (span) =>
      Effect.sync(() => {
        sent = span.traceparent()
        span.set("server.address", "authz:9000")
        span.set("empty", "")
        span.set("missing", undefined)
        return 42
      })))
    expect(result).toBe(42)
    expect(spans).toHaveLength(1)
    const [span] = spans
    expect(span).toMatchObject({ traceId: TRACE, parentSpanId: trace.spanId, traceState: "v=1", name: "ext_authz", kind: 3, error: undefined })
    expect(sent).toBe(`00-${TRACE}-${span!.spanId}-01`)
    expect(span!.spanId).not.toBe(trace.spanId)
    expect(attrs(span)).toEqual({ "server.address": "authz:9000" })
    expect(span!.endMs >= span!.startMs).toBe(true)
  })

  it("a failed call ends the span as an error named by the failure; the caller's own error wins", async () => {
    const { spans, trace } = traced()
    const failed = Tracing.child(trace, "a", () => Effect.fail(ProxyError.make({ _tag: "UpstreamTimeout" })))
    expect(Exit.isFailure(await Effect.runPromiseExit(failed))).toBe(true)
    const named = Tracing.child(trace, "b", (span) => {
      span.error = "gRPC status 14"
      return Effect.fail(new Error("unavailable"))
    })
    expect(Exit.isFailure(await Effect.runPromiseExit(named))).toBe(true)
    expect(spans.map((s) => [s.name, s.error, attrs(s)["error"]])).toEqual([
      ["a", "UpstreamTimeout", "UpstreamTimeout"],
      ["b", "gRPC status 14", "gRPC status 14"]
    ])
  })

  it("an interrupted call still ends its span, as cancelled", async () => {
    const { spans, trace } = traced()
    await Effect.runPromise(Effect.gen(function*() {
      const fiber = yield* Effect.forkChild(Tracing.child(trace, "slow", () => Effect.never))
      yield* Effect.yieldNow
      yield* Fiber.interrupt(fiber)
    }))
    expect(spans.map((s) => [s.name, s.error])).toEqual([["slow", "cancelled"]])
  })
})

describe("request span attributes", () => {
  it("carries the A2A fields of the request", () => {
    const { spans, tracer, ctx, trace } = traced()
    const a2a = A2aTelemetry.fields("message/send")
    a2a.outcome = "error"
    a2a.errorCode = -32001
    a2a.contextId = "ctx-1"
    ctx.a2a = a2a
    tracer.end(ctx, trace, 200, undefined)
    expect(attrs(spans[0])).toMatchObject({
      protocol: "a2a",
      "a2a.method": "message/send",
      "a2a.response.outcome": "error",
      "a2a.response.error_code": -32001,
      "a2a.context.id": "ctx-1"
    })
    expect(attrs(spans[0])["a2a.task.state"]).toBeUndefined()
  })

  it("carries the MCP fields of the request", () => {
    const { spans, tracer, ctx, trace } = traced()
    ctx.mcp = { method: "tools/call", target: "fs", toolName: "read", sessionId: "s-1" }
    tracer.end(ctx, trace, 200, undefined)
    expect(attrs(spans[0])).toMatchObject({ protocol: "mcp", "mcp.method.name": "tools/call", "mcp.target": "fs", "gen_ai.tool.name": "read" })
    // The session id is a credential for resuming the session: not exported.
    expect(attrs(spans[0])["mcp.session.id"]).toBeUndefined()
  })

  const compiled = async (tracing: string): Promise<Tracing.SpanFields | undefined> => {
    const yaml = `frontendPolicies:\n  tracing:\n${tracing}\nbinds: [{port: 3000, listeners: [{routes: [{backends: [{host: 127.0.0.1:1}]}]}]}]`
    const ir = await Effect.runPromise(validate({ _tag: "Inline", text: yaml }, () => undefined))
    return (await Effect.runPromise(Telemetry.compile(ir.settings))).span
  }

  it("evaluates `attributes` on the redacted request and the response, after `remove`; `span.name` renames", async () => {
    const fields = await compiled(`    host: c:4317
    remove: [url.path, http.route]
    attributes:
      tenant: 'request.headers["x-tenant"]'
      auth: 'request.headers["authorization"]'
      listener: '"mine"'
      status: 'response.code'
      big: '{"a": [1, 2]}'
      absent: 'request.headers["x-nope"]'
      nothing: 'null'
      span.name: '"custom " + request.method'`)
    expect(fields?.remove).toEqual(new Set(["url.path", "http.route"]))
    const { spans, tracer, ctx, trace } = traced(fields, { "x-tenant": "acme", authorization: "Bearer s3cret" })
    ctx.listener = "web"
    tracer.end(ctx, trace, 201, undefined, new ProxyResponse(201, {}, undefined))
    const span = spans[0]!
    expect(span.name).toBe("custom POST")
    const a = attrs(span)
    expect(a).toMatchObject({ tenant: "acme", auth: "<redacted>", listener: "mine", status: 201, big: '{"a":[1,2]}', "http.request.method": "POST" })
    for (const gone of ["url.path", "http.route", "absent", "nothing", "span.name"]) expect(a[gone]).toBeUndefined()
    // Replaced, not duplicated.
    expect(span.attributes.filter(([k]) => k === "listener")).toHaveLength(1)
  })

  it("without a response (the client went away) the status is the response code CEL sees", async () => {
    const fields = await compiled(`    host: c:4317\n    attributes: {status: 'response.code'}`)
    const { spans, tracer, ctx, trace } = traced(fields)
    tracer.end(ctx, trace, 0, "downstream closed")
    expect(attrs(spans[0])["status"]).toBe(0)
  })

  it("no attributes and no remove compile to nothing (the span path evaluates no CEL)", async () => {
    expect(await compiled("    host: c:4317")).toBeUndefined()
  })

  it("cuts long values at MAX_ATTRIBUTE_LENGTH", () => {
    expect(Tracing.attributeValue("x".repeat(Tracing.MAX_ATTRIBUTE_LENGTH + 10))).toHaveLength(Tracing.MAX_ATTRIBUTE_LENGTH)
    expect(Tracing.attributeValue(10n)).toBe(10)
    expect(Tracing.attributeValue(null)).toBeUndefined()
  })
})

describe("tracing attribute config", () => {
  const issues = async (yaml: string) => {
    const routes = "binds: [{port: 3000, listeners: [{routes: [{backends: [{host: 127.0.0.1:1}]}]}]}]"
    const exit = await Effect.runPromiseExit(validate({ _tag: "Inline", text: `${yaml}\n${routes}` }, () => undefined))
    if (Exit.isSuccess(exit)) return exit.value.settings.tracing
    const error = Cause.squash(exit.cause)
    return error instanceof ConfigError ? error.issues.map((i) => i.path) : String(error)
  }

  it("a bad expression is a config error naming the attribute", async () => {
    expect(await issues(`frontendPolicies: {tracing: {host: "c:1", attributes: {tenant: 'request.headers['}}}`)).toEqual(["frontendPolicies.tracing.attributes.tenant"])
    expect(await issues(`config: {tracing: {otlpEndpoint: "http://c:1", fields: {add: {x: 'nope.nope'}}}}`)).toEqual(["config.tracing.fields.add.x"])
  })

  it("config.tracing.fields is the deprecated form of the same", async () => {
    expect(await issues(`config: {tracing: {otlpEndpoint: "http://c:1", fields: {add: {a: '"1"'}, remove: [url.scheme]}}}`)).toMatchObject({
      attributes: [{ name: "a", source: '"1"', path: "config.tracing.fields.add.a" }],
      remove: ["url.scheme"]
    })
  })
})

describe("MCP upstream decorator", () => {
  const fake = () => {
    const calls: Array<{ method: string; call: CallContext }> = []
    let answer: Record<string, unknown> = { result: {} }
    const upstream: Upstream = {
      target: "fs",
      request: (method, _params, call) => Effect.sync(() => {
        calls.push({ method, call })
        return { jsonrpc: "2.0", id: 1, ...answer }
      }),
      send: () => Effect.void,
      listen: () => Effect.void,
      serverMessages: true,
      resumeToken: () => null
    }
    return { calls, upstream, answerWith: (a: Record<string, unknown>) => void (answer = a) }
  }
  const callOf = (ctx: ProxyRequest): CallContext => ({ headers: { "x-client": "1" }, protocolVersion: "2025-06-18", request: ctx })

  it("an untraced request passes the same call through and records nothing", async () => {
    const { calls, upstream } = fake()
    const ctx = request()
    const call = callOf(ctx)
    await Effect.runPromise(Traced.traced(upstream).request("tools/call", { name: "read" }, call))
    expect(calls[0]!.call).toBe(call)
  })

  it("a traced request gets one CLIENT span per upstream request, its context in a copy of the headers", async () => {
    const { calls, upstream, answerWith } = fake()
    const { spans, trace, ctx } = traced()
    const call = callOf(ctx)
    const wrapped = Traced.traced(upstream)
    await Effect.runPromise(wrapped.request("tools/call", { name: "read", arguments: {} }, call))
    await Effect.runPromise(wrapped.request("resources/read", { uri: "file:///a" }, call))
    answerWith({ error: { code: -32602, message: "Unknown tool" } })
    await Effect.runPromise(wrapped.request("prompts/get", { name: "p" }, call))

    expect(spans.map((s) => s.name)).toEqual(["tools/call fs", "resources/read fs", "prompts/get fs"])
    expect(spans.every((s) => s.kind === 3 && s.parentSpanId === trace.spanId && s.traceId === TRACE)).toBe(true)
    expect(attrs(spans[0])).toEqual({ "mcp.method.name": "tools/call", "mcp.target": "fs", "gen_ai.tool.name": "read", "gen_ai.operation.name": "execute_tool" })
    expect(attrs(spans[1])).toEqual({ "mcp.method.name": "resources/read", "mcp.target": "fs", "mcp.resource.uri": "file:///a" })
    expect(attrs(spans[2])).toMatchObject({ "gen_ai.prompt.name": "p", "rpc.response.status_code": -32602, error: "JSON-RPC error -32602" })
    expect(spans[2]!.error).toBe("JSON-RPC error -32602")
    expect(calls.map((c) => c.call.headers?.["traceparent"])).toEqual(spans.map((s) => `00-${TRACE}-${s.spanId}-01`))
    expect(calls[0]!.call.headers).toMatchObject({ "x-client": "1", tracestate: "v=1" })
    expect(call.headers).toEqual({ "x-client": "1" })
  })
})
