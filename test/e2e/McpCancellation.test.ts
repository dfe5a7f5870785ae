/**
 * Client cancellation, `prefixMode: never` paging and the legacy SSE frontend's access-log
 * fields, over real sockets:
 * - the SDK client aborts a slow tool call (AbortSignal → `notifications/cancelled` with its own
 *   id); the target the call went to observes the cancellation in its own id space (stdio and
 *   Streamable HTTP targets, ids deliberately out of step with the client's), over Streamable
 *   HTTP and over the legacy SSE frontend;
 * - an unprefixed name on a target's third page is found by reading its pages (then cached);
 * - a legacy SSE POST is logged with `mcp.method.name`, `mcp.target`, `gen_ai.tool.name`, `mcp.session.id`.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js"
import { LoggingMessageNotificationSchema } from "@modelcontextprotocol/sdk/types.js"
import type { ChildProcess } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { connectClient } from "../support/McpClient.ts"
import { fixture, startFixture } from "../support/mcp/Peers.ts"

const paged = path.resolve(import.meta.dirname, "../support/mcp/PagedServer.ts")

const config = (httpPort: number, pageLog: string) => `
binds:
- port: $PORT
  listeners:
  - routes:
    - name: fed
      matches: [{path: {pathPrefix: /}}]
      backends:
      - mcp:
          targets:
          - name: s
            stdio: {cmd: "${process.execPath}", args: ["${fixture}", "stdio"], env: {FIXTURE_NAME: stdio}}
          - name: h
            mcp: {host: "http://127.0.0.1:${httpPort}/mcp"}
- port: $NEVER
  listeners:
  - routes:
    - backends:
      - mcp:
          prefixMode: never
          targets:
          - name: one
            stdio: {cmd: "${process.execPath}", args: ["${paged}"], env: {PAGED_NAME: one, PAGED_TOOLS: "t1,t2,t3,t4,deep5", PAGED_LOG: "${pageLog}"}}
          - name: two
            stdio: {cmd: "${process.execPath}", args: ["${paged}"], env: {PAGED_NAME: two, PAGED_TOOLS: "u1"}}
`

/** The first text content of a tool result. */
const text = (result: unknown): string => {
  const content = typeof result === "object" && result !== null && "content" in result ? result.content : undefined
  const first: unknown = Array.isArray(content) ? content[0] : undefined
  return typeof first === "object" && first !== null && "text" in first && typeof first.text === "string" ? first.text : ""
}

/** Calls `<prefix>slow` with an AbortSignal, aborts once the server said it started; resolves when the call rejected. */
const cancelSlow = async (client: Client, name: string) => {
  const abort = new AbortController()
  const started = new Promise<void>((resolve) =>
    client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
      if (n.params.data === "slow started") resolve()
    })
  )
  const call = client.callTool({ name }, undefined, { signal: abort.signal, timeout: 20_000 })
  const settled = call.then(() => "resolved", (e: unknown) => (e instanceof Error ? e.message : String(e)))
  await started
  abort.abort("user gave up")
  return settled
}

const cancellations = async (client: Client, name: string): Promise<Array<unknown>> => JSON.parse(text(await client.callTool({ name })))

describe("MCP cancellation, never-mode paging, SSE log fields", () => {
  let http: { port: number; child: ChildProcess }
  let gw: Running
  let port: number
  let never: number
  let dir: string
  let pageLog: string
  beforeAll(async () => {
    http = await startFixture("http", "remote")
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "agw-mcp-cancel-"))
    pageLog = path.join(dir, "pages.log")
    port = await freePort()
    never = await freePort()
    gw = await startGateway(config(http.port, pageLog), { vars: { PORT: port, NEVER: never } })
  })
  afterAll(async () => {
    await gw.stop()
    http.child.kill()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it("a cancelled call reaches the target it went to, in that target's id space (Streamable HTTP)", async () => {
    const { client } = await connectClient(gw.url(port, "/mcp"))
    // Puts the client's ids out of step with each target's own.
    for (let i = 0; i < 3; i++) await client.callTool({ name: "s_echo", arguments: { text: String(i) } })
    expect(await cancelSlow(client, "h_slow")).toContain("user gave up")
    await vi.waitFor(async () => expect(await cancellations(client, "h_cancellations")).toHaveLength(1), { timeout: 5000 })
    expect(await cancelSlow(client, "s_slow")).toContain("user gave up")
    await vi.waitFor(async () => expect(await cancellations(client, "s_cancellations")).toHaveLength(1), { timeout: 5000 })
    // Each target saw only its own call cancelled, and the session goes on.
    expect(await cancellations(client, "h_cancellations")).toHaveLength(1)
    expect(text(await client.callTool({ name: "h_echo", arguments: { text: "still here" } }))).toBe("remote: still here")
    await client.close()
  })

  it("a cancellation naming no request in flight is not forwarded", async () => {
    const { client } = await connectClient(gw.url(port, "/mcp"))
    // The client's id 1 is in use upstream by the gateway's own requests; forwarding it raw would be wrong.
    await client.notification({ method: "notifications/cancelled", params: { requestId: 1, reason: "stale" } })
    expect(text(await client.callTool({ name: "s_echo", arguments: { text: "ok" } }))).toBe("stdio: ok")
    await client.close()
  })

  it("a cancelled call over the legacy SSE frontend reaches its target", async () => {
    const client = new Client({ name: "sse-test", version: "1.0.0" })
    await client.connect(new SSEClientTransport(new URL(gw.url(port, "/sse"))))
    await client.callTool({ name: "h_echo", arguments: { text: "warm" } })
    expect(await cancelSlow(client, "s_slow")).toContain("user gave up")
    await vi.waitFor(async () => expect(await cancellations(client, "s_cancellations")).toHaveLength(1), { timeout: 5000 })
    await client.close()
  })

  it("logs a legacy SSE call with its MCP fields", async () => {
    const client = new Client({ name: "sse-log", version: "1.0.0" })
    // The session id is only in the URLs the client POSTs to.
    const posted: Array<string> = []
    const transport = new SSEClientTransport(new URL(gw.url(port, "/sse")), {
      fetch: (url, init) => {
        if (init?.method === "POST") posted.push(String(url))
        return fetch(url, init)
      }
    })
    await client.connect(transport)
    const before = gw.logs.length
    expect(text(await client.callTool({ name: "h_echo", arguments: { text: "logged" } }))).toBe("remote: logged")
    const line = await vi.waitFor(() => {
      const found = gw.logs.slice(before).find((l) => l.includes("mcp.method.name=tools/call"))
      expect(found).toBeDefined()
      return found!
    })
    for (const field of ["http.path=/sse", "protocol=mcp", "mcp.target=h", "mcp.resource.type=tool", "gen_ai.tool.name=echo", "http.status=202"]) {
      expect(line).toContain(field)
    }
    // A digest of the session id, never the id: the id in the POST's query resumes the session.
    const sessionId = posted.map((u) => new URL(u).searchParams.get("sessionId")).find((id) => id !== null)
    expect(sessionId).toMatch(/^[0-9a-f-]{36}$/)
    expect(line).toContain(` mcp.session.id=${createHash("sha256").update(sessionId!).digest("hex").slice(0, 16)}`)
    expect(line).not.toContain(sessionId)
    await client.close()
  })

  it("prefixMode never: a name on a later page of a target's list is found and routed", async () => {
    const { client } = await connectClient(gw.url(never, "/mcp"))
    fs.writeFileSync(pageLog, "")
    expect(text(await client.callTool({ name: "deep5" }))).toBe("one: deep5")
    // The target's three pages were read with their cursors to find the name.
    expect(fs.readFileSync(pageLog, "utf8").split("\n").filter((l) => l !== "")).toEqual(["-", "2", "4"])
    // The merged list has every page, from the session's cache (no page read again).
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(["t1", "t2", "t3", "t4", "deep5", "u1"])
    expect(fs.readFileSync(pageLog, "utf8").split("\n").filter((l) => l !== "")).toEqual(["-", "2", "4"])
    expect(text(await client.callTool({ name: "u1" }))).toBe("two: u1")
    await expect(client.callTool({ name: "nowhere" })).rejects.toThrow("Unknown tool: nowhere")
    await client.close()
  })
})
