/**
 * Streamable HTTP targets (a small SDK server on a loopback port), federation over them,
 * session resume on a second gateway holding the same key, and stateless mode.
 */
import * as crypto from "node:crypto"
import { ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js"
import type { ChildProcess } from "node:child_process"
import * as http from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { connectClient } from "../support/McpClient.ts"
import { startFixture, tlsDir } from "../support/mcp/Peers.ts"
import { readFloodSlowly } from "../support/mcp/SlowReader.ts"

const KEY = crypto.randomBytes(32).toString("hex")
const BOTH = "application/json, text/event-stream"
const frames = (text: string) => text.split("\n\n").filter((f) => f.startsWith("event: message\ndata: ")).map((f) => JSON.parse(f.slice("event: message\ndata: ".length)))

/** The gateways form: backend names carry no port, so two in-process replicas name the backend alike. */
const config = (a: number, b: number) => `
config:
  session: {key: "$KEY"}
gateways:
  default: {port: $PORT}
routes:
- name: fed
  matches: [{path: {pathPrefix: /fed}}]
  backends:
  - mcp:
      targets:
      - name: a
        mcp: {host: "http://127.0.0.1:${a}/mcp"}
      - name: b
        mcp: {host: 127.0.0.1, port: ${b}}
- name: stateless
  matches: [{path: {pathPrefix: /stateless}}]
  backends:
  - mcp:
      statefulMode: stateless
      targets:
      - name: a
        mcp: {host: "http://127.0.0.1:${a}/mcp"}
`

describe("MCP Streamable HTTP targets", () => {
  let a: { port: number; child: ChildProcess }
  let b: { port: number; child: ChildProcess }
  let gw1: Running
  let gw2: Running
  let port1: number
  let port2: number
  beforeAll(async () => {
    a = await startFixture("http", "alpha")
    b = await startFixture("http", "beta")
    port1 = await freePort()
    port2 = await freePort()
    gw1 = await startGateway(config(a.port, b.port), { vars: { PORT: port1, KEY } })
    gw2 = await startGateway(config(a.port, b.port), { vars: { PORT: port2, KEY } })
  })
  afterAll(async () => {
    await gw1.stop()
    await gw2.stop()
    a.child.kill()
    b.child.kill()
  })

  it("federates HTTP targets with the SDK client", async () => {
    const { client } = await connectClient(gw1.url(port1, "/fed/mcp"))
    expect(client.getServerVersion()?.name).toBe("agentgateway")
    expect(client.getInstructions()).toContain("[a]\nalpha instructions")
    expect(client.getInstructions()).toContain("[b]\nbeta instructions")
    const names = (await client.listTools()).tools.map((t) => t.name)
    expect(names).toEqual(["a_echo", "a_pid", "a_add-tool", "a_flood", "b_echo", "b_pid", "b_add-tool", "b_flood"])
    expect((await client.callTool({ name: "b_echo", arguments: { text: "hi" } })).content).toEqual([{ type: "text", text: "beta: hi" }])
    // The upstream announces the change on its own stream; the gateway relays it and drops its cached list.
    const changed = new Promise<void>((resolve) => client.setNotificationHandler(ToolListChangedNotificationSchema, () => resolve()))
    await client.callTool({ name: "a_add-tool", arguments: { name: "later" } })
    await changed
    expect((await client.listTools()).tools.map((t) => t.name)).toContain("a_later")
    await client.close()
  })

  it("resumes a session on another gateway with the same key", async () => {
    const { client, transport } = await connectClient(gw1.url(port1, "/fed/mcp"))
    const id = transport.sessionId!
    expect(id).toMatch(/^[A-Za-z0-9_-]+$/)
    const headers = { accept: BOTH, "content-type": "application/json", "mcp-session-id": id, "mcp-protocol-version": "2025-11-25" }
    const res = await fetch(gw2.url(port2, "/fed/mcp"), {
      method: "POST",
      headers,
      body: JSON.stringify({ jsonrpc: "2.0", id: 5, method: "tools/call", params: { name: "a_echo", arguments: { text: "elsewhere" } } })
    })
    expect(res.status).toBe(200)
    expect(frames(await res.text())).toEqual([{ jsonrpc: "2.0", id: 5, result: { content: [{ type: "text", text: "alpha: elsewhere" }] } }])
    // A tampered id is not a session.
    const tampered = id.slice(0, -2) + (id.endsWith("A") ? "BB" : "AA")
    const bad = await fetch(gw2.url(port2, "/fed/mcp"), { method: "POST", headers: { ...headers, "mcp-session-id": tampered }, body: JSON.stringify({ jsonrpc: "2.0", id: 6, method: "ping" }) })
    expect(bad.status).toBe(404)
    await client.close()
  })

  it("keeps memory bounded while a slow client reads a 64 MB stream from an HTTP target", async () => {
    const { client, transport } = await connectClient(gw1.url(port1, "/fed/mcp"))
    const { received, peakMiB, tail } = await readFloodSlowly(gw1.url(port1, "/fed/mcp"), transport.sessionId!, 64 * 1024 * 1024, "a_flood")
    expect(tail).toContain('"text":"done"')
    expect(received).toBeGreaterThan(64 * 1024 * 1024)
    // What the gateway holds of the stream at any time is a few buffers (the upstream socket is paused).
    expect(peakMiB).toBeLessThan(24)
    await client.close()
  }, 60_000)

  it("serves stateless requests without a session", async () => {
    const url = gw1.url(port1, "/stateless/mcp")
    const call = await fetch(url, {
      method: "POST",
      headers: { accept: BOTH, "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "echo", arguments: { text: "once" } } })
    })
    expect(call.status).toBe(200)
    expect(call.headers.get("mcp-session-id")).toBeNull()
    const text = await call.text()
    expect(frames(text)).toEqual([{ jsonrpc: "2.0", id: 1, result: { content: [{ type: "text", text: "alpha: once" }] } }])
    // An answer complete before the head is written goes out whole (one write, no chunked framing).
    expect(call.headers.get("content-length")).toBe(String(Buffer.byteLength(text)))
    expect(call.headers.get("transfer-encoding")).toBeNull()
    expect((await fetch(url, { headers: { accept: "text/event-stream" } })).status).toBe(405)
    expect((await fetch(url, { method: "DELETE" })).status).toBe(405)
    const { client } = await connectClient(url)
    expect((await client.callTool({ name: "echo", arguments: { text: "sdk" } })).content).toEqual([{ type: "text", text: "alpha: sdk" }])
    await client.close()
  })
})

describe("https MCP targets", () => {
  let http: { port: number; child: ChildProcess }
  let sse: { port: number; child: ChildProcess }
  let gw: Running
  let port: number
  beforeAll(async () => {
    http = await startFixture("http", "secure", true)
    sse = await startFixture("sse", "secure-sse", true)
    port = await freePort()
    const route = (name: string, target: string, tls: string) => `
- name: ${name}
  matches: [{path: {pathPrefix: /${name}}}]
  backends:
  - mcp:
      targets:
      - name: t
        ${target}${tls === "" ? "" : `
    policies:
      backendTLS: ${tls}`}`
    gw = await startGateway(`
gateways:
  default: {port: $PORT}
routes:${route("verified", `mcp: {host: "https://localhost:${http.port}/mcp"}`, `{root: "${tlsDir}/ca.pem"}`)}${
      route("sse", `sse: {host: "https://localhost:${sse.port}/sse"}`, `{root: "${tlsDir}/ca.pem"}`)
    }${route("untrusted", `mcp: {host: "https://localhost:${http.port}/mcp"}`, "")}${
      route("wrongname", `mcp: {host: "https://localhost:${http.port}/mcp"}`, `{root: "${tlsDir}/ca.pem", hostname: other.example}`)
    }
`, { vars: { PORT: port } })
  })
  afterAll(async () => {
    await gw.stop()
    http.child.kill()
    sse.child.kill()
  })

  it("calls Streamable HTTP and SSE targets over TLS verified with backendTLS", async () => {
    for (const [path, text] of [["/verified/mcp", "secure: tls"], ["/sse/mcp", "secure-sse: tls"]] as const) {
      const { client } = await connectClient(gw.url(port, path))
      expect((await client.callTool({ name: "echo", arguments: { text: "tls" } })).content).toEqual([{ type: "text", text }])
      await client.close()
    }
  })

  it("refuses a certificate the system roots do not trust, or one for another name", async () => {
    for (const path of ["/untrusted/mcp", "/wrongname/mcp"]) {
      const failed = await connectClient(gw.url(port, path)).then(() => "connected", (e: Error) => e.message)
      expect(failed).toContain("failed to send message: t: upstream connection failed")
    }
  })
})

describe("an upstream whose server stream ends and that never answers DELETE", () => {
  let server: http.Server
  let gw: Running
  let port: number
  let deletes = 0
  let gets = 0
  beforeAll(async () => {
    // Speaks just enough Streamable HTTP: initialize with a session id, 202 for notifications, and a DELETE left hanging.
    server = http.createServer((req, res) => {
      if (req.method === "DELETE") {
        deletes++
        return
      }
      if (req.method === "GET") {
        // The first server stream ends at once; a later one stays open and announces a change.
        gets++
        res.writeHead(200, { "content-type": "text/event-stream" })
        if (gets === 1) return void res.end()
        res.write(`event: message\ndata: ${JSON.stringify({ jsonrpc: "2.0", method: "notifications/tools/list_changed" })}\n\n`)
        return
      }
      let body = ""
      req.on("data", (c: Buffer) => (body += c))
      req.on("end", () => {
        const message = JSON.parse(body) as { id?: number; method: string }
        if (message.id === undefined) return void res.writeHead(202).end()
        res.writeHead(200, { "content-type": "application/json", "mcp-session-id": "up-1" })
        res.end(JSON.stringify({ jsonrpc: "2.0", id: message.id, result: { protocolVersion: "2025-06-18", capabilities: {}, serverInfo: { name: "stall", version: "1" } } }))
      })
    })
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()))
    port = await freePort()
    const upstream = (server.address() as { port: number }).port
    gw = await startGateway(`
gateways:
  default: {port: $PORT}
routes:
- backends:
  - mcp:
      targets:
      - name: stall
        mcp: {host: "http://127.0.0.1:${upstream}/mcp"}
`, { vars: { PORT: port } })
  })
  afterAll(async () => {
    await gw.stop()
    server.closeAllConnections()
    server.close()
  })

  it("reopens the upstream's server stream when the client listens again after it ended", async () => {
    const { client } = await connectClient(gw.url(port, "/mcp"))
    const changed = new Promise<void>((resolve) => client.setNotificationHandler(ToolListChangedNotificationSchema, () => resolve()))
    await changed
    expect(gets).toBeGreaterThanOrEqual(2)
    await client.close()
  })

  it("ends the session anyway (the upstream DELETE has a deadline)", async () => {
    const init = await fetch(gw.url(port, "/mcp"), {
      method: "POST",
      headers: { accept: BOTH, "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } } })
    })
    expect(init.status).toBe(200)
    await init.text()
    const id = init.headers.get("mcp-session-id")!
    const ended = await fetch(gw.url(port, "/mcp"), { method: "DELETE", headers: { "mcp-session-id": id } })
    expect(ended.status).toBe(202)
    expect(deletes).toBeGreaterThanOrEqual(1)
  })
})
