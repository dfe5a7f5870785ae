/**
 * Legacy SSE end to end: the SSE frontend (`GET /sse` + `POST /sse?sessionId=`) with the
 * official SDK `SSEClientTransport` in front of server-everything over stdio, single and
 * federated; SSE targets (a small SDK server on `SSEServerTransport`) behind the Streamable
 * HTTP frontend; and the Origin / DNS-rebinding checks on both frontends over real sockets.
 */
import * as net from "node:net"
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js"
import { LoggingMessageNotificationSchema, ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as SseFrontend from "../../src/mcp/Sse.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { connectClient } from "../support/McpClient.ts"
import { alive, everything, fixture, startFixture, waitFor } from "../support/mcp/Peers.ts"

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "agw-mcp-sse-"))
const INIT = { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2024-11-05", capabilities: {}, clientInfo: { name: "raw", version: "0" } } }


const sseClient = async (url: string) => {
  const client = new Client({ name: "test", version: "1.0.0" }, { capabilities: {} })
  await client.connect(new SSEClientTransport(new URL(url)))
  return client
}

interface Event {
  readonly event: string
  readonly data: string
}

/** A raw `GET /sse`: its status, headers and events as they come. */
const openStream = (port: number, pathname: string, headers: Record<string, string> = {}) =>
  new Promise<{ status: number; headers: http.IncomingHttpHeaders; next: () => Promise<Event>; close: () => void; body: () => Promise<string> }>((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: pathname, headers: { accept: "text/event-stream", ...headers } }, (res) => {
      const events: Array<Event> = []
      const waiters: Array<(e: Event) => void> = []
      let buffer = ""
      let text = ""
      let ended = false
      const endWaiters: Array<() => void> = []
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => {
        text += chunk
        buffer += chunk
        let i
        while ((i = buffer.indexOf("\n\n")) !== -1) {
          const block = buffer.slice(0, i)
          buffer = buffer.slice(i + 2)
          const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message"
          const data = [...block.matchAll(/^data: (.*)$/gm)].map((m) => m[1]).join("\n")
          if (data === "") continue
          const e = { event, data }
          const w = waiters.shift()
          if (w !== undefined) w(e)
          else events.push(e)
        }
      })
      res.on("end", () => {
        ended = true
        for (const w of endWaiters.splice(0)) w()
      })
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        next: () => new Promise((r) => {
          const e = events.shift()
          if (e !== undefined) r(e)
          else waiters.push(r)
        }),
        close: () => req.destroy(),
        body: () => new Promise((r) => (ended ? r(text) : endWaiters.push(() => r(text))))
      })
    })
    req.on("error", reject)
  })

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) })

/** A request with a Host and Origin of the test's choosing (fetch would not send them). */
const rawPost = (port: number, pathname: string, headers: Record<string, string | Array<string>>, body: unknown) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: pathname, method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...headers } }, (res) => {
      let text = ""
      res.setEncoding("utf8")
      res.on("data", (c: string) => (text += c))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }))
    })
    req.on("error", reject)
    req.end(JSON.stringify(body))
  })

describe("MCP legacy SSE frontend", () => {
  let gw: Running
  let one: number
  let two: number
  let fx: number
  const pidFile = path.join(tmp, "pid")
  beforeAll(async () => {
    one = await freePort()
    two = await freePort()
    fx = await freePort()
    gw = await startGateway(
      `
binds:
- port: $ONE
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - name: everything
            stdio: {cmd: "${process.execPath}", args: ["${everything}", "stdio"]}
- port: $TWO
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - name: a
            stdio: {cmd: "${process.execPath}", args: ["${everything}", "stdio"]}
          - name: b
            stdio: {cmd: "${process.execPath}", args: ["${everything}", "stdio"]}
- port: $FX
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - name: fx
            stdio: {cmd: "${process.execPath}", args: ["${fixture}", "stdio"], env: {FIXTURE_PID_FILE: "${pidFile}"}}
`,
      { vars: { ONE: one, TWO: two, FX: fx } }
    )
  })
  afterAll(async () => {
    await gw.stop()
  })

  it("serves the SDK SSE client: tools, prompts, resources through one target", async () => {
    const client = await sseClient(gw.url(one, "/sse"))
    expect(client.getServerVersion()?.name).toBe("mcp-servers/everything")
    expect((await client.listTools()).tools.map((t) => t.name)).toContain("echo")
    expect((await client.callTool({ name: "echo", arguments: { message: "hi" } })).content).toEqual([{ type: "text", text: "Echo: hi" }])
    expect((await client.listPrompts()).prompts.map((p) => p.name)).toContain("simple-prompt")
    const resources = await client.listResources()
    const first = resources.resources[0]!
    expect((await client.readResource({ uri: first.uri })).contents[0]?.uri).toBe(first.uri)
    await client.close()
  })

  it("federates two targets for the SDK SSE client", async () => {
    const client = await sseClient(gw.url(two, "/sse"))
    expect(client.getServerVersion()?.name).toBe("agentgateway")
    const names = (await client.listTools()).tools.map((t) => t.name)
    expect(names).toContain("a_echo")
    expect(names).toContain("b_echo")
    expect(names).not.toContain("echo")
    expect((await client.callTool({ name: "b_echo", arguments: { message: "there" } })).content).toEqual([{ type: "text", text: "Echo: there" }])
    const denied = await client.callTool({ name: "c_echo", arguments: { message: "x" } }).then(() => "answered", (e: Error) => e.message)
    expect(denied).toContain("Unknown tool: c_echo")
    await client.close()
  })

  it("speaks the wire format: endpoint event, 202, replies on the stream; closing ends the session", async () => {
    fs.rmSync(pidFile, { force: true })
    const stream = await openStream(fx, "/sse")
    expect(stream.status).toBe(200)
    expect(stream.headers["content-type"]).toBe("text/event-stream")
    expect(stream.headers["cache-control"]).toBe("no-cache")
    const endpoint = await stream.next()
    expect(endpoint.event).toBe("endpoint")
    expect(endpoint.data).toMatch(/^\/sse\?sessionId=[0-9a-f-]{36}$/)
    const url = gw.url(fx, endpoint.data)
    const init = await post(url, INIT)
    expect(init.status).toBe(202)
    expect(await init.text()).toBe("Accepted")
    const initReply = await stream.next()
    expect(initReply.event).toBe("message")
    expect(JSON.parse(initReply.data)).toMatchObject({ jsonrpc: "2.0", id: 1, result: { serverInfo: { name: "fixture" } } })
    expect((await post(url, { jsonrpc: "2.0", method: "notifications/initialized" })).status).toBe(202)
    expect((await post(url, { jsonrpc: "2.0", id: "x", method: "tools/call", params: { name: "echo", arguments: { text: "wire" } } })).status).toBe(202)
    expect(JSON.parse((await stream.next()).data)).toEqual({ jsonrpc: "2.0", id: "x", result: { content: [{ type: "text", text: "fixture: wire" }] } })
    // Bad input on a live session.
    const bad = await post(url, "{not json")
    expect(bad.status).toBe(400)
    expect(((await bad.json()) as { error: { code: number } }).error.code).toBe(-32700)
    expect((await post(url, INIT, { "content-type": "text/plain" })).status).toBe(415)
    expect(await waitFor(() => fs.existsSync(pidFile) && fs.readFileSync(pidFile, "utf8") !== "")).toBe(true)
    const pid = Number(fs.readFileSync(pidFile, "utf8"))
    expect(alive(pid)).toBe(true)
    stream.close()
    expect(await waitFor(() => !alive(pid))).toBe(true)
    const gone = await post(url, { jsonrpc: "2.0", id: 2, method: "ping" })
    expect(gone.status).toBe(404)
    expect(await gone.text()).toBe("session not found")
  })

  it("answers 429 once MAX_IN_FLIGHT replies wait for a client that does not read its stream", async () => {
    // A raw stream that reads the endpoint event and then stops reading.
    const { res, endpoint } = await new Promise<{ res: http.IncomingMessage; endpoint: string }>((resolve, reject) => {
      http.get({ host: "127.0.0.1", port: fx, path: "/sse", headers: { accept: "text/event-stream" } }, (res) => {
        res.setEncoding("utf8")
        let text = ""
        const onData = (chunk: string) => {
          text += chunk
          const m = /event: endpoint\ndata: (.*)\n/.exec(text)
          if (m === null) return
          res.off("data", onData)
          res.pause()
          resolve({ res, endpoint: m[1]! })
        }
        res.on("data", onData)
      }).on("error", reject)
    })
    const url = gw.url(fx, endpoint)
    expect((await post(url, INIT)).status).toBe(202)
    expect((await post(url, { jsonrpc: "2.0", method: "notifications/initialized" })).status).toBe(202)
    const big = "x".repeat(256 * 1024)
    const statuses: Array<number> = []
    for (let i = 0; i < SseFrontend.MAX_IN_FLIGHT + 16; i++) {
      statuses.push((await post(url, { jsonrpc: "2.0", id: 100 + i, method: "tools/call", params: { name: "echo", arguments: { text: big } } })).status)
    }
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0)
    expect(statuses.filter((s) => s !== 202 && s !== 429)).toEqual([])
    // Reading again drains the replies; then the session takes requests again.
    res.resume()
    const accepted = statuses.filter((s) => s === 202).length
    const seen = new Set<number>()
    await new Promise<void>((resolve) => {
      let buffer = ""
      res.on("data", (chunk: string) => {
        buffer += chunk
        for (const m of buffer.matchAll(/"id":(\d+),"result"/g)) seen.add(Number(m[1]))
        buffer = buffer.slice(-64)
        if ([...seen].filter((id) => id >= 100).length >= accepted) resolve()
      })
    })
    expect((await post(url, { jsonrpc: "2.0", id: 1000, method: "ping" })).status).toBe(202)
    res.destroy()
  }, 30_000)

  it("answers the session rules of the POST endpoint", async () => {
    const missing = await post(gw.url(fx, "/sse"), INIT)
    expect(missing.status).toBe(400)
    expect(await missing.text()).toBe("sessionId is required")
    const unknown = await post(gw.url(fx, "/sse?sessionId=00000000-0000-0000-0000-000000000000"), INIT)
    expect(unknown.status).toBe(404)
    expect((await fetch(gw.url(fx, "/sse"), { method: "DELETE" })).status).toBe(405)
    expect((await openStream(fx, "/sse", { accept: "application/json" })).status).toBe(406)
    // A session id from the SSE frontend is not a Streamable HTTP session.
    const stream = await openStream(fx, "/sse")
    const id = new URLSearchParams((await stream.next()).data.split("?")[1]).get("sessionId")!
    const res = await post(gw.url(fx, "/mcp"), { jsonrpc: "2.0", id: 2, method: "ping" }, { accept: "application/json, text/event-stream", "mcp-session-id": id })
    expect(res.status).toBe(404)
    stream.close()
  })
})

describe("MCP SSE targets", () => {
  let a: { port: number; child: ChildProcess }
  let b: { port: number; child: ChildProcess }
  let gw: Running
  let port: number
  let dead: number
  /** Accepts and at once drops every connection: a target that fails on every call, on a port no other test can take. */
  let dropper: net.Server
  beforeAll(async () => {
    a = await startFixture("sse", "alpha")
    b = await startFixture("sse", "beta")
    port = await freePort()
    dropper = net.createServer((socket) => socket.destroy())
    await new Promise<void>((resolve) => dropper.listen(0, "127.0.0.1", resolve))
    const address = dropper.address()
    dead = typeof address === "object" && address !== null ? address.port : 0
    gw = await startGateway(
      `
binds:
- port: $PORT
  listeners:
  - routes:
    - name: fed
      matches: [{path: {pathPrefix: /fed}}]
      backends:
      - mcp:
          targets:
          - name: a
            sse: {host: "http://127.0.0.1:${a.port}/sse"}
          - name: b
            sse: {host: 127.0.0.1, port: ${b.port}}
    - name: single
      matches: [{path: {pathPrefix: /single}}]
      backends:
      - mcp:
          targets:
          - name: a
            sse: {host: 127.0.0.1, port: ${a.port}, path: /sse}
    - name: dead
      matches: [{path: {pathPrefix: /dead}}]
      backends:
      - mcp:
          targets:
          - name: gone
            sse: {host: 127.0.0.1, port: ${dead}}
    - name: legacy
      backends:
      - mcp:
          targets:
          - name: a
            sse: {host: 127.0.0.1, port: ${a.port}}
          - name: b
            sse: {host: 127.0.0.1, port: ${b.port}}
`,
      { vars: { PORT: port } }
    )
  })
  afterAll(async () => {
    await gw.stop()
    a.child.kill()
    b.child.kill()
    await new Promise<void>((resolve) => dropper.close(() => resolve()))
  })

  it("federates SSE targets for a Streamable HTTP client, relaying list_changed", async () => {
    const { client } = await connectClient(gw.url(port, "/fed/mcp"))
    expect(client.getInstructions()).toContain("[a]\nalpha instructions")
    expect(client.getInstructions()).toContain("[b]\nbeta instructions")
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(["a_echo", "a_pid", "a_add-tool", "a_flood", "b_echo", "b_pid", "b_add-tool", "b_flood"])
    expect((await client.callTool({ name: "b_echo", arguments: { text: "hi" } })).content).toEqual([{ type: "text", text: "beta: hi" }])
    const changed = new Promise<void>((resolve) => client.setNotificationHandler(ToolListChangedNotificationSchema, () => resolve()))
    await client.callTool({ name: "a_add-tool", arguments: { name: "later" } })
    await changed
    expect((await client.listTools()).tools.map((t) => t.name)).toContain("a_later")
    // Concurrent calls on one upstream stream are matched by id.
    const texts = await Promise.all(["1", "2", "3", "4"].map((t) => client.callTool({ name: "a_echo", arguments: { text: t } })))
    expect(texts.map((r) => r.content)).toEqual(["1", "2", "3", "4"].map((t) => [{ type: "text", text: `alpha: ${t}` }]))
    await client.close()
  })

  it("passes one SSE target through and streams its notifications with the reply", async () => {
    const { client } = await connectClient(gw.url(port, "/single/mcp"))
    expect(client.getServerVersion()?.name).toBe("alpha")
    const logs: Array<number> = []
    client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void logs.push(String(n.params.data).length))
    const result = await client.callTool({ name: "flood", arguments: { bytes: 4096, chunk: 1024 } })
    expect(result.content).toEqual([{ type: "text", text: "done" }])
    expect(logs).toEqual([1024, 1024, 1024, 1024])
    await client.close()
  })

  it("serves SSE targets to an SSE client (SSE on both sides)", async () => {
    const client = await sseClient(gw.url(port, "/sse"))
    expect((await client.callTool({ name: "a_echo", arguments: { text: "both" } })).content).toEqual([{ type: "text", text: "alpha: both" }])
    await client.close()
  })

  it("answers an unreachable SSE target with a JSON-RPC error that carries no upstream detail", async () => {
    const res = await post(gw.url(port, "/dead/mcp"), { ...INIT, params: { ...INIT.params, protocolVersion: "2025-06-18" } }, { accept: "application/json, text/event-stream" })
    expect(res.status).toBe(500)
    const body = (await res.json()) as { id: number; error: { code: number; message: string } }
    expect(body.id).toBe(1)
    expect(body.error.code).toBe(-32603)
    // The socket error stays in the gateway's log.
    expect(body.error.message).toBe("failed to send message: gone: upstream connection failed")
  })
})

describe("MCP Origin and DNS-rebinding checks", () => {
  let gw: Running
  let port: number
  beforeAll(async () => {
    port = await freePort()
    gw = await startGateway(
      `
binds:
- port: $PORT
  listeners:
  - routes:
    - name: guarded
      matches: [{path: {pathPrefix: /guarded}}, {path: {exact: /sse}}]
      backends:
      - mcp:
          dnsRebindingProtection: true
          targets:
          - name: everything
            stdio: {cmd: "${process.execPath}", args: ["${everything}", "stdio"]}
    - name: open
      backends:
      - mcp:
          targets:
          - name: everything
            stdio: {cmd: "${process.execPath}", args: ["${everything}", "stdio"]}
`,
      { vars: { PORT: port } }
    )
  })
  afterAll(async () => {
    await gw.stop()
  })

  const REBINDING = "MCP DNS rebinding protection: Host/Origin must be localhost, 127.0.0.1, or [::1]"
  const init = { ...INIT, params: { ...INIT.params, protocolVersion: "2025-06-18" } }

  it("refuses non-local Host and Origin with 403 on both frontends", async () => {
    for (const headers of [{ host: "evil.example" }, { host: "127.0.0.1", origin: "null" }, { host: "localhost", origin: "http://evil.example" }, { host: "localhost", origin: "http://[::1].evil.example" }, { host: "localhost", origin: ["http://localhost", "http://evil.example"] }]) {
      const res = await rawPost(port, "/guarded/mcp", headers, init)
      expect([res.status, res.body]).toEqual([403, REBINDING])
    }
    const sse = await openStream(port, "/sse", { host: `evil.example:${port}` })
    expect(sse.status).toBe(403)
    expect(await sse.body()).toBe(REBINDING)
  })

  it("lets local Host and Origin through", async () => {
    const res = await rawPost(port, "/guarded/mcp", { host: `localhost:${port}`, origin: `http://127.0.0.1:${port}` }, init)
    expect(res.status).toBe(200)
    expect(res.body).toContain('"serverInfo":{"name":"mcp-servers/everything"')
    const client = await sseClient(gw.url(port, "/sse"))
    expect((await client.callTool({ name: "echo", arguments: { message: "local" } })).content).toEqual([{ type: "text", text: "Echo: local" }])
    await client.close()
  })

  it("without the protection refuses only a malformed or duplicated Origin", async () => {
    const ok = await rawPost(port, "/open/mcp", { host: "mcp.example.com", origin: "https://app.example.com" }, init)
    expect(ok.status).toBe(200)
    for (const origin of ["garbage", ["https://a.example", "https://b.example"]]) {
      const res = await rawPost(port, "/open/mcp", { host: "mcp.example.com", origin }, init)
      expect([res.status, res.body]).toEqual([403, "invalid Origin header"])
    }
  })
})
