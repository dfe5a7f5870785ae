/**
 * An upstream answer the gateway refuses (nested deeper than McpSchema.MAX_NESTING) fails its
 * call at once with a JSON-RPC error, over every target transport, instead of leaving the
 * client waiting for an answer that was dropped; the session stays usable.
 */
import type { ChildProcess } from "node:child_process"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as McpSchema from "../../src/mcp/McpSchema.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { connectClient } from "../support/McpClient.ts"
import { fixture, startFixture } from "../support/mcp/Peers.ts"

describe("MCP upstream answers the gateway refuses", () => {
  let http: { port: number; child: ChildProcess }
  let sse: { port: number; child: ChildProcess }
  let gw: Running
  let port: number
  beforeAll(async () => {
    http = await startFixture("http", "h")
    sse = await startFixture("sse", "s")
    port = await freePort()
    const route = (name: string, target: string) => `
- name: ${name}
  matches: [{path: {pathPrefix: /${name}}}]
  backends:
  - mcp:
      targets:
      - name: t
        ${target}`
    gw = await startGateway(`
gateways:
  default: {port: $PORT}
routes:${route("stdio", `stdio: {cmd: "${process.execPath}", args: ["${fixture}", "stdio"]}`)}${
      route("http", `mcp: {host: "http://127.0.0.1:${http.port}/mcp"}`)
    }${route("sse", `sse: {host: "http://127.0.0.1:${sse.port}/sse"}`)}
`, { vars: { PORT: port } })
  })
  afterAll(async () => {
    await gw.stop()
    http.child.kill()
    sse.child.kill()
  })

  for (const transport of ["stdio", "http", "sse"]) {
    it(`${transport} target: the call fails with "invalid response from upstream"`, async () => {
      const { client } = await connectClient(gw.url(port, `/${transport}/mcp`))
      const failed = await client.callTool({ name: "deep", arguments: { depth: McpSchema.MAX_NESTING + 8 } }).then(
        () => "answered",
        (e: Error) => e.message
      )
      expect(failed).toContain("failed to send message: t: invalid response from upstream")
      // A shallow answer on the same session still works.
      expect((await client.callTool({ name: "deep", arguments: { depth: 3 } })).content).toEqual([{ type: "text", text: "deep" }])
      await client.close()
    })
  }
})
