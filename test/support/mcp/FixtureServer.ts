/**
 * A small MCP server on the official SDK, for gateway tests: `node FixtureServer.ts stdio`
 * or `node FixtureServer.ts http <port>` (Streamable HTTP, stateful) or `sse <port>` (legacy SSE). Tools:
 *   echo {text}              → "<name>: <text>"
 *   pid                      → the server's pid
 *   add-tool {name}          → registers a tool (list_changed follows)
 *   flood {bytes, chunk}     → sends `bytes` of log notifications, then answers "done"
 *   deep {depth}             → (not listed) a result nested `depth` levels, deeper than a gateway accepts
 *   slow                     → (not listed) logs "slow started", then waits until the request is cancelled (≤ 30 s)
 *   cancellations            → (not listed) how many `slow` calls this process saw cancelled, and their request ids
 *   session                  → (not listed) JSON {id: this MCP session's id (http), servers: MCP sessions this process started}
 *   wait {file}              → (not listed) logs "wait started", then answers "released" once `file` exists (≤ 30 s)
 * FIXTURE_NAME names the server; FIXTURE_PID_FILE, when set, gets the pid at start; FIXTURE_TLS_DIR
 * (a directory with server.pem and server.key) serves http/sse modes over TLS.
 */
import { Server } from "@modelcontextprotocol/sdk/server/index.js"
import { SSEServerTransport } from "@modelcontextprotocol/sdk/server/sse.js"
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js"
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js"
import { CallToolRequestSchema, ListToolsRequestSchema, isInitializeRequest } from "@modelcontextprotocol/sdk/types.js"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import * as path from "node:path"

const name = process.env["FIXTURE_NAME"] ?? "fixture"
const tlsDir = process.env["FIXTURE_TLS_DIR"]
const createServer = (handler: http.RequestListener) =>
  tlsDir === undefined
    ? http.createServer(handler)
    : https.createServer({ cert: fs.readFileSync(path.join(tlsDir, "server.pem")), key: fs.readFileSync(path.join(tlsDir, "server.key")) }, handler)
if (process.env["FIXTURE_PID_FILE"]) fs.writeFileSync(process.env["FIXTURE_PID_FILE"], String(process.pid))

/** `slow` calls cancelled so far in this process (by `notifications/cancelled`), with their request ids. */
const cancelled: Array<string | number> = []

/** MCP sessions (servers) this process started: one per upstream initialize in http mode. */
let servers = 0

const makeServer = () => {
  servers++
  const extra: Array<string> = []
  const server = new Server({ name, version: "1.0.0" }, { capabilities: { tools: { listChanged: true }, logging: {} }, instructions: `${name} instructions` })
  server.setRequestHandler(ListToolsRequestSchema, async () => ({
    tools: ["echo", "pid", "add-tool", "flood", ...extra].map((n) => ({ name: n, inputSchema: { type: "object" } }))
  }))
  server.setRequestHandler(CallToolRequestSchema, async (req, ctx) => {
    const args = (req.params.arguments ?? {}) as Record<string, unknown>
    switch (req.params.name) {
      case "echo":
        return { content: [{ type: "text", text: `${name}: ${String(args["text"])}` }] }
      case "pid":
        return { content: [{ type: "text", text: String(process.pid) }] }
      case "add-tool":
        extra.push(String(args["name"]))
        await server.sendToolListChanged()
        return { content: [{ type: "text", text: "added" }] }
      case "flood": {
        const total = Number(args["bytes"])
        const chunk = "x".repeat(Number(args["chunk"] ?? 65536))
        for (let sent = 0; sent < total; sent += chunk.length) {
          await ctx.sendNotification({ method: "notifications/message", params: { level: "info", data: chunk } })
        }
        return { content: [{ type: "text", text: "done" }] }
      }
      case "slow": {
        await ctx.sendNotification({ method: "notifications/message", params: { level: "info", data: "slow started" } })
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 30_000)
          ctx.signal.addEventListener("abort", () => {
            clearTimeout(timer)
            cancelled.push(ctx.requestId)
            resolve()
          })
        })
        return { content: [{ type: "text", text: "slow done" }] }
      }
      case "cancellations":
        return { content: [{ type: "text", text: JSON.stringify(cancelled) }] }
      case "session":
        return { content: [{ type: "text", text: JSON.stringify({ id: ctx.sessionId ?? null, servers }) }] }
      case "wait": {
        await ctx.sendNotification({ method: "notifications/message", params: { level: "info", data: "wait started" } })
        const file = String(args["file"])
        for (let i = 0; i < 1200 && !fs.existsSync(file); i++) await new Promise((r) => setTimeout(r, 25))
        return { content: [{ type: "text", text: fs.existsSync(file) ? "released" : "timed out" }] }
      }
      case "deep": {
        let nested: unknown = {}
        for (let i = 0; i < Number(args["depth"]); i++) nested = { n: nested }
        return { content: [{ type: "text", text: "deep" }], structuredContent: { n: nested } }
      }
      default:
        return { content: [{ type: "text", text: `${name}: ${req.params.name}` }] }
    }
  })
  return server
}

if (process.argv[2] === "http") {
  const port = Number(process.argv[3])
  const transports = new Map<string, StreamableHTTPServerTransport>()
  createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", async () => {
      const body = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : undefined
      const sid = req.headers["mcp-session-id"]
      let transport = typeof sid === "string" ? transports.get(sid) : undefined
      if (transport === undefined && body !== undefined && isInitializeRequest(body)) {
        transport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => void transports.set(id, transport!)
        })
        await makeServer().connect(transport)
      }
      if (transport === undefined) {
        res.writeHead(404).end("no session")
        return
      }
      await transport.handleRequest(req, res, body)
    })
  }).listen(port, "127.0.0.1", () => process.stdout.write(`listening ${port}\n`))
} else if (process.argv[2] === "sse") {
  // Legacy SSE: GET /sse opens a session whose endpoint is /messages?sessionId=…
  const port = Number(process.argv[3])
  const transports = new Map<string, SSEServerTransport>()
  createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost")
    if (req.method === "GET" && url.pathname === "/sse") {
      const transport = new SSEServerTransport("/messages", res)
      transports.set(transport.sessionId, transport)
      res.on("close", () => void transports.delete(transport.sessionId))
      await makeServer().connect(transport)
      return
    }
    const transport = transports.get(url.searchParams.get("sessionId") ?? "")
    if (req.method !== "POST" || url.pathname !== "/messages" || transport === undefined) {
      res.writeHead(404).end("no session")
      return
    }
    await transport.handlePostMessage(req, res)
  }).listen(port, "127.0.0.1", () => process.stdout.write(`listening ${port}\n`))
} else {
  await makeServer().connect(new StdioServerTransport())
}
