/**
 * The MCP benchmark's server: the official SDK's `McpServer` with five small tools, served
 * either over Streamable HTTP (stateful: one transport and one `McpServer` per session, the
 * SDK's documented pattern) or over stdio.
 *
 *   node bench/mcp-echo-server.ts http  [NAME]   (PORT=… default 0; forked: reports the port over IPC)
 *   node bench/mcp-echo-server.ts stdio [NAME]
 *
 * Tools: echo {text} → text; upper {text}; reverse {text}; length {text} → the length as text;
 * whoami → NAME (sanity checks: which server answered through a federating gateway).
 * The HTTP endpoint is any path (the benchmark uses /mcp). Exits when the parent's IPC channel
 * (http) or stdin (stdio) closes.
 */
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js"
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js"
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js"
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js"
import { randomUUID } from "node:crypto"
import * as http from "node:http"
// The SDK's own dependency: McpServer declares tool inputs as zod shapes.
import { z } from "zod"

const mode = process.argv[2]
const name = process.argv[3] ?? "echo"
if (mode !== "http" && mode !== "stdio") {
  process.stderr.write("usage: node bench/mcp-echo-server.ts http|stdio [NAME]\n")
  process.exit(2)
}

/** Bounds what the HTTP endpoint buffers of one request body. */
const MAX_BODY_BYTES = 1024 * 1024

const text = (value: string) => ({ content: [{ type: "text" as const, text: value }] })

const makeServer = (): McpServer => {
  const server = new McpServer({ name, version: "1.0.0" })
  const input = { text: z.string() }
  server.registerTool("echo", { description: "Answers its text.", inputSchema: input }, (args) => text(args.text))
  server.registerTool("upper", { description: "Answers its text in upper case.", inputSchema: input }, (args) => text(args.text.toUpperCase()))
  server.registerTool("reverse", { description: "Answers its text reversed.", inputSchema: input }, (args) => text([...args.text].reverse().join("")))
  server.registerTool("length", { description: "Answers the length of its text.", inputSchema: input }, (args) => text(String(args.text.length)))
  server.registerTool("whoami", { description: "Answers the server's name." }, () => text(name))
  return server
}

const jsonError = (res: http.ServerResponse, status: number, message: string): void => {
  const body = JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32000, message } })
  res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) })
  res.end(body)
}

const serveHttp = (): void => {
  const transports = new Map<string, StreamableHTTPServerTransport>()

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse, raw: Buffer): Promise<void> => {
    let body: unknown
    if (raw.length > 0) {
      try {
        body = JSON.parse(raw.toString("utf8"))
      } catch {
        return jsonError(res, 400, "parse error")
      }
    }
    const sid = req.headers["mcp-session-id"]
    const existing = typeof sid === "string" ? transports.get(sid) : undefined
    if (existing !== undefined) return existing.handleRequest(req, res, body)
    if (sid !== undefined) return jsonError(res, 404, "session not found")
    if (req.method !== "POST" || !isInitializeRequest(body)) return jsonError(res, 400, "no session: initialize first")
    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => {
        transports.set(id, transport)
      },
      onsessionclosed: (id) => {
        transports.delete(id)
      }
    })
    await makeServer().connect(transport)
    return transport.handleRequest(req, res, body)
  }

  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    let size = 0
    req.on("data", (chunk: Buffer) => {
      size += chunk.length
      if (size <= MAX_BODY_BYTES) chunks.push(chunk)
    })
    req.on("end", () => {
      if (size > MAX_BODY_BYTES) return jsonError(res, 413, "body too large")
      handle(req, res, Buffer.concat(chunks)).catch((error: unknown) => {
        process.stderr.write(`mcp-echo-server ${name}: ${error instanceof Error ? error.message : String(error)}\n`)
        if (!res.headersSent) jsonError(res, 500, "internal error")
        else res.destroy()
      })
    })
  })
  // Longer than any pause in the benchmark, so pooled connections never race a close.
  server.keepAliveTimeout = 120_000
  server.headersTimeout = 121_000
  server.listen(Number(process.env["PORT"] ?? 0), "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    if (process.send !== undefined) process.send({ type: "listening", port })
    else process.stdout.write(`mcp-echo-server ${name} listening on http://127.0.0.1:${port}/mcp\n`)
  })
  process.on("disconnect", () => process.exit(0))
}

if (mode === "http") serveHttp()
else {
  await makeServer().connect(new StdioServerTransport())
  process.stdin.once("end", () => process.exit(0))
  process.stdin.once("close", () => process.exit(0))
}
process.on("SIGTERM", () => process.exit(0))
process.on("SIGINT", () => process.exit(0))
