/**
 * The MCP gateway end to end with real peers: the official SDK client over Streamable HTTP,
 * `@modelcontextprotocol/server-everything` over stdio behind it.
 */
import { CreateMessageRequestSchema, ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { connectClient } from "../support/McpClient.ts"
import { startQuickstart } from "../support/Quickstart.ts"
import { everything } from "../support/mcp/Peers.ts"
import { INIT, post } from "../support/mcp/Raw.ts"


describe("MCP over stdio (server-everything)", () => {
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
    - name: one
      matches: [{path: {pathPrefix: /one}}]
      backends:
      - mcp:
          targets:
          - name: everything
            stdio: {cmd: "${process.execPath}", args: ["${everything}", "stdio"]}
    - name: two
      matches: [{path: {pathPrefix: /two}}]
      backends:
      - mcp:
          targets:
          - name: a
            stdio: {cmd: "${process.execPath}", args: ["${everything}", "stdio"]}
          - name: b
            stdio: {cmd: "${process.execPath}", args: ["${everything}", "stdio"]}
`,
      { vars: { PORT: port } }
    )
  })
  afterAll(async () => {
    await gw.stop()
  })

  it("passes a single target through: tools, prompts, resources", async () => {
    const { client } = await connectClient(gw.url(port, "/one/mcp"))
    expect(client.getServerVersion()?.name).toBe("mcp-servers/everything")
    const tools = await client.listTools()
    expect(tools.tools.map((t) => t.name)).toContain("echo")
    const echo = await client.callTool({ name: "echo", arguments: { message: "hi" } })
    expect(echo.content).toEqual([{ type: "text", text: "Echo: hi" }])
    const prompts = await client.listPrompts()
    expect(prompts.prompts.map((p) => p.name)).toContain("simple-prompt")
    const prompt = await client.getPrompt({ name: "simple-prompt" })
    expect(prompt.messages.length).toBeGreaterThan(0)
    const resources = await client.listResources()
    const first = resources.resources[0]!
    const read = await client.readResource({ uri: first.uri })
    expect(read.contents[0]!.uri).toBe(first.uri)
    await client.close()
  })

  it("relays sampling and elicitation requests with their responses", async () => {
    const { client } = await connectClient(gw.url(port, "/one/mcp"), { sampling: {}, elicitation: {} })
    client.setRequestHandler(CreateMessageRequestSchema, async () => ({
      role: "assistant",
      content: { type: "text", text: "sampled!" },
      model: "test-model"
    }))
    client.setRequestHandler(ElicitRequestSchema, async () => ({ action: "accept", content: { color: "blue" } }))
    const tools = await client.listTools()
    expect(tools.tools.map((t) => t.name)).toContain("trigger-sampling-request")
    const sampled = await client.callTool({ name: "trigger-sampling-request", arguments: { prompt: "x", maxTokens: 5 } })
    expect(JSON.stringify(sampled.content)).toContain("sampled!")
    await client.close()
  })

  it("federates two targets: prefixed names, routed calls, merged initialize", async () => {
    const { client } = await connectClient(gw.url(port, "/two/mcp"))
    expect(client.getServerVersion()?.name).toBe("agentgateway")
    expect(client.getInstructions()).toMatch(/^This server is a gateway to a set of mcp servers\./)
    expect(client.getInstructions()).toContain("\n\n[a]\n")
    const names = (await client.listTools()).tools.map((t) => t.name)
    expect(names).toContain("a_echo")
    expect(names).toContain("b_echo")
    expect(names.every((n) => n.startsWith("a_") || n.startsWith("b_"))).toBe(true)
    const echo = await client.callTool({ name: "b_echo", arguments: { message: "to b" } })
    expect(echo.content).toEqual([{ type: "text", text: "Echo: to b" }])
    const prompts = (await client.listPrompts()).prompts.map((p) => p.name)
    expect(prompts).toContain("a_simple-prompt")
    const resources = (await client.listResources()).resources
    expect(resources.every((r) => r.uri.startsWith("a+") || r.uri.startsWith("b+"))).toBe(true)
    const read = await client.readResource({ uri: resources[0]!.uri })
    expect(read.contents[0]!.uri).toBe(resources[0]!.uri)
    await expect(client.callTool({ name: "echo", arguments: {} })).rejects.toThrow(/Unknown tool: echo/)
    await client.close()
  })
})

describe("the quickstart's MCP demo", () => {
  it("federates two server-everything targets at /mcp", async () => {
    const { gw, port: p0 } = await startQuickstart()
    try {
      const { client } = await connectClient(gw.url(p0, "/mcp"))
      const names = (await client.listTools()).tools.map((t) => t.name)
      expect(names).toContain("everything_echo")
      expect(names).toContain("second_echo")
      expect((await client.callTool({ name: "second_echo", arguments: { message: "demo" } })).content).toEqual([{ type: "text", text: "Echo: demo" }])
      await client.close()
      expect((await fetch(gw.url(p0, "/hello"))).status).toBe(200)
    } finally {
      await gw.stop()
    }
  })
})

describe("MCP request bodies over maxBufferSize", () => {
  let gw: Running
  let port: number
  beforeAll(async () => {
    port = await freePort()
    gw = await startGateway(
      `
frontendPolicies:
  http: {maxBufferSize: 1024}
binds:
- port: $PORT
  listeners:
  - routes:
    - backends:
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

  const call = (body: unknown, session: string) => post(gw.url(port, "/mcp"), body, { "mcp-protocol-version": "2025-06-18", "mcp-session-id": session })

  it("are refused with 413 before any parsing, and the session lives on", async () => {
    const init = await post(gw.url(port, "/mcp"), INIT)
    expect(init.status).toBe(200)
    const session = init.headers.get("mcp-session-id")!
    await init.text()
    const big = JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "echo", arguments: { message: "x".repeat(4096) } } })
    const refused = await call(big, session)
    expect(refused.status).toBe(413)
    expect(await refused.text()).toBe("request body too large")
    const small = await call({ jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "echo", arguments: { message: "fits" } } }, session)
    expect(small.status).toBe(200)
    expect(await small.text()).toContain("Echo: fits")
  })
})
