/**
 * Child spans and request-span attributes through real sockets: the real gateway from YAML, a
 * real OTLP/HTTP receiver that decodes the protobuf it receives, and real side-services — a
 * grpc-js ext authz peer, an HTTP ext authz peer, a grpc-js rate limit service, a Streamable
 * HTTP MCP server (JSON answers) and a JSON-RPC agent behind the `a2a` policy. Each test sends
 * its own sampled `traceparent`, so spans are told apart by trace id; each asserts the child's
 * parent id, its attributes, and that the service received the child's own context.
 */
import type { IncomingHttpHeaders } from "node:http"
import * as http from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { send } from "../support/Client.ts"
import { allowResponse, type GrpcPeer, type HttpPeer, startGrpcPeer, startHttpPeer } from "../support/ExtAuthzPeers.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { type ReceivedSpan, type Receiver, startHttpReceiver } from "../support/Otlp.ts"
import { type RateLimitService, startRateLimitService } from "../support/RateLimitService.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"

const PARENT = "00f067aa0ba902b7"
const SERVER = 2
const CLIENT = 3
const ERROR = 2

const traceparent = (trace: string) => `00-${trace}-${PARENT}-01`
const childContext = (trace: string, span: ReceivedSpan) => `00-${trace}-${span.spanId}-01`

const spansOf = async (receiver: Receiver, traceId: string, count: number): Promise<Array<ReceivedSpan>> => {
  for (let i = 0; i < 400; i++) {
    const found = receiver.spans.filter((s) => s.traceId === traceId)
    if (found.length >= count) return found
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`expected ${count} spans of ${traceId}, have ${receiver.spans.filter((s) => s.traceId === traceId).length}`)
}

const serverSpan = (spans: ReadonlyArray<ReceivedSpan>) => {
  const found = spans.filter((s) => s.kind === SERVER)
  expect(found).toHaveLength(1)
  return found[0]!
}

/** A Streamable HTTP MCP server answering with JSON; it records every message's method and headers. */
interface McpServer {
  readonly port: number
  readonly calls: Array<{ readonly method: string | undefined; readonly headers: IncomingHttpHeaders }>
  readonly close: () => Promise<void>
}

const startMcpServer = (): Promise<McpServer> => {
  const calls: McpServer["calls"] = []
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      if (req.method !== "POST") return void res.writeHead(405).end()
      const message = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { id?: number; method?: string; params?: { name?: string } }
      calls.push({ method: message.method, headers: req.headers })
      if (message.id === undefined) return void res.writeHead(202).end()
      const answer = (body: object) => {
        res.writeHead(200, { "content-type": "application/json", "mcp-session-id": "upstream-session" })
        res.end(JSON.stringify({ jsonrpc: "2.0", id: message.id, ...body }))
      }
      switch (message.method) {
        case "initialize":
          return answer({ result: { protocolVersion: "2025-06-18", capabilities: { tools: {} }, serverInfo: { name: "fake", version: "1.0.0" } } })
        case "tools/list":
          return answer({ result: { tools: [{ name: "echo", inputSchema: { type: "object" } }, { name: "broken", inputSchema: { type: "object" } }] } })
        case "tools/call":
          return message.params?.name === "broken"
            ? answer({ error: { code: -32000, message: "tool exploded" } })
            : answer({ result: { content: [{ type: "text", text: "echoed" }] } })
        default:
          return answer({ error: { code: -32601, message: "Method not found" } })
      }
    })
  })
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      resolve({
        port,
        calls,
        close: () => new Promise<void>((r) => {
          server.closeAllConnections()
          server.close(() => r())
        })
      })
    })
  )
}

const MCP_HEADERS = { accept: "application/json, text/event-stream", "content-type": "application/json", "mcp-protocol-version": "2025-06-18" }

const rpc = (id: number | undefined, method: string, params: object = {}) =>
  JSON.stringify(id === undefined ? { jsonrpc: "2.0", method, params } : { jsonrpc: "2.0", id, method, params })

const config = `
frontendPolicies:
  tracing:
    host: 127.0.0.1:$COLLECTOR
    protocol: http
    randomSampling: true
    remove: [url.scheme]
    attributes:
      tenant: 'request.headers["x-tenant"]'
      auth: 'request.headers["authorization"]'
      route: '"replaced-" + request.path'
      code: 'response.code'
      span.name: 'request.headers["x-span-name"]'
binds:
- port: $PORT
  listeners:
  - name: web
    routes:
    - name: authz-grpc
      matches: [{path: {pathPrefix: /authz-grpc}}]
      policies:
        extAuthz: {host: 127.0.0.1:$GRPC_AUTHZ}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: authz-http
      matches: [{path: {pathPrefix: /authz-http}}]
      policies:
        extAuthz: {host: 127.0.0.1:$HTTP_AUTHZ, protocol: {http: {}}}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: limited
      matches: [{path: {pathPrefix: /limited}}]
      policies:
        remoteRateLimit:
          host: 127.0.0.1:$RLS
          domain: shop
          descriptors:
          - entries: [{key: user, value: 'request.headers["x-user"]'}]
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: mcp
      matches: [{path: {pathPrefix: /mcp}}]
      backends:
      - mcp:
          targets:
          - name: fake
            mcp: {host: "http://127.0.0.1:$MCP/mcp"}
    - name: agent
      matches: [{path: {pathPrefix: /agent}}]
      policies: {a2a: {}}
      backends: [{host: 127.0.0.1:$AGENT}]
    - name: plain
      matches: [{path: {pathPrefix: /plain}}]
      backends: [{host: 127.0.0.1:$UPSTREAM}]
`

describe("tracing: child spans and request-span attributes", () => {
  let receiver: Receiver
  let upstream: Upstream
  let grpcAuthz: GrpcPeer
  let httpAuthz: HttpPeer
  let rls: RateLimitService
  let mcp: McpServer
  let agent: HttpPeer
  let gw: Running
  let port: number

  beforeAll(async () => {
    receiver = await startHttpReceiver()
    upstream = await startUpstream()
    grpcAuthz = await startGrpcPeer(() => allowResponse)
    httpAuthz = await startHttpPeer((call) => (call.headers["authorization"] === "deny" ? { status: 403, body: "no" } : { status: 200 }))
    rls = await startRateLimitService([{ match: [{ key: "user", value: "limited" }], requestsPerUnit: 1, unit: "hour" }])
    mcp = await startMcpServer()
    agent = await startHttpPeer(() => ({
      status: 200,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, result: { kind: "task", id: "t-1", contextId: "ctx-7", status: { state: "completed" } } })
    }))
    port = await freePort()
    gw = await startGateway(config, {
      vars: {
        PORT: port,
        COLLECTOR: receiver.port,
        UPSTREAM: upstream.port,
        GRPC_AUTHZ: grpcAuthz.port,
        HTTP_AUTHZ: httpAuthz.port,
        RLS: rls.port,
        MCP: mcp.port,
        AGENT: agent.port
      }
    })
  })
  afterAll(async () => {
    await gw?.stop()
    await Promise.all([receiver?.close(), upstream?.close(), grpcAuthz?.close(), httpAuthz?.close(), rls?.close(), mcp?.close(), agent?.close()])
  })

  it("gRPC ext authz: a CLIENT child span whose context is the Check call's traceparent metadata", async () => {
    const trace = "a1".repeat(16)
    expect((await send(port, "GET", "/authz-grpc/x", { traceparent: traceparent(trace) })).status).toBe(200)
    const spans = await spansOf(receiver, trace, 3)
    const server = serverSpan(spans)
    const authz = spans.find((s) => s.name === "ext_authz")!
    expect(authz.kind).toBe(CLIENT)
    expect(authz.parentSpanId).toBe(server.spanId)
    expect(authz.attributes).toEqual({
      "rpc.system": "grpc",
      "rpc.service": "envoy.service.auth.v3.Authorization",
      "rpc.method": "Check",
      "rpc.grpc.status_code": 0,
      "server.address": `127.0.0.1:${grpcAuthz.port}`,
      "ext_authz.decision": "allow"
    })
    expect(authz.statusCode).toBe(0)
    expect(authz.start >= server.start && authz.end <= server.end).toBe(true)
    expect(grpcAuthz.metadata.at(-1)?.get("traceparent")).toEqual([childContext(trace, authz)])
    // The upstream call is a sibling of the check, not its child.
    const call = spans.find((s) => s.name.startsWith("upstream "))!
    expect(call.parentSpanId).toBe(server.spanId)
    expect(call.spanId).not.toBe(authz.spanId)
  })

  it("HTTP ext authz: the span records the service's status and decision; the service gets the child's traceparent", async () => {
    const trace = "a2".repeat(16)
    expect((await send(port, "GET", "/authz-http/x", { traceparent: traceparent(trace), authorization: "deny" })).status).toBe(403)
    const spans = await spansOf(receiver, trace, 2)
    const server = serverSpan(spans)
    const authz = spans.find((s) => s.name === "ext_authz")!
    expect(authz.parentSpanId).toBe(server.spanId)
    expect(authz.attributes).toEqual({
      "server.address": `127.0.0.1:${httpAuthz.port}`,
      "http.request.method": "GET",
      "url.path": "/authz-http/x",
      "http.response.status_code": 403,
      "ext_authz.decision": "deny",
      "ext_authz.status": 403
    })
    expect(httpAuthz.calls.at(-1)?.headers["traceparent"]).toBe(childContext(trace, authz))
    expect(server.attributes["http.response.status_code"]).toBe(403)
  })

  it("remote rate limit: a child span per decision, over_limit recorded, context in the call's metadata", async () => {
    const first = "b1".repeat(16)
    const second = "b2".repeat(16)
    expect((await send(port, "GET", "/limited/x", { traceparent: traceparent(first), "x-user": "limited" })).status).toBe(200)
    expect((await send(port, "GET", "/limited/x", { traceparent: traceparent(second), "x-user": "limited" })).status).toBe(429)
    const allowed = await spansOf(receiver, first, 3)
    const limited = await spansOf(receiver, second, 2)
    const limitSpan = (spans: ReadonlyArray<ReceivedSpan>) => {
      const rl = spans.find((s) => s.name === "remote_rate_limit")!
      expect(rl.kind).toBe(CLIENT)
      expect(rl.parentSpanId).toBe(serverSpan(spans).spanId)
      return rl
    }
    const a = limitSpan(allowed)
    const b = limitSpan(limited)
    expect(a.attributes).toEqual({
      "ratelimit.descriptors": 1,
      "rpc.system": "grpc",
      "rpc.service": "envoy.service.ratelimit.v3.RateLimitService",
      "rpc.method": "ShouldRateLimit",
      "server.address": `127.0.0.1:${rls.port}`,
      "ratelimit.domain": "shop",
      "ratelimit.over_limit": false
    })
    expect(b.attributes["ratelimit.over_limit"]).toBe(true)
    // The 429 is the policy's answer, not a failed call: the span is not an error.
    expect(b.statusCode).toBe(0)
    expect(rls.requests.slice(-2).map((r) => r.metadata["traceparent"])).toEqual([childContext(first, a), childContext(second, b)])
  })

  it("MCP: one CLIENT span per upstream request with mcp.target, mcp.method.name and gen_ai.tool.name", async () => {
    const init = "c1".repeat(16)
    const opened = await send(port, "POST", "/mcp", { ...MCP_HEADERS, traceparent: traceparent(init) }, {
      body: rpc(1, "initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } })
    })
    expect(opened.status).toBe(200)
    const session = opened.headers["mcp-session-id"]
    expect(typeof session).toBe("string")
    const withSession = { ...MCP_HEADERS, "mcp-session-id": String(session) }
    expect((await send(port, "POST", "/mcp", withSession, { body: rpc(undefined, "notifications/initialized") })).status).toBe(202)

    const initSpans = await spansOf(receiver, init, 2)
    const initialize = initSpans.find((s) => s.kind === CLIENT)!
    expect(initialize.name).toBe("initialize fake")
    expect(initialize.parentSpanId).toBe(serverSpan(initSpans).spanId)
    expect(initialize.attributes).toEqual({ "mcp.method.name": "initialize", "mcp.target": "fake" })
    expect(mcp.calls.find((c) => c.method === "initialize")?.headers["traceparent"]).toBe(childContext(init, initialize))

    const call = "c2".repeat(16)
    const answered = await send(port, "POST", "/mcp", { ...withSession, traceparent: traceparent(call) }, { body: rpc(2, "tools/call", { name: "echo", arguments: {} }) })
    expect(answered.status).toBe(200)
    expect(answered.body).toContain("echoed")
    const spans = await spansOf(receiver, call, 2)
    const server = serverSpan(spans)
    const tool = spans.find((s) => s.kind === CLIENT)!
    expect(spans).toHaveLength(2)
    expect(tool.name).toBe("tools/call fake")
    expect(tool.parentSpanId).toBe(server.spanId)
    expect(tool.attributes).toEqual({
      "mcp.method.name": "tools/call",
      "mcp.target": "fake",
      "gen_ai.tool.name": "echo",
      "gen_ai.operation.name": "execute_tool"
    })
    expect(tool.statusCode).toBe(0)
    expect(mcp.calls.filter((c) => c.method === "tools/call").at(-1)?.headers["traceparent"]).toBe(childContext(call, tool))
    expect(server.attributes).toMatchObject({ protocol: "mcp", "mcp.method.name": "tools/call", "mcp.target": "fake", "gen_ai.tool.name": "echo" })

    const broken = "c3".repeat(16)
    await send(port, "POST", "/mcp", { ...withSession, traceparent: traceparent(broken) }, { body: rpc(3, "tools/call", { name: "broken", arguments: {} }) })
    const failed = (await spansOf(receiver, broken, 2)).find((s) => s.kind === CLIENT)!
    expect(failed.statusCode).toBe(ERROR)
    expect(failed.attributes).toMatchObject({ "gen_ai.tool.name": "broken", "rpc.response.status_code": -32000, error: "JSON-RPC error -32000" })
  })

  it("A2A: the request span carries a2a.method and the answer's outcome, kind, state and context", async () => {
    const trace = "d1".repeat(16)
    const reply = await send(port, "POST", "/agent/a2a/jsonrpc", { traceparent: traceparent(trace), "content-type": "application/json" }, {
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "message/send", params: { message: { role: "user", parts: [{ kind: "text", text: "hi" }], messageId: "m1" } } })
    })
    expect(reply.status).toBe(200)
    const server = serverSpan(await spansOf(receiver, trace, 2))
    expect(server.attributes).toMatchObject({
      protocol: "a2a",
      "a2a.method": "message/send",
      "a2a.response.outcome": "success",
      "a2a.result.kind": "task",
      "a2a.task.state": "completed",
      "a2a.context.id": "ctx-7"
    })
    expect(server.attributes["mcp.method.name"]).toBeUndefined()
  })

  it("custom attributes from CEL: added after remove, secrets redacted, a default replaced, span.name renames", async () => {
    const trace = "e1".repeat(16)
    const reply = await send(port, "GET", "/plain/x", { traceparent: traceparent(trace), "x-tenant": "acme", authorization: "Bearer secret-token", "x-span-name": "renamed" })
    expect(reply.status).toBe(200)
    const server = serverSpan(await spansOf(receiver, trace, 2))
    expect(server.name).toBe("renamed")
    expect(server.attributes).toMatchObject({ tenant: "acme", auth: "<redacted>", route: "replaced-/plain/x", code: 200, protocol: "http" })
    expect(server.attributes["url.scheme"]).toBeUndefined()
    expect(server.attributes["span.name"]).toBeUndefined()
    expect(JSON.stringify(server.attributes)).not.toContain("secret-token")

    // Without the inputs the expressions fail: the attributes are left out, the name is the default.
    const plain = "e2".repeat(16)
    expect((await send(port, "GET", "/plain/y", { traceparent: traceparent(plain) })).status).toBe(200)
    const bare = serverSpan(await spansOf(receiver, plain, 2))
    expect(bare.name).toBe("GET /plain/*")
    expect(bare.attributes["tenant"]).toBeUndefined()
    expect(bare.attributes["auth"]).toBeUndefined()
  })
})

describe("tracing off", () => {
  let upstream: Upstream
  let grpcAuthz: GrpcPeer
  let mcp: McpServer
  let gw: Running
  let port: number

  beforeAll(async () => {
    upstream = await startUpstream()
    grpcAuthz = await startGrpcPeer(() => allowResponse)
    mcp = await startMcpServer()
    port = await freePort()
    gw = await startGateway(
      `
binds:
- port: $PORT
  listeners:
  - routes:
    - name: authz
      matches: [{path: {pathPrefix: /authz}}]
      policies: {extAuthz: {host: 127.0.0.1:$GRPC_AUTHZ}}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: mcp
      matches: [{path: {pathPrefix: /mcp}}]
      backends: [{mcp: {targets: [{name: fake, mcp: {host: "http://127.0.0.1:$MCP/mcp"}}]}}]
`,
      { vars: { PORT: port, UPSTREAM: upstream.port, GRPC_AUTHZ: grpcAuthz.port, MCP: mcp.port } }
    )
  })
  afterAll(async () => {
    await gw?.stop()
    await Promise.all([upstream?.close(), grpcAuthz?.close(), mcp?.close()])
  })

  it("sends no trace context of its own to side-services and MCP targets", async () => {
    expect((await send(port, "GET", "/authz/x")).status).toBe(200)
    expect(grpcAuthz.metadata.at(-1)?.get("traceparent")).toEqual([])
    const opened = await send(port, "POST", "/mcp", MCP_HEADERS, {
      body: rpc(1, "initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } })
    })
    expect(opened.status).toBe(200)
    expect(mcp.calls.find((c) => c.method === "initialize")?.headers["traceparent"]).toBeUndefined()
  })
})
