/**
 * An SDK stdio server whose `tools/list` is paginated: `node PagedServer.ts`, tools from
 * PAGED_TOOLS (comma-separated), PAGED_SIZE per page (default 2), `nextCursor` = the next offset.
 * Every tool answers "<PAGED_NAME>: <tool>". PAGED_LOG, when set, gets one line per list request
 * (its cursor, or "-" for the first page).
 */
import { Server } from "@modelcontextprotocol/sdk/server/index.js"
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js"
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js"
import * as fs from "node:fs"

const name = process.env["PAGED_NAME"] ?? "paged"
const tools = (process.env["PAGED_TOOLS"] ?? "").split(",").filter((t) => t !== "")
const size = Number(process.env["PAGED_SIZE"] ?? "2")
const log = process.env["PAGED_LOG"]

const server = new Server({ name, version: "1.0.0" }, { capabilities: { tools: {} } })
server.setRequestHandler(ListToolsRequestSchema, async (req) => {
  const cursor = req.params?.cursor
  if (log !== undefined) fs.appendFileSync(log, `${cursor ?? "-"}\n`)
  const from = cursor === undefined ? 0 : Number(cursor)
  const page = tools.slice(from, from + size).map((t) => ({ name: t, inputSchema: { type: "object" as const } }))
  return from + size < tools.length ? { tools: page, nextCursor: String(from + size) } : { tools: page }
})
server.setRequestHandler(CallToolRequestSchema, async (req) => ({ content: [{ type: "text", text: `${name}: ${req.params.name}` }] }))
await server.connect(new StdioServerTransport())
