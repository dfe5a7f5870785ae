/**
 * An SDK stdio server whose `tools/list` is paginated: `node PagedServer.ts`, tools from
 * PAGED_TOOLS (comma-separated), PAGED_SIZE per page (default 2), `nextCursor` = the next offset.
 * Every tool answers "<PAGED_NAME>: <tool>". PAGED_LOG, when set, gets one line per list request
 * (its cursor, "-" for none, "(empty)" for an empty one). PAGED_FAIL, when set, is a cursor whose page answers a
 * JSON-RPC error. The unlisted tool `add-tool {name}` appends a tool to the list and sends
 * `notifications/tools/list_changed`.
 */
import { Server } from "@modelcontextprotocol/sdk/server/index.js"
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js"
import { CallToolRequestSchema, ErrorCode, ListToolsRequestSchema, McpError } from "@modelcontextprotocol/sdk/types.js"
import * as fs from "node:fs"

const name = process.env["PAGED_NAME"] ?? "paged"
const tools = (process.env["PAGED_TOOLS"] ?? "").split(",").filter((t) => t !== "")
const size = Number(process.env["PAGED_SIZE"] ?? "2")
const log = process.env["PAGED_LOG"]
const failing = process.env["PAGED_FAIL"]

const server = new Server({ name, version: "1.0.0" }, { capabilities: { tools: { listChanged: true } } })
server.setRequestHandler(ListToolsRequestSchema, async (req) => {
  const cursor = req.params?.cursor
  if (log !== undefined) fs.appendFileSync(log, `${cursor === "" ? "(empty)" : (cursor ?? "-")}\n`)
  if (failing !== undefined && cursor === failing) throw new McpError(ErrorCode.InternalError, `page ${cursor} failed`)
  const from = cursor === undefined ? 0 : Number(cursor)
  const page = tools.slice(from, from + size).map((t) => ({ name: t, inputSchema: { type: "object" as const } }))
  return from + size < tools.length ? { tools: page, nextCursor: String(from + size) } : { tools: page }
})
server.setRequestHandler(CallToolRequestSchema, async (req) => {
  if (req.params.name === "add-tool") {
    tools.push(String(req.params.arguments?.["name"]))
    await server.sendToolListChanged()
    return { content: [{ type: "text", text: "added" }] }
  }
  return { content: [{ type: "text", text: `${name}: ${req.params.name}` }] }
})
await server.connect(new StdioServerTransport())
