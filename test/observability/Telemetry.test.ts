/**
 * Unit tests (no sockets) of the observability pieces: telemetry compilation and redaction,
 * the series cache of the request metrics, metric removal names, access-log extras, log
 * levels, admin address checks and config-dump redaction.
 */
import { Context, Effect, Exit, Metric } from "effect"
import { describe, expect, it } from "vitest"
import * as Address from "../../src/admin/Address.ts"
import * as CelPlayground from "../../src/admin/CelPlayground.ts"
import { redact } from "../../src/admin/Ops.ts"
import { loadIr } from "../../src/Gateway.ts"
import type * as Ir from "../../src/ir/Ir.ts"
import { AccessLog } from "../../src/observability/AccessLog.ts"
import * as LogLevel from "../../src/observability/LogLevel.ts"
import { MAX_CUSTOM_SERIES, RequestMetrics, type RequestRecord } from "../../src/observability/Metrics.ts"
import * as Prometheus from "../../src/observability/Prometheus.ts"
import * as Telemetry from "../../src/observability/Telemetry.ts"
import { ProxyResponse } from "../../src/pipeline/ProxyResponse.ts"
import type { RouteInfo } from "../../src/pipeline/RequestContext.ts"
import { request } from "../support/Requests.ts"

/** The settings a config normalises to (so the tests also cover Normalize's field paths). */
const settings = (yaml: string): Ir.Settings => Effect.runSync(loadIr(yaml, "t.yaml", () => undefined)).ir.settings

const compile = (yaml: string) => Effect.runSyncExit(Telemetry.compile(settings(yaml)))

const compiled = (yaml: string) => Effect.runSync(Telemetry.compile(settings(yaml)))

describe("Telemetry.compile", () => {
  it("names the field of a bad expression or label", () => {
    const issue = (exit: Exit.Exit<unknown, { readonly issues: ReadonlyArray<{ readonly path: string; readonly message: string }> }>) =>
      Exit.isFailure(exit) ? exit.cause.reasons.flatMap((r) => (r._tag === "Fail" ? r.error.issues : []))[0] : undefined
    expect(issue(compile(`frontendPolicies: {accessLog: {filter: 'request.method =='}}`))?.path).toBe("frontendPolicies.accessLog.filter")
    expect(issue(compile(`config: {logging: {fields: {add: {x: 'nope.x'}}}}`))?.path).toBe("config.logging.fields.add.x")
    expect(issue(compile(`config: {metrics: {fields: {add: {bad-name: '"x"'}}}}`))).toEqual({
      path: "config.metrics.fields.add.bad-name",
      message: 'invalid metric label name "bad-name" (expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with __)'
    })
    expect(issue(compile(`config: {metrics: {fields: {add: {route: '"x"'}}}}`))?.message).toBe('metric label "route" is a built-in label')
  })

  it("removes defaults that add replaces, and mcp.session.id when the session header is sensitive", () => {
    const t = compiled(`
config: {sensitiveHeaders: [MCP-Session-Id]}
frontendPolicies: {accessLog: {remove: [src.addr], add: {http.host: '"h"'}}}`)
    expect(t.removed).toEqual(["src.addr", "http.host", "mcp.session.id"])
    expect(compiled("binds: []").removed).toEqual([])
  })

  it("evaluates fields and labels against redacted headers; the filter sees the real ones", () => {
    const t = compiled(`
config:
  sensitiveHeaders: [x-tenant]
  metrics: {fields: {add: {tenant: 'request.headers["x-tenant"]', num: '1'}}}
frontendPolicies:
  accessLog:
    filter: 'request.headers["authorization"] == "Bearer s3cret"'
    add: {auth: 'request.headers["authorization"]', n: '1 + 1'}`)
    const ctx = request({ headers: { authorization: "Bearer s3cret", "x-tenant": "acme" } })
    const out = Telemetry.evaluate(t, ctx, new ProxyResponse(200, {}, undefined))
    expect(out.log).toBe(true)
    expect(out.fields).toEqual([["auth", "<redacted>"], ["n", 2]])
    // Non-string label values are unknown, as upstream.
    expect(out.labels).toEqual(["<redacted>", undefined])
    expect(Telemetry.evaluate(t, request({ headers: {} }), new ProxyResponse(200, {}, undefined)).log).toBe(false)
  })
})

const route = (label: string): RouteInfo => ({ key: label, name: label, namespace: "default", ruleName: undefined, label: `default/${label}` })

const record = (r: Partial<RequestRecord>): RequestRecord => ({
  route: undefined,
  bind: "bind/1",
  gateway: "bind/1",
  listener: "l",
  backend: "b",
  protocol: "http",
  method: "GET",
  status: 200,
  reason: "Upstream",
  seconds: 0.01,
  responseBytes: 0,
  retries: 0,
  custom: undefined,
  ...r
})

const registry = () => Context.make(Metric.MetricRegistry, new Map())

const value = (context: Context.Context<never>, id: string, labels: Record<string, string>): number | undefined => {
  for (const s of Metric.snapshotUnsafe(context)) {
    if (s.id !== id || s.type !== "Counter") continue
    if (Object.entries(labels).every(([k, v]) => s.attributes?.[k] === v)) return Number(s.state.count)
  }
  return undefined
}

describe("RequestMetrics", () => {
  it("counts per label set through the cached series, empty labels as unknown", () => {
    const context = registry()
    const m = new RequestMetrics(context)
    const r = route("r")
    for (let i = 0; i < 3; i++) m.request(record({ route: r, responseBytes: 5 }))
    m.request(record({ route: r, status: 404, reason: "NotFound", backend: "" }))
    m.request(record({ route: r, retries: 2 }))
    expect(value(context, "agentgateway_requests_total", { route: "default/r", status: "200" })).toBe(4)
    expect(value(context, "agentgateway_requests_total", { status: "404", backend: "unknown", route_rule: "unknown" })).toBe(1)
    expect(value(context, "agentgateway_response_bytes_total", { status: "200" })).toBe(15)
    expect(value(context, "agentgateway_retries_total", { status: "200" })).toBe(2)
    // A new snapshot's route object with the same labels continues the same series.
    m.request(record({ route: route("r") }))
    expect(value(context, "agentgateway_requests_total", { route: "default/r", status: "200" })).toBe(5)
  })

  it("bounds the distinct custom-label tuples", () => {
    const context = registry()
    const m = new RequestMetrics(context)
    m.setCustomLabels(["user"])
    const r = route("r")
    for (let i = 0; i < MAX_CUSTOM_SERIES + 5; i++) m.request(record({ route: r, custom: [`u${i}`] }))
    m.request(record({ route: r, custom: [undefined] }))
    expect(value(context, "agentgateway_requests_total", { user: "u0" })).toBe(1)
    expect(value(context, "agentgateway_requests_total", { user: "other" })).toBe(6)
    expect(value(context, "agentgateway_requests_total", { user: "unknown" })).toBeUndefined()
  })
})

describe("Prometheus", () => {
  it("accepts upstream's forms of a removed name", () => {
    expect(Prometheus.namesOf("agentgateway_request_duration_seconds")).toEqual(
      expect.arrayContaining(["request_duration", "request_duration_seconds", "agentgateway_request_duration_seconds", "agentgateway_request_duration"])
    )
    expect(Prometheus.namesOf("agentgateway_requests_total")).toEqual(expect.arrayContaining(["requests", "requests_total", "agentgateway_requests"]))
    const context = registry()
    new RequestMetrics(context).request(record({}))
    expect(Prometheus.format(context, new Set(["requests"]))).not.toContain("agentgateway_requests_total")
    expect(Prometheus.format(context, new Set(["requests"]))).toContain("agentgateway_request_duration_seconds_count")
  })
})

describe("AccessLog extras", () => {
  it("appends CEL fields in text and JSON, quoting what needs it", () => {
    const writes: Array<string> = []
    const text = new AccessLog("text", [], { write: (l) => void writes.push(l) })
    text.log(["route"], ["r"], [["obj", { a: 1 }], ["flag", true], ["s", "a b"]])
    text.drain()
    expect(writes[0]).toMatch(/ route=r obj="\{\\"a\\":1\}" flag=true s="a b"\n$/)
    const json = new AccessLog("json", [], { write: (l) => void writes.push(l) })
    json.log(["route"], ["r"], [["__proto__", "x"], ["obj", { a: 1 }]])
    json.drain()
    const parsed = JSON.parse(writes[1]!) as Record<string, unknown>
    expect(parsed["obj"]).toEqual({ a: 1 })
    expect(Object.getOwnPropertyDescriptor(parsed, "__proto__")?.value).toBe("x")
  })

  it("writes nothing while the level is above info", () => {
    const writes: Array<string> = []
    const control = new LogLevel.Control("warn")
    const log = new AccessLog("text", [], { write: (l) => void writes.push(l) }, control)
    log.log(["a"], ["1"])
    control.level = "debug"
    log.log(["a"], ["2"])
    log.drain()
    expect(writes.join("")).not.toContain("a=1")
    expect(writes.join("")).toContain("a=2")
  })
})

describe("LogLevel.parse", () => {
  it("takes upstream's forms", () => {
    expect(LogLevel.parse("debug")).toEqual({ level: "debug" })
    expect(LogLevel.parse("info,agent_core=trace")).toEqual({ level: "info" })
    expect(LogLevel.parse("loud")).toEqual({ error: "level loud is invalid" })
  })
})

describe("admin address", () => {
  it("knows loopback peers and refuses a loopback name that bound elsewhere", () => {
    for (const ip of ["127.0.0.1", "::1", "::ffff:127.0.0.1", "127.1.2.3"]) expect(Address.isLoopback(ip)).toBe(true)
    for (const ip of ["10.0.0.1", "::", "0.0.0.0", "", "::ffff:10.0.0.1"]) expect(Address.isLoopback(ip)).toBe(false)
    expect(Address.checkAdminBind("localhost", "127.0.0.1")).toBeUndefined()
    expect(Address.checkAdminBind("localhost", "10.1.2.3")).toContain("non-loopback 10.1.2.3")
    // Named explicitly: the operator asked for it.
    expect(Address.checkAdminBind("0.0.0.0", "0.0.0.0")).toBeUndefined()
  })
})

describe("config dump redaction", () => {
  it("replaces secret values whole, walks objects, strips URL userinfo", () => {
    expect(redact({
      session: { key: "k" },
      settings: { sessionKey: "k", tracing: { headers: { "x-api-key": "s", authorization: "Bearer t", accept: "a" } } },
      jwtAuth: { jwks: '{"keys": []}', issuer: "i" },
      jwks2: { jwks: { url: "https://idp/jwks" } },
      basicAuth: { htpasswd: { file: "/etc/htpasswd" } },
      aws: { accessKeyId: "AKIA", secretAccessKey: "s", sessionToken: "t" },
      redis: "redis://user:pass@host:6379"
    })).toEqual({
      session: { key: "<redacted>" },
      settings: { sessionKey: "<redacted>", tracing: { headers: { "x-api-key": "<redacted>", authorization: "<redacted>", accept: "a" } } },
      jwtAuth: { jwks: "<redacted>", issuer: "i" },
      jwks2: { jwks: { url: "https://idp/jwks" } },
      basicAuth: { htpasswd: { file: "/etc/htpasswd" } },
      aws: { accessKeyId: "<redacted>", secretAccessKey: "<redacted>", sessionToken: "<redacted>" },
      redis: "redis://<redacted>@host:6379"
    })
  })
})

describe("CEL playground", () => {
  it("bounds the expression and reports errors", () => {
    expect(CelPlayground.evaluate({ expression: "x".repeat(CelPlayground.MAX_EXPRESSION_CHARS + 1) })).toEqual({
      status: 400,
      body: { error: `expression longer than ${CelPlayground.MAX_EXPRESSION_CHARS} characters` }
    })
    expect(CelPlayground.evaluate([])).toMatchObject({ status: 400 })
    expect(CelPlayground.evaluate({ expression: "request.body", data: { request: { body: "hi" } } })).toEqual({ status: 200, body: { result: "aGk=" } })
  })
})
