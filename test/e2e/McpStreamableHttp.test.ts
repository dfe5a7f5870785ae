/**
 * The Streamable HTTP frontend's status rules (reference §2.2) over raw HTTP, the stdio
 * process lifecycle (killed on DELETE and on gateway stop), spawn failures, the per-session
 * list cache, and bounded memory under a slow reader.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { connectClient } from "../support/McpClient.ts"
import { alive, fixture, waitFor } from "../support/mcp/Peers.ts"
import { readFloodSlowly } from "../support/mcp/SlowReader.ts"
import { BOTH, INIT, post } from "../support/mcp/Raw.ts"

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "agw-mcp-"))




/** A JSON-RPC message as the tests read it. */
interface Rpc {
  readonly id?: unknown
  readonly result?: unknown
  readonly error?: { readonly code: number; readonly message: string; readonly data?: unknown }
}
const rpc = async (res: Response): Promise<Rpc> => (await res.json()) as Rpc

const frames = (text: string): Array<Rpc> => text.split("\n\n").filter((f) => f.startsWith("event: message\ndata: ")).map((f) => JSON.parse(f.slice("event: message\ndata: ".length)))

describe("MCP Streamable HTTP frontend", () => {
  let gw: Running
  let port: number
  let url: string
  const pidFile = path.join(tmp, "pid")
  beforeAll(async () => {
    port = await freePort()
    gw = await startGateway(
      `
binds:
- port: $PORT
  listeners:
  - routes:
    - name: fx
      matches: [{path: {pathPrefix: /fx}}]
      backends:
      - mcp:
          targets:
          - name: fx
            stdio: {cmd: "${process.execPath}", args: ["${fixture}", "stdio"], env: {FIXTURE_PID_FILE: "${pidFile}"}}
    - name: other
      matches: [{path: {pathPrefix: /other}}]
      backends:
      - mcp:
          targets:
          - name: fx
            stdio: {cmd: "${process.execPath}", args: ["${fixture}", "stdio"]}
    - name: broken
      matches: [{path: {pathPrefix: /broken}}]
      backends:
      - mcp:
          targets:
          - name: nope
            stdio: {cmd: /nonexistent/mcp-server}
`,
      { vars: { PORT: port } }
    )
    url = gw.url(port, "/fx/mcp")
  })
  afterAll(async () => {
    await gw.stop()
  })

  const initSession = async () => {
    const res = await post(url, INIT)
    expect(res.status).toBe(200)
    expect(res.headers.get("content-type")).toBe("text/event-stream")
    const id = res.headers.get("mcp-session-id")!
    expect(frames(await res.text())).toMatchObject([{ id: 1, result: { serverInfo: { name: "fixture" } } }])
    return id
  }

  it("answers the status rules of §2.2", async () => {
    expect((await fetch(url, { method: "PUT" })).status).toBe(405)
    expect((await post(url, INIT, { accept: "application/json" })).status).toBe(406)
    expect((await post(url, INIT, { "content-type": "text/plain" })).status).toBe(415)
    const bad = await post(url, "{not json")
    expect(bad.status).toBe(400)
    expect((await rpc(bad)).error?.code).toBe(-32700)
    expect((await post(url, [INIT])).status).toBe(400)
    const noSession = await post(url, { jsonrpc: "2.0", id: 2, method: "tools/list" })
    expect(noSession.status).toBe(400)
    expect(await noSession.text()).toBe("session header is required for non-initialize requests")
    expect((await post(url, { jsonrpc: "2.0", method: "notifications/initialized" })).status).toBe(400)
    const version = await post(url, { jsonrpc: "2.0", id: 2, method: "tools/list" }, { "mcp-protocol-version": "1900-01-01" })
    expect(version.status).toBe(400)
    expect((await rpc(version)).error).toEqual({
      code: -32600,
      message: "unsupported MCP protocol version: 1900-01-01",
      data: { supported: ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"], requested: "1900-01-01" }
    })
    expect((await post(url, INIT, { "mcp-protocol-version": "2025-03-26" })).status).toBe(400)
    expect((await post(url, { jsonrpc: "2.0", id: 2, method: "tools/list" }, { "mcp-session-id": "unknown" })).status).toBe(404)
    expect((await post(url, { jsonrpc: "2.0", id: 2, method: "tools/list" }, { "mcp-session-id": "bad id" })).status).toBe(400)
    expect((await fetch(url, { headers: { accept: "text/event-stream" } })).status).toBe(400)

    const id = await initSession()
    expect(id).toMatch(/^[\x21-\x7e]+$/)
    for (const v of ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]) {
      const ping = await post(url, { jsonrpc: "2.0", id: 9, method: "ping" }, { "mcp-session-id": id, "mcp-protocol-version": v })
      expect(ping.status).toBe(200)
      expect(frames(await ping.text())).toEqual([{ jsonrpc: "2.0", id: 9, result: {} }])
    }
    expect((await post(url, { jsonrpc: "2.0", method: "notifications/initialized" }, { "mcp-session-id": id })).status).toBe(202)
    expect((await post(url, { jsonrpc: "2.0", id: "agw_fx_n_1", result: {} }, { "mcp-session-id": id })).status).toBe(202)
    // A session belongs to its backend.
    expect((await post(gw.url(port, "/other/mcp"), { jsonrpc: "2.0", id: 2, method: "tools/list" }, { "mcp-session-id": id })).status).toBe(404)
    // SEP-2243 mirror headers: optional, but one that is sent must match the body (else 400 -32020).
    const call = { jsonrpc: "2.0", id: 7, method: "tools/call", params: { name: "echo", arguments: { text: "m" } } }
    for (const [headers, status] of [
      [{ "mcp-method": "tools/call", "mcp-name": "echo" }, 200],
      [{ "mcp-method": "tools/call", "mcp-name": `=?base64?${Buffer.from("echo").toString("base64")}?=` }, 200],
      [{ "mcp-method": "tools/list" }, 400],
      [{ "mcp-name": "other" }, 400],
      [{ "mcp-method": "tools/call", "mcp-name": `=?base64?${Buffer.from("other").toString("base64")}?=` }, 400]
    ] as const) {
      const res = await post(url, call, { "mcp-session-id": id, ...headers })
      expect([JSON.stringify(headers), res.status]).toEqual([JSON.stringify(headers), status])
      if (status === 400) expect((await rpc(res)).error?.code).toBe(-32020)
      else await res.text()
    }
    expect((await post(url, { jsonrpc: "2.0", id: 8, method: "ping" }, { "mcp-session-id": id, "mcp-name": "x" })).status).toBe(400)
    const denied = await post(url, { jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "fx_echo" } }, { "mcp-session-id": id })
    expect(denied.status).toBe(200) // single target: names are not prefixed, fx_echo reaches the server
    const get = await fetch(url, { headers: { accept: "text/event-stream", "mcp-session-id": id } })
    expect(get.status).toBe(200)
    expect(get.headers.get("content-type")).toBe("text/event-stream")
    // One GET stream per session: a second one does not take it over.
    const second = await fetch(url, { headers: { accept: "text/event-stream", "mcp-session-id": id } })
    expect(second.status).toBe(409)
    expect((await rpc(second)).error).toEqual({ code: -32000, message: "Conflict: Only one SSE stream is allowed per session" })
    await get.body?.cancel()
    expect((await fetch(url, { method: "GET", headers: { accept: "application/json", "mcp-session-id": id } })).status).toBe(406)
    expect((await fetch(url, { method: "DELETE" })).status).toBe(400)
    expect((await fetch(url, { method: "DELETE", headers: { "mcp-session-id": id } })).status).toBe(202)
    expect((await post(url, { jsonrpc: "2.0", id: 4, method: "ping" }, { "mcp-session-id": id })).status).toBe(404)
    expect((await fetch(url, { method: "DELETE", headers: { "mcp-session-id": "unknown" } })).status).toBe(202)
  })

  it("kills the stdio process group on DELETE", async () => {
    fs.rmSync(pidFile, { force: true })
    const id = await initSession()
    expect(await waitFor(() => fs.existsSync(pidFile) && fs.readFileSync(pidFile, "utf8") !== "")).toBe(true)
    const pid = Number(fs.readFileSync(pidFile, "utf8"))
    expect(alive(pid)).toBe(true)
    expect((await fetch(url, { method: "DELETE", headers: { "mcp-session-id": id } })).status).toBe(202)
    expect(alive(pid)).toBe(false)
  })

  it("answers a target that cannot start with a JSON-RPC error, not a hang", async () => {
    const res = await post(gw.url(port, "/broken/mcp"), INIT)
    expect(res.status).toBe(500)
    const body = await rpc(res)
    expect(body.id).toBe(1)
    expect(body.error?.code).toBe(-32603)
    expect(body.error?.message).toMatch(/^failed to send message: nope: failed to start stdio server: spawn \/nonexistent\/mcp-server ENOENT/)
  })

  it("caches a target's tools/list per session until list_changed", async () => {
    const { client } = await connectClient(url)
    const before = (await client.listTools()).tools.map((t) => t.name)
    expect(before).not.toContain("fresh")
    await client.callTool({ name: "add-tool", arguments: { name: "fresh" } })
    expect((await client.listTools()).tools.map((t) => t.name)).toContain("fresh")
    await client.close()
  })

  it("keeps memory bounded while a slow client reads a 64 MB stream", async () => {
    const id = await initSession()
    const total = 64 * 1024 * 1024
    const { received, peakMiB, tail } = await readFloodSlowly(url, id, total)
    expect(tail).toContain('"text":"done"')
    expect(received).toBeGreaterThan(total)
    // The stream is 64 MiB; what the gateway holds of it at any time is a few buffers.
    expect(peakMiB).toBeLessThan(24)
    await fetch(url, { method: "DELETE", headers: { "mcp-session-id": id } })
  }, 60_000)

  it("kills every stdio process group when the gateway stops", async () => {
    const port2 = await freePort()
    const pidFile2 = path.join(tmp, "pid2")
    const gw2 = await startGateway(
      `
mcp:
  port: $PORT
  targets:
  - name: fx
    stdio: {cmd: "${process.execPath}", args: ["${fixture}", "stdio"], env: {FIXTURE_PID_FILE: "${pidFile2}"}}
`,
      { vars: { PORT: port2 } }
    )
    const res = await post(gw2.url(port2, "/anything"), INIT)
    expect(res.status).toBe(200)
    await res.text()
    expect(await waitFor(() => fs.existsSync(pidFile2) && fs.readFileSync(pidFile2, "utf8") !== "")).toBe(true)
    const pid = Number(fs.readFileSync(pidFile2, "utf8"))
    expect(alive(pid)).toBe(true)
    await gw2.stop()
    expect(alive(pid)).toBe(false)
  })
})
