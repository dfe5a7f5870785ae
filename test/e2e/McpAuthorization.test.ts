/**
 * `mcpAuthorization` over real sockets: upstream's `examples/mcp-authorization` (fixture copy;
 * its `backendAuth: {passthrough: {}}` removed, a policy this gateway does not have yet) with a
 * local JWKS and `@modelcontextprotocol/server-everything` as the Streamable HTTP target, driven
 * with the SDK client; route + backend rule sets accumulating; and the MCP access-log fields and
 * `agentgateway_mcp_requests_total` those requests produce.
 */
import { exportJWK, generateKeyPair, SignJWT } from "jose"
import { type ChildProcess, spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { connectClient } from "../support/McpClient.ts"
import { everything } from "../support/mcp/Peers.ts"

const fixtures = path.resolve(import.meta.dirname, "../fixtures/mcp")
const BOTH = "application/json, text/event-stream"

const keys = await generateKeyPair("RS256")
const JWKS = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: "k1", alg: "RS256" }] })

const token = (claims: Record<string, unknown>) =>
  new SignJWT({ iss: "agentgateway.dev", aud: "test.agentgateway.dev", exp: Math.floor(Date.now() / 1000) + 600, ...claims })
    .setProtectedHeader({ alg: "RS256", kid: "k1" })
    .sign(keys.privateKey)

const startEverything = async (): Promise<{ port: number; child: ChildProcess }> => {
  const port = await freePort()
  const child = spawn(process.execPath, [everything, "streamableHttp"], { env: { ...process.env, PORT: String(port) }, stdio: ["ignore", "ignore", "pipe"] })
  await new Promise<void>((resolve) => {
    const onData = (chunk: Buffer) => {
      if (chunk.toString("utf8").includes("listening on port")) {
        child.stderr!.off("data", onData)
        resolve()
      }
    }
    child.stderr!.on("data", onData)
  })
  return { port, child }
}

const exampleConfig = (jwksFile: string): string => {
  const text = fs.readFileSync(path.join(fixtures, "authorization-config.yaml"), "utf8")
  const steps: Array<[string, string]> = [
    ["  port: 3000\n", "  port: $PORT\n"],
    ["    backendAuth:\n      passthrough: {}\n", ""],
    ["file: ./manifests/jwt/pub-key", `file: ${jwksFile}`],
    ["host: http://localhost:3001/mcp", "host: http://127.0.0.1:$UP/mcp"]
  ]
  let out = text
  for (const [from, to] of steps) {
    expect(out).toContain(from)
    out = out.replace(from, to)
  }
  return out
}

/** Route rules and backend rules together: the backend's deny applies on top of the route's allow-list. */
const layeredConfig = `
binds:
- port: $PORT2
  listeners:
  - routes:
    - policies:
        mcpAuthorization:
          rules: ['mcp.tool.name == "echo" || mcp.tool.name == "get-sum"']
      backends:
      - mcp:
          targets:
          - name: ev
            mcp: {host: "http://127.0.0.1:$UP/mcp"}
        policies:
          mcpAuthorization:
            rules:
            # Guarded: a deny rule that errors (a missing header) denies.
            - deny: 'mcp.tool.name == "get-sum" && "x-tier" in request.headers && request.headers["x-tier"] == "free"'
`

interface Raw {
  readonly status: number
  readonly body: string
}

const rawCall = async (url: string, sessionId: string, auth: string | undefined, body: unknown): Promise<Raw> => {
  const headers: Record<string, string> = { accept: BOTH, "content-type": "application/json", "mcp-session-id": sessionId, "mcp-protocol-version": "2025-06-18" }
  if (auth !== undefined) headers["authorization"] = `Bearer ${auth}`
  const res = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) })
  return { status: res.status, body: await res.text() }
}

const connectAs = async (url: string, auth: string | undefined, headers: Record<string, string> = {}) => {
  const { Client } = await import("@modelcontextprotocol/sdk/client/index.js")
  const { StreamableHTTPClientTransport } = await import("@modelcontextprotocol/sdk/client/streamableHttp.js")
  const all = auth === undefined ? headers : { ...headers, authorization: `Bearer ${auth}` }
  const client = new Client({ name: "test", version: "1.0.0" })
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: all } })
  await client.connect(transport)
  return { client, transport }
}

describe("mcpAuthorization (examples/mcp-authorization)", () => {
  let ev: { port: number; child: ChildProcess }
  let gw: Running
  let port: number
  let port2: number
  let dir: string
  let url: string
  beforeAll(async () => {
    ev = await startEverything()
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "agw-mcp-authz-"))
    const jwksFile = path.join(dir, "pub-key")
    fs.writeFileSync(jwksFile, JWKS)
    port = await freePort()
    port2 = await freePort()
    gw = await startGateway(exampleConfig(jwksFile) + layeredConfig, { vars: { PORT: port, PORT2: port2, UP: ev.port } })
    url = gw.url(port, "/mcp")
  })
  afterAll(async () => {
    await gw.stop()
    ev.child.kill()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it("lists and calls only allowed tools for an anonymous client", async () => {
    const { client, transport } = await connectClient(url)
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(["echo"])
    expect((await client.callTool({ name: "echo", arguments: { message: "hi" } })).content).toEqual([{ type: "text", text: "Echo: hi" }])
    // Rules name only tools: every prompt and resource is outside the allow-list.
    expect((await client.listPrompts()).prompts).toEqual([])
    expect((await client.listResources()).resources).toEqual([])
    const denied = await rawCall(url, transport.sessionId!, undefined, { jsonrpc: "2.0", id: 9, method: "tools/call", params: { name: "get-sum", arguments: { a: 1, b: 2 } } })
    expect(denied).toEqual({ status: 400, body: JSON.stringify({ jsonrpc: "2.0", id: 9, error: { code: -32602, message: "Unknown tool: get-sum" } }) })
    const resource = await rawCall(url, transport.sessionId!, undefined, { jsonrpc: "2.0", id: 10, method: "resources/read", params: { uri: "demo://resource/static/document/architecture.md" } })
    expect(resource).toEqual({
      status: 400,
      body: JSON.stringify({ jsonrpc: "2.0", id: 10, error: { code: -32602, message: "Unknown resource: demo://resource/static/document/architecture.md" } })
    })
    await client.close()
  })

  it("allows get-sum for jwt.sub == test-user and get-env for the nested claim", async () => {
    const user = await token({ sub: "test-user" })
    const { client } = await connectAs(url, user)
    expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(["echo", "get-sum"])
    expect((await client.callTool({ name: "get-sum", arguments: { a: 2, b: 3 } })).content).toEqual([{ type: "text", text: "The sum of 2 and 3 is 5." }])
    await client.close()
    const other = await token({ sub: "someone", nested: { key: "value" } })
    const second = await connectAs(url, other)
    expect((await second.client.listTools()).tools.map((t) => t.name).sort()).toEqual(["echo", "get-env"])
    const denied = await rawCall(url, second.transport.sessionId!, other, { jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "get-sum", arguments: { a: 1, b: 1 } } })
    expect(denied.status).toBe(400)
    expect(JSON.parse(denied.body)).toEqual({ jsonrpc: "2.0", id: 3, error: { code: -32602, message: "Unknown tool: get-sum" } })
    await second.client.close()
  })

  it("accumulates route and backend rule sets (a backend deny narrows the route's allow-list)", async () => {
    const layered = gw.url(port2, "/mcp")
    const paid = await connectAs(layered, undefined)
    expect((await paid.client.listTools()).tools.map((t) => t.name).sort()).toEqual(["echo", "get-sum"])
    await paid.client.close()
    const free = await connectAs(layered, undefined, { "x-tier": "free" })
    expect((await free.client.listTools()).tools.map((t) => t.name)).toEqual(["echo"])
    await free.client.close()
  })

  it("logs the MCP fields and counts agentgateway_mcp_requests_total", async () => {
    const user = await token({ sub: "test-user" })
    const { client, transport } = await connectAs(url, user)
    const before = gw.logs.length
    await client.callTool({ name: "echo", arguments: { message: "logged" } })
    const sessionId = transport.sessionId!
    // The line is written when the SSE response has ended, which may be just after the client read the result.
    const line = await vi.waitFor(() => {
      const found = gw.logs.slice(before).find((l) => l.includes("mcp.method.name=tools/call"))
      expect(found).toBeDefined()
      return found!
    })
    for (const field of ["protocol=mcp", "mcp.target=mcp2", "mcp.resource.type=tool", "gen_ai.tool.name=echo", `mcp.session.id=${createHash("sha256").update(sessionId).digest("hex").slice(0, 16)}`, "jwt.sub=test-user", "http.status=200"]) {
      expect(line).toContain(field)
    }
    // The id itself resumes the session: the log carries only its digest.
    expect(line).not.toContain(sessionId)
    // A denied prompt is logged and counted under the name the target knows it by.
    const beforePrompt = gw.logs.length
    const denied = await rawCall(url, sessionId, user, { jsonrpc: "2.0", id: 5, method: "prompts/get", params: { name: "simple-prompt" } })
    expect(denied).toEqual({ status: 400, body: JSON.stringify({ jsonrpc: "2.0", id: 5, error: { code: -32602, message: "Unknown prompt: simple-prompt" } }) })
    const promptLine = await vi.waitFor(() => {
      const found = gw.logs.slice(beforePrompt).find((l) => l.includes("mcp.method.name=prompts/get"))
      expect(found).toBeDefined()
      return found!
    })
    for (const field of ["mcp.target=mcp2", "mcp.resource.type=prompt", "gen_ai.prompt.name=simple-prompt", "http.status=400"]) expect(promptLine).toContain(field)
    expect(promptLine).not.toContain("gen_ai.tool.name")
    await client.close()
    const metrics = await (await fetch(`http://127.0.0.1:${gw.ports.stats}/metrics`)).text()
    const series = metrics.split("\n").filter((l) => l.startsWith("agentgateway_mcp_requests_total{"))
    const echo = series.filter((l) => l.includes('method="tools/call"') && l.includes('resource_type="tool"') && l.includes('server="mcp2"') && l.includes('resource="echo"'))
    expect(echo).toHaveLength(1)
    // Two echo calls so far: the anonymous one and this one.
    expect(echo[0]!.endsWith(" 2")).toBe(true)
    expect(series.some((l) => l.includes('method="tools/list"') && l.includes('resource_type="unknown"') && l.includes('resource="unknown"'))).toBe(true)
    const prompt = series.filter((l) => l.includes('method="prompts/get"') && l.includes('resource_type="prompt"') && l.includes('server="mcp2"') && l.includes('resource="simple-prompt"'))
    expect(prompt).toHaveLength(1)
    expect(prompt[0]!.endsWith(" 1")).toBe(true)
  })
})
