/**
 * Paginated upstream lists, over real sockets (the SDK client, the gateway, SDK stdio servers
 * that paginate `tools/list` by `nextCursor`):
 * - a federated `tools/list` reads every page of each target and carries no `nextCursor`; the
 *   pages are read once per session and again after the target's `tools/list_changed`;
 * - a single target whose names are rewritten (`prefixMode: always`) is merged the same way;
 * - a page failing mid-way fails the target as a whole: failClosed fails the list, failOpen
 *   drops that target (never a shorter list of it);
 * - a single target passed through as it is keeps the upstream's pages and cursors.
 */
import type { Client } from "@modelcontextprotocol/sdk/client/index.js"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePorts, type Running, startGateway } from "../support/Harness.ts"
import { connectClient } from "../support/McpClient.ts"

const paged = path.resolve(import.meta.dirname, "../support/mcp/PagedServer.ts")
const TOOLS = "a1,a2,a3,a4,a5"

const target = (name: string, log: string, extra = "") =>
  `{name: ${name}, stdio: {cmd: "${process.execPath}", args: ["${paged}"], env: {PAGED_NAME: ${name}, PAGED_TOOLS: "${TOOLS}", PAGED_LOG: "${log}"${extra}}}}`
const other = `{name: q, stdio: {cmd: "${process.execPath}", args: ["${paged}"], env: {PAGED_NAME: q, PAGED_TOOLS: "b1"}}}`

const bind = (port: string, mcp: string) => `
- port: $${port}
  listeners:
  - routes:
    - backends:
      - mcp:
          ${mcp}`

const config = (logs: Record<string, string>) => `
binds:${bind("FED", `targets: [${target("p", logs["fed"]!)}, ${other}]`)}${bind("ALWAYS", `prefixMode: always
          targets: [${target("p", logs["always"]!)}]`)}${bind("SINGLE", `targets: [${target("p", logs["single"]!)}]`)}${bind("CLOSED", `targets: [${target("p", logs["closed"]!, ", PAGED_FAIL: \"4\"")}, ${other}]`)}${bind("OPEN", `failureMode: failOpen
          targets: [${target("p", logs["open"]!, ", PAGED_FAIL: \"4\"")}, ${other}]`)}
`

/** The list requests a target saw since the log was last cleared: each cursor, "-" for the first page. */
const pagesRead = (log: string): Array<string> => fs.readFileSync(log, "utf8").split("\n").filter((l) => l !== "")

const names = async (client: Client, cursor?: string) => {
  const r = await client.listTools(cursor === undefined ? undefined : { cursor })
  return { names: r.tools.map((t) => t.name), nextCursor: r.nextCursor }
}

describe("MCP paginated upstream lists", () => {
  let gw: Running
  let dir: string
  const ports: Record<string, number> = {}
  const logs: Record<string, string> = {}
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "agw-mcp-pages-"))
    for (const k of ["fed", "always", "single", "closed", "open"]) {
      logs[k] = path.join(dir, `${k}.log`)
      fs.writeFileSync(logs[k], "")
    }
    // Picked together: one at a time, the kernel may hand the same free port out twice.
    const names = ["FED", "ALWAYS", "SINGLE", "CLOSED", "OPEN"]
    const picked = await freePorts(names.length)
    names.forEach((k, i) => (ports[k] = picked[i]!))
    gw = await startGateway(config(logs), { vars: ports })
  })
  afterAll(async () => {
    await gw.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it("a federated tools/list has every page of every target, and no nextCursor", async () => {
    const { client } = await connectClient(gw.url(ports["FED"]!, "/mcp"))
    fs.writeFileSync(logs["fed"]!, "")
    expect(await names(client)).toEqual({ names: ["p_a1", "p_a2", "p_a3", "p_a4", "p_a5", "q_b1"], nextCursor: undefined })
    // Three pages, each read by the cursor the previous one gave.
    expect(pagesRead(logs["fed"]!)).toEqual(["-", "2", "4"])
    // A tool from the last page is routed.
    const called = await client.callTool({ name: "p_a5" })
    expect(called.content).toEqual([{ type: "text", text: "p: a5" }])
    // The gateway issued no cursor, so a client cursor is refused, not forwarded.
    await expect(client.listTools({ cursor: "2" })).rejects.toThrow(/invalid cursor/)
    // An empty cursor means the first page: the whole merged list, from the session cache.
    expect((await client.listTools({ cursor: "" })).tools).toHaveLength(6)
    expect(pagesRead(logs["fed"]!)).toEqual(["-", "2", "4"])
    await client.close()
  })

  it("an empty client cursor asks for the merged list; the target's first page is read without one", async () => {
    const { client } = await connectClient(gw.url(ports["FED"]!, "/mcp"))
    fs.writeFileSync(logs["fed"]!, "")
    expect(await names(client, "")).toEqual({ names: ["p_a1", "p_a2", "p_a3", "p_a4", "p_a5", "q_b1"], nextCursor: undefined })
    expect(pagesRead(logs["fed"]!)).toEqual(["-", "2", "4"])
    await client.close()
  })

  it("reads the pages once per session and again after tools/list_changed", async () => {
    const { client } = await connectClient(gw.url(ports["FED"]!, "/mcp"))
    fs.writeFileSync(logs["fed"]!, "")
    const first = await names(client)
    expect(first.names).toHaveLength(6)
    expect(await names(client)).toEqual(first)
    expect(await names(client)).toEqual(first)
    // The second and third lists came from the session's cache.
    expect(pagesRead(logs["fed"]!)).toEqual(["-", "2", "4"])
    // The target adds a tool (a fourth page) and says so: the next list reads every page again.
    await client.callTool({ name: "p_add-tool", arguments: { name: "a6" } })
    expect(await names(client)).toEqual({ names: ["p_a1", "p_a2", "p_a3", "p_a4", "p_a5", "p_a6", "q_b1"], nextCursor: undefined })
    expect(pagesRead(logs["fed"]!)).toEqual(["-", "2", "4", "-", "2", "4"])
    expect((await names(client)).names).toHaveLength(7)
    expect(pagesRead(logs["fed"]!)).toHaveLength(6)
    await client.close()
  })

  it("merges a single target whose names are rewritten (prefixMode: always)", async () => {
    const { client } = await connectClient(gw.url(ports["ALWAYS"]!, "/mcp"))
    fs.writeFileSync(logs["always"]!, "")
    expect(await names(client)).toEqual({ names: ["p_a1", "p_a2", "p_a3", "p_a4", "p_a5"], nextCursor: undefined })
    expect(pagesRead(logs["always"]!)).toEqual(["-", "2", "4"])
    await client.close()
  })

  it("a page failing mid-way fails the target, not shortens its list", async () => {
    const closed = (await connectClient(gw.url(ports["CLOSED"]!, "/mcp"))).client
    await expect(closed.listTools()).rejects.toThrow(/page 4 failed/)
    await closed.close()
    const open = (await connectClient(gw.url(ports["OPEN"]!, "/mcp"))).client
    fs.writeFileSync(logs["open"]!, "")
    // failOpen skips the failed target entirely: none of its first two pages is listed.
    expect(await names(open)).toEqual({ names: ["q_b1"], nextCursor: undefined })
    expect(pagesRead(logs["open"]!)).toEqual(["-", "2", "4"])
    // A failed read is not cached: the next list tries the target again.
    expect((await names(open)).names).toEqual(["q_b1"])
    expect(pagesRead(logs["open"]!)).toEqual(["-", "2", "4", "-", "2", "4"])
    await open.close()
  })

  it("a single target passed through keeps the upstream's nextCursor and follows the client's cursor", async () => {
    const { client } = await connectClient(gw.url(ports["SINGLE"]!, "/mcp"))
    fs.writeFileSync(logs["single"]!, "")
    expect(await names(client)).toEqual({ names: ["a1", "a2"], nextCursor: "2" })
    expect(await names(client, "2")).toEqual({ names: ["a3", "a4"], nextCursor: "4" })
    expect(await names(client, "4")).toEqual({ names: ["a5"], nextCursor: undefined })
    // One upstream request per client request, each with the client's cursor.
    expect(pagesRead(logs["single"]!)).toEqual(["-", "2", "4"])
    await client.close()
  })
})
