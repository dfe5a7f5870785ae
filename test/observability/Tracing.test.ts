/**
 * Tracing without sockets: W3C traceparent parsing, the sampling decision, the spans recorded
 * for a request and an upstream attempt, the protobuf encoding (decoded independently), and the
 * exporter's bounded queue.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { describe, expect, it } from "vitest"
import { ConfigError } from "../../src/config/ConfigError.ts"
import { validate } from "../../src/Gateway.ts"
import type * as Ir from "../../src/ir/Ir.ts"
import * as ProxyError from "../../src/pipeline/ProxyError.ts"
import { ProxyResponse } from "../../src/pipeline/ProxyResponse.ts"
import * as Tracing from "../../src/observability/Tracing.ts"
import { decodeTraces } from "../support/Otlp.ts"
import { request } from "../support/Requests.ts"

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
const PARENT = "00f067aa0ba902b7"

const settings = (over: Partial<Ir.TracingSettings> = {}): Ir.TracingSettings => ({
  protocol: "grpc",
  endpoint: "http://127.0.0.1:1",
  path: "/v1/traces",
  headers: {},
  randomSampling: 0,
  clientSampling: 1,
  ...over
})

const capture = () => {
  const spans: Array<Tracing.SpanRecord> = []
  return { spans, sink: { push: (s: Tracing.SpanRecord) => void spans.push(s) } }
}

describe("parseTraceParent", () => {
  it("reads a valid header and its sampled flag", () => {
    expect(Tracing.parseTraceParent(`00-${TRACE}-${PARENT}-01`)).toEqual({ traceId: TRACE, spanId: PARENT, sampled: true })
    expect(Tracing.parseTraceParent(`00-${TRACE}-${PARENT}-00`)).toEqual({ traceId: TRACE, spanId: PARENT, sampled: false })
    // A later version may append fields; its sampled bit still counts.
    expect(Tracing.parseTraceParent(`01-${TRACE}-${PARENT}-03-extra`)).toEqual({ traceId: TRACE, spanId: PARENT, sampled: true })
  })

  it("ignores malformed and invalid headers", () => {
    for (const bad of [
      undefined,
      "",
      "garbage",
      `ff-${TRACE}-${PARENT}-01`,
      `00-${"0".repeat(32)}-${PARENT}-01`,
      `00-${TRACE}-${"0".repeat(16)}-01`,
      `00-${TRACE.toUpperCase()}-${PARENT}-01`,
      `00-${TRACE}-${PARENT}-01-extra`,
      `00-${TRACE}-${PARENT}`
    ]) {
      expect(Tracing.parseTraceParent(bad)).toBeUndefined()
    }
  })
})

describe("Tracer sampling", () => {
  it("randomSampling decides for requests without a trace", () => {
    const off = new Tracing.Tracer(settings({ randomSampling: 0 }), capture().sink)
    const ctx = request()
    off.begin(ctx)
    expect(ctx.trace).toBeUndefined()

    const on = new Tracing.Tracer(settings({ randomSampling: 1 }), capture().sink)
    const ctx2 = request()
    on.begin(ctx2)
    expect(ctx2.trace?.traceId).toMatch(/^[0-9a-f]{32}$/)
    expect(ctx2.trace?.spanId).toMatch(/^[0-9a-f]{16}$/)
    expect(ctx2.trace?.parentSpanId).toBeUndefined()

    // A ratio compares against the random draw.
    const half = (draw: number) => {
      const c = request()
      new Tracing.Tracer(settings({ randomSampling: 0.5 }), capture().sink, () => draw).begin(c)
      return c.trace !== undefined
    }
    expect([half(0.49), half(0.5)]).toEqual([true, false])
  })

  it("a sampled incoming traceparent is continued when clientSampling allows it", () => {
    const tracer = new Tracing.Tracer(settings({ randomSampling: 0 }), capture().sink)
    const ctx = request({ headers: { traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: "vendor=1" } })
    tracer.begin(ctx)
    expect(ctx.trace?.traceId).toBe(TRACE)
    expect(ctx.trace?.parentSpanId).toBe(PARENT)
    expect(ctx.trace?.traceState).toBe("vendor=1")
    expect(ctx.trace?.spanId).not.toBe(PARENT)

    const noClient = new Tracing.Tracer(settings({ randomSampling: 1, clientSampling: 0 }), capture().sink)
    const ctx2 = request({ headers: { traceparent: `00-${TRACE}-${PARENT}-01` } })
    noClient.begin(ctx2)
    expect(ctx2.trace).toBeUndefined()
  })

  it("an unsampled incoming traceparent is not traced, even with randomSampling", () => {
    const tracer = new Tracing.Tracer(settings({ randomSampling: 1 }), capture().sink)
    const ctx = request({ headers: { traceparent: `00-${TRACE}-${PARENT}-00` } })
    tracer.begin(ctx)
    expect(ctx.trace).toBeUndefined()
  })

  it("a malformed traceparent starts a new trace under randomSampling", () => {
    const tracer = new Tracing.Tracer(settings({ randomSampling: 1 }), capture().sink)
    const ctx = request({ headers: { traceparent: "00-zz-zz-01" } })
    tracer.begin(ctx)
    expect(ctx.trace?.traceId).not.toBe(TRACE)
    expect(ctx.trace?.parentSpanId).toBeUndefined()
  })
})

describe("Tracer spans", () => {
  it("records the server span and a client span per upstream attempt, injecting traceparent", async () => {
    const { spans, sink } = capture()
    const tracer = new Tracing.Tracer(settings({ randomSampling: 1 }), sink)
    const ctx = request({ method: "POST", path: "/api/items" })
    ctx.gateway = "bind/3000"
    ctx.listener = "web"
    ctx.route = { key: "r", name: "api", namespace: "default", ruleName: undefined, label: "default/api" }
    ctx.pathMatch = "/api/*"
    tracer.begin(ctx)
    const trace = ctx.trace!
    const ok = tracer.upstream(ctx, trace, "/default/api/backend0", "127.0.0.1:8080", Effect.succeed(new ProxyResponse(503, {}, undefined)))
    expect(Exit.isSuccess(await Effect.runPromiseExit(ok))).toBe(true)
    const first = ctx.headers["traceparent"]
    const failed = tracer.upstream(ctx, trace, "/default/api/backend0", "127.0.0.1:8080", Effect.fail(ProxyError.make({ _tag: "UpstreamFailed", cause: new Error("refused") })))
    expect(Exit.isFailure(await Effect.runPromiseExit(failed))).toBe(true)
    tracer.end(ctx, trace, 503, "upstream call failed")

    expect(spans.map((s) => s.name)).toEqual(["upstream 127.0.0.1:8080", "upstream 127.0.0.1:8080", "POST /api/*"])
    const [a1, a2, server] = spans as [Tracing.SpanRecord, Tracing.SpanRecord, Tracing.SpanRecord]
    expect(first).toBe(`00-${trace.traceId}-${a1.spanId}-01`)
    expect(ctx.headers["traceparent"]).toBe(`00-${trace.traceId}-${a2.spanId}-01`)
    expect(a1.spanId).not.toBe(a2.spanId)
    expect([a1.parentSpanId, a2.parentSpanId]).toEqual([server.spanId, server.spanId])
    expect(Object.fromEntries(a1.attributes)).toEqual({
      backend: "/default/api/backend0",
      endpoint: "127.0.0.1:8080",
      "http.request.method": "POST",
      "url.path": "/api/items",
      "http.response.status_code": 503
    })
    expect(a2.error).toBe("UpstreamFailed")
    expect(Object.fromEntries(server.attributes)).toMatchObject({
      gateway: "bind/3000",
      listener: "web",
      route: "default/api",
      "http.request.method": "POST",
      "url.path": "/api/items",
      "url.scheme": "http",
      "http.route": "/api/*",
      "http.response.status_code": 503,
      "network.protocol.version": "1.1",
      error: "upstream call failed"
    })
    expect(server.error).toBe("upstream call failed")
    expect(server.kind).toBe(2)
    expect(a1.kind).toBe(3)
  })

  it("names the span by the method alone when no route matched", () => {
    expect(Tracing.spanName("GET", undefined)).toBe("GET")
    expect(Tracing.spanName("GET", "/*")).toBe("GET /*")
  })
})

describe("OTLP encoding", () => {
  it("encodes spans that decode to the same ids, names, attributes and status", () => {
    const bytes = Tracing.encode([
      {
        traceId: TRACE,
        spanId: PARENT,
        parentSpanId: "1111111111111111",
        traceState: undefined,
        name: "GET /*",
        kind: 2,
        startMs: 1,
        endMs: 3.5,
        attributes: [["url.path", "/x"], ["http.response.status_code", 404], ["ok", true]],
        error: "not found"
      }
    ])
    const [span] = decodeTraces(Buffer.from(bytes))
    expect(span).toMatchObject({
      traceId: TRACE,
      spanId: PARENT,
      parentSpanId: "1111111111111111",
      name: "GET /*",
      kind: 2,
      attributes: { "url.path": "/x", "http.response.status_code": 404, ok: true },
      statusCode: 2
    })
    expect(span!.end - span!.start).toBe(2_500_000n)
    expect(span!.resource["service.name"]).toBe("agentgateway")
  })
})

describe("BatchExporter", () => {
  const span: Tracing.SpanRecord = {
    traceId: TRACE,
    spanId: PARENT,
    parentSpanId: undefined,
    traceState: undefined,
    name: "GET /*",
    kind: 2,
    startMs: 0,
    endMs: 1,
    attributes: [],
    error: undefined
  }
  const context = Effect.runSync(Effect.context<never>())

  it("bounds the queue: a stuck collector drops (and counts) what does not fit", async () => {
    let sends = 0
    const exporter = new Tracing.BatchExporter({ send: () => (sends++, new Promise<void>(() => {})), close: async () => {} }, context)
    // The first full batch goes in flight; the queue then holds MAX_QUEUED_SPANS more.
    for (let i = 0; i < Tracing.MAX_EXPORT_BATCH + Tracing.MAX_QUEUED_SPANS + 7; i++) exporter.push(span)
    expect(sends).toBe(1)
    expect(exporter.dropped).toBe(7)
  })

  it("a failing export drops its batch and the next one is still sent", async () => {
    const sent: Array<number> = []
    let fail = true
    const exporter = new Tracing.BatchExporter({
      send: async (bytes) => {
        sent.push(decodeTraces(Buffer.from(bytes)).length)
        if (fail) {
          fail = false
          throw new Error("unavailable")
        }
      },
      close: async () => {}
    }, context)
    for (let i = 0; i < Tracing.MAX_EXPORT_BATCH * 2; i++) exporter.push(span)
    await exporter.close()
    expect(sent).toEqual([Tracing.MAX_EXPORT_BATCH, Tracing.MAX_EXPORT_BATCH])
    expect([exporter.dropped, exporter.exported]).toEqual([Tracing.MAX_EXPORT_BATCH, Tracing.MAX_EXPORT_BATCH])
  })
})

describe("tracing config", () => {
  const issues = async (yaml: string) => {
    const exit = await Effect.runPromiseExit(validate({ _tag: "Inline", text: yaml }, () => undefined))
    if (Exit.isSuccess(exit)) return exit.value.settings.tracing
    const error = Cause.squash(exit.cause)
    return error instanceof ConfigError ? error.issues.map((i) => `${i.path}: ${i.message}`) : String(error)
  }
  const routes = "binds: [{port: 3000, listeners: [{routes: [{backends: [{host: 127.0.0.1:1}]}]}]}]"

  it("config.tracing: defaults to gRPC, random sampling off, client sampling on", async () => {
    expect(await issues(`config: {tracing: {otlpEndpoint: "http://localhost:4317"}}\n${routes}`)).toEqual({
      protocol: "grpc",
      endpoint: "http://localhost:4317",
      path: "/v1/traces",
      headers: {},
      randomSampling: 0,
      clientSampling: 1
    })
    expect(await issues(`config: {tracing: {otlpEndpoint: "http://c:4318", otlpProtocol: http, randomSampling: "0.25", clientSampling: false}}\n${routes}`))
      .toMatchObject({ protocol: "http", randomSampling: 0.25, clientSampling: 0 })
    // No endpoint: tracing stays off.
    expect(await issues(`config: {tracing: {randomSampling: true}}\n${routes}`)).toBeUndefined()
  })

  it("frontendPolicies.tracing wins and takes a host", async () => {
    expect(await issues(`frontendPolicies: {tracing: {host: "collector:4317", randomSampling: 0.5}}\nconfig: {tracing: {otlpEndpoint: "http://other:1"}}\n${routes}`))
      .toMatchObject({ protocol: "grpc", endpoint: "http://collector:4317", randomSampling: 0.5 })
  })

  it("rejects what it cannot honour, naming the field", async () => {
    expect(await issues(`config: {tracing: {otlpEndpoint: "localhost:4317"}}\n${routes}`)).toEqual([
      'config.tracing.otlpEndpoint: invalid OTLP endpoint "localhost:4317" (expected an http:// or https:// URL)'
    ])
    const cel = await issues(`config: {tracing: {otlpEndpoint: "http://c:1", randomSampling: "request.path == '/x'"}}\n${routes}`)
    expect(JSON.stringify(cel)).toContain("CEL sampling expressions are not supported yet")
    expect(JSON.stringify(await issues(`config: {tracing: {otlpEndpoint: "http://c:1", randomSampling: 2}}\n${routes}`))).toContain("config.tracing.randomSampling")
    expect(await issues(`frontendPolicies: {tracing: {randomSampling: true}}\n${routes}`)).toEqual([
      "frontendPolicies.tracing: expected exactly one of: host, backend, service"
    ])
    expect(await issues(`frontendPolicies: {tracing: {host: "c:1", resources: {a: "1"}}}\n${routes}`)).toEqual([
      "frontendPolicies.tracing.resources: frontendPolicies.tracing.resources is not supported yet by effect-agentgateway"
    ])
  })
})
