/**
 * Tracing through real sockets: the real gateway from YAML, a real upstream, and real OTLP
 * receivers (HTTP `/v1/traces` and a grpc-js `TraceService/Export` handler) that decode the
 * protobuf they receive.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Reply, send } from "../support/Client.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { type ReceivedSpan, type Receiver, startGrpcReceiver, startHttpReceiver } from "../support/Otlp.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
const PARENT = "00f067aa0ba902b7"

const echoed = (reply: Reply) => JSON.parse(reply.body) as { url: string; headers: Record<string, string> }

const routes = `
    routes:
    - name: api
      matches: [{path: {pathPrefix: /api}}]
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: retried
      matches: [{path: {pathPrefix: /retry}}]
      policies: {retry: {attempts: 1, codes: [503]}}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: exact
      matches: [{path: {exact: /exact}}]
      backends: [{host: 127.0.0.1:$UPSTREAM}]`

const ofTrace = (spans: ReadonlyArray<ReceivedSpan>, traceId: string) => spans.filter((s) => s.traceId === traceId)

/** Waits until the receiver holds `count` spans of `traceId`. */
const spansOf = async (receiver: Receiver, traceId: string, count: number): Promise<Array<ReceivedSpan>> => {
  for (let i = 0; i < 400; i++) {
    const found = ofTrace(receiver.spans, traceId)
    if (found.length >= count) return found
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`expected ${count} spans of ${traceId}, have ${ofTrace(receiver.spans, traceId).length}`)
}

describe("tracing over OTLP/HTTP", () => {
  let upstream: Upstream
  let receiver: Receiver
  let gw: Running
  let port: number

  beforeAll(async () => {
    upstream = await startUpstream()
    receiver = await startHttpReceiver()
    port = await freePort()
    gw = await startGateway(
      `
config:
  tracing:
    otlpEndpoint: http://127.0.0.1:$COLLECTOR
    otlpProtocol: http
    headers: {x-api-key: secret}
    randomSampling: true
binds:
- port: $PORT
  listeners:
  - name: web
${routes}
`,
      { vars: { PORT: port, UPSTREAM: upstream.port, COLLECTOR: receiver.port } }
    )
  })
  afterAll(async () => {
    await gw?.stop()
    await receiver?.close()
    await upstream?.close()
  })

  it("exports a server span named after the route match and a child span per upstream call, whose context goes upstream", async () => {
    const reply = await send(port, "GET", "/api/items?x=1")
    expect(reply.status).toBe(200)
    const traceparent = echoed(reply).headers["traceparent"]!
    const [, traceId, childId, flags] = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(traceparent)!
    expect(flags).toBe("01")
    const spans = await spansOf(receiver, traceId!, 2)
    const server = spans.find((s) => s.kind === 2)!
    const client = spans.find((s) => s.kind === 3)!
    expect(server.name).toBe("GET /api/*")
    expect(server.parentSpanId).toBe("")
    expect(client.spanId).toBe(childId)
    expect(client.parentSpanId).toBe(server.spanId)
    expect(client.name).toBe(`upstream 127.0.0.1:${upstream.port}`)
    expect(server.attributes).toMatchObject({
      "http.request.method": "GET",
      "url.path": "/api/items",
      "url.scheme": "http",
      "http.route": "/api/*",
      "http.response.status_code": 200,
      gateway: `bind/${port}`,
      listener: "web",
      route: "default/api",
      endpoint: `127.0.0.1:${upstream.port}`
    })
    expect(server.attributes["backend"]).toMatch(/\/default\/api\/backend0$/)
    expect(client.attributes).toMatchObject({ "http.response.status_code": 200, endpoint: `127.0.0.1:${upstream.port}` })
    expect(server.resource["service.name"]).toBe("agentgateway")
    expect(server.end >= client.end && client.start >= server.start).toBe(true)
    expect(receiver.requests.at(-1)?.headers["x-api-key"]).toBe("secret")
  })

  it("continues the client's trace: same trace id, parented on the incoming span, tracestate kept", async () => {
    const reply = await send(port, "GET", "/exact", { traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: "vendor=abc" })
    expect(reply.status).toBe(200)
    const sent = echoed(reply).headers
    expect(sent["traceparent"]).toMatch(new RegExp(`^00-${TRACE}-[0-9a-f]{16}-01$`))
    expect(sent["traceparent"]).not.toContain(PARENT)
    expect(sent["tracestate"]).toBe("vendor=abc")
    const spans = await spansOf(receiver, TRACE, 2)
    const server = spans.find((s) => s.kind === 2)!
    expect(server.name).toBe("GET /exact")
    expect(server.parentSpanId).toBe(PARENT)
    expect(server.traceState).toBe("vendor=abc")
    expect(spans.find((s) => s.kind === 3)!.parentSpanId).toBe(server.spanId)
  })

  it("a retried request has one child span per attempt", async () => {
    const trace = "1".repeat(32)
    const reply = await send(port, "GET", "/retry/status/503", { traceparent: `00-${trace}-${PARENT}-01` })
    expect(reply.status).toBe(503)
    const spans = await spansOf(receiver, trace, 3)
    const server = spans.find((s) => s.kind === 2)!
    const attempts = spans.filter((s) => s.kind === 3)
    expect(server.name).toBe("GET /retry/*")
    expect(server.attributes["http.response.status_code"]).toBe(503)
    expect(attempts).toHaveLength(2)
    expect(new Set(attempts.map((a) => a.spanId)).size).toBe(2)
    expect(attempts.map((a) => a.parentSpanId)).toEqual([server.spanId, server.spanId])
    expect(attempts.map((a) => a.attributes["http.response.status_code"])).toEqual([503, 503])
    // The upstream saw each attempt's own span as parent.
    const seen = upstream.received.filter((r) => r.url === "/retry/status/503").map((r) => r.headers["traceparent"])
    expect(seen.slice(-2)).toEqual(attempts.map((a) => `00-${trace}-${a.spanId}-01`))
  })

  it("an unmatched request gets a span named by its method", async () => {
    const trace = "2".repeat(32)
    expect((await send(port, "DELETE", "/nowhere", { traceparent: `00-${trace}-${PARENT}-01` })).status).toBe(404)
    const [span] = await spansOf(receiver, trace, 1)
    expect(span!.name).toBe("DELETE")
    expect(span!.attributes["http.response.status_code"]).toBe(404)
  })
})

describe("tracing over OTLP/gRPC", () => {
  let upstream: Upstream
  let receiver: Receiver
  let gw: Running
  let port: number

  beforeAll(async () => {
    upstream = await startUpstream()
    receiver = await startGrpcReceiver()
    port = await freePort()
    // randomSampling off: only requests arriving with a sampled traceparent are traced.
    gw = await startGateway(
      `
frontendPolicies:
  tracing:
    host: 127.0.0.1:$COLLECTOR
binds:
- port: $PORT
  listeners:
  - name: web
${routes}
`,
      { vars: { PORT: port, UPSTREAM: upstream.port, COLLECTOR: receiver.port } }
    )
  })
  afterAll(async () => {
    await gw?.stop()
    await receiver?.close()
    await upstream?.close()
  })

  it("sampling off exports nothing and leaves the client's unsampled traceparent alone; a sampled one is exported", async () => {
    const plain = await send(port, "GET", "/api/plain")
    expect(plain.status).toBe(200)
    expect(echoed(plain).headers["traceparent"]).toBeUndefined()
    const unsampled = `00-${"3".repeat(32)}-${PARENT}-00`
    const passed = await send(port, "GET", "/api/unsampled", { traceparent: unsampled })
    expect(echoed(passed).headers["traceparent"]).toBe(unsampled)

    const sampled = "4".repeat(32)
    expect((await send(port, "POST", "/api/sampled", { traceparent: `00-${sampled}-${PARENT}-01` }, { body: "x" })).status).toBe(200)
    // Batches leave in order: once the sampled trace is there, anything earlier would be too.
    const spans = await spansOf(receiver, sampled, 2)
    expect(spans.map((s) => s.name).sort()).toEqual(["POST /api/*", `upstream 127.0.0.1:${upstream.port}`])
    expect(receiver.spans.every((s) => s.traceId === sampled)).toBe(true)
  })
})

describe("tracing with the collector down", () => {
  let upstream: Upstream
  let gw: Running
  let port: number

  beforeAll(async () => {
    upstream = await startUpstream()
    port = await freePort()
    const nobody = await freePort()
    gw = await startGateway(
      `
config:
  tracing: {otlpEndpoint: "http://127.0.0.1:$COLLECTOR", randomSampling: true}
binds:
- port: $PORT
  listeners:
  - name: web
${routes}
`,
      { vars: { PORT: port, UPSTREAM: upstream.port, COLLECTOR: nobody } }
    )
  })
  afterAll(async () => {
    await gw?.stop()
    await upstream?.close()
  })

  it("answers every request and counts the spans it could not export", async () => {
    for (let i = 0; i < 5; i++) expect((await send(port, "GET", `/api/${i}`)).status).toBe(200)
    let dropped = 0
    for (let i = 0; i < 200 && dropped < 10; i++) {
      await new Promise((r) => setTimeout(r, 50))
      const text = await (await fetch(`http://127.0.0.1:${gw.ports.stats}/metrics`)).text()
      const line = text.split("\n").find((l) => l.startsWith('agentgateway_tracing_spans_dropped_total{reason="export_failed"}'))
      dropped = line === undefined ? 0 : Number(line.split(" ").at(-1))
    }
    // 5 server spans + 5 upstream spans.
    expect(dropped).toBe(10)
    expect((await send(port, "GET", "/api/after")).status).toBe(200)
  })
})

describe("upstream example traffic-ratelimiting-local", () => {
  let upstream: Upstream
  let receiver: Receiver
  let gw: Running
  let port: number

  beforeAll(async () => {
    upstream = await startUpstream()
    receiver = await startGrpcReceiver()
    port = await freePort()
    const file = path.resolve(import.meta.dirname, "../../../shared/reference/agentgateway/examples/traffic-ratelimiting-local/config.yaml")
    const yaml = fs.readFileSync(file, "utf8")
      .replace("otlpEndpoint: http://localhost:4317", "otlpEndpoint: http://127.0.0.1:$COLLECTOR")
      .replace("port: 3000", "port: $PORT")
      .replace("host: localhost:8080", "host: 127.0.0.1:$UPSTREAM")
    expect(yaml).toContain("$COLLECTOR")
    expect(yaml).toContain("$UPSTREAM")
    gw = await startGateway(yaml, { vars: { PORT: port, UPSTREAM: upstream.port, COLLECTOR: receiver.port } })
  })
  afterAll(async () => {
    await gw?.stop()
    await receiver?.close()
    await upstream?.close()
  })

  it("allows 10 requests, answers the 11th 429, and exports a trace for each over gRPC", async () => {
    const statuses: Array<number> = []
    for (let i = 0; i < 11; i++) statuses.push((await send(port, "GET", `/r${i}`)).status)
    expect(statuses).toEqual([...Array<number>(10).fill(200), 429])
    await receiver.waitFor(21)
    const servers = receiver.spans.filter((s) => s.kind === 2)
    expect(servers).toHaveLength(11)
    expect(new Set(servers.map((s) => s.name))).toEqual(new Set(["GET /*"]))
    expect(servers.map((s) => s.attributes["http.response.status_code"]).sort()).toEqual([...Array<number>(10).fill(200), 429])
    expect(receiver.spans.filter((s) => s.kind === 3)).toHaveLength(10)
  })
})
