/**
 * Upstream's `examples/mcp-multiplex` run as written, but offline: its `uvx mcp-server-time` and
 * `npx @modelcontextprotocol/server-everything` targets are replaced by local stdio servers (our
 * SDK fixture named "time", server-everything run with node), keeping the target names and the
 * structure. One endpoint federates both: names are `<target>_<tool>`, calls reach their target.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { connectClient } from "../support/McpClient.ts"
import { startQuickstart } from "../support/Quickstart.ts"
import { everything, fixture } from "../support/mcp/Peers.ts"

const example = path.resolve("/work/shared/reference/agentgateway/examples/mcp-multiplex/config.yaml")

/** The example with only its port and its two commands replaced. */
const offlineConfig = (): string => {
  const steps: Array<[string | RegExp, string]> = [
    ["- port: 3000\n", "- port: $PORT\n"],
    [/cmd: uvx\n(?:\s*#.*\n)*(\s*)args: \[.*\]\n/, `cmd: "${process.execPath}"\n$1args: ["${fixture}", "stdio"]\n$1env: {FIXTURE_NAME: time}\n`],
    [/cmd: npx\n(\s*)args: \["@modelcontextprotocol\/server-everything"\]/, `cmd: "${process.execPath}"\n$1args: ["${everything}", "stdio"]`]
  ]
  let out = fs.readFileSync(example, "utf8")
  for (const [from, to] of steps) {
    const next = out.replace(from, to)
    expect(next).not.toBe(out)
    out = next
  }
  expect(out).not.toMatch(/uvx|npx/)
  return out
}

describe("examples/mcp-multiplex (offline targets)", () => {
  let gw: Running
  let port: number
  beforeAll(async () => {
    port = await freePort()
    gw = await startGateway(offlineConfig(), { vars: { PORT: port } })
  })
  afterAll(() => gw.stop())

  it("federates both targets behind one endpoint", async () => {
    const { client } = await connectClient(gw.url(port, "/mcp"))
    expect(client.getServerVersion()?.name).toBe("agentgateway")
    expect(client.getInstructions()).toContain("[time]\ntime instructions")
    const names = (await client.listTools()).tools.map((t) => t.name)
    expect(names.filter((n) => n.startsWith("time_"))).toEqual(["time_echo", "time_pid", "time_add-tool", "time_flood"])
    expect(names).toContain("everything_echo")
    expect(names).toContain("everything_get-sum")
    expect(names.every((n) => n.startsWith("time_") || n.startsWith("everything_"))).toBe(true)
    expect((await client.callTool({ name: "time_echo", arguments: { text: "now" } })).content).toEqual([{ type: "text", text: "time: now" }])
    expect((await client.callTool({ name: "everything_echo", arguments: { message: "hi" } })).content).toEqual([{ type: "text", text: "Echo: hi" }])
    expect((await client.callTool({ name: "everything_get-sum", arguments: { a: 2, b: 3 } })).content).toEqual([
      { type: "text", text: "The sum of 2 and 3 is 5." }
    ])
    await client.close()
  })
})

describe("the quickstart's MCP transports (README: MCP Inspector settings)", () => {
  it("serves the demo over Streamable HTTP at /mcp and legacy SSE at /sse", async () => {
    const { Client } = await import("@modelcontextprotocol/sdk/client/index.js")
    const { SSEClientTransport } = await import("@modelcontextprotocol/sdk/client/sse.js")
    const { gw, port: p0 } = await startQuickstart()
    try {
      const sse = new Client({ name: "inspector-like", version: "1.0.0" })
      await sse.connect(new SSEClientTransport(new URL(gw.url(p0, "/sse"))))
      expect((await sse.listTools()).tools.map((t) => t.name)).toContain("second_echo")
      expect((await sse.callTool({ name: "everything_echo", arguments: { message: "sse" } })).content).toEqual([{ type: "text", text: "Echo: sse" }])
      await sse.close()
      const { client } = await connectClient(gw.url(p0, "/mcp"))
      expect((await client.callTool({ name: "second_echo", arguments: { message: "http" } })).content).toEqual([{ type: "text", text: "Echo: http" }])
      await client.close()
    } finally {
      await gw.stop()
    }
  })
})
