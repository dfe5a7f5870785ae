import { Schema } from "effect"
import { describe, expect, it } from "vitest"
import * as McpSchema from "../../src/mcp/McpSchema.ts"

const bySchema = Schema.is(McpSchema.Message)

const cases: ReadonlyArray<unknown> = [
  { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "echo", arguments: { message: "hi" } } },
  { jsonrpc: "2.0", id: "a", method: "ping" },
  { jsonrpc: "2.0", method: "notifications/initialized" },
  { jsonrpc: "2.0", id: null, error: { code: -32700, message: "parse error" } },
  { jsonrpc: "2.0", id: 3, result: { tools: [] } },
  { jsonrpc: "2.0", id: 3, error: { code: -1, message: "x", data: { any: 1 } } },
  { jsonrpc: "1.0", id: 1, method: "ping" },
  { id: 1, method: "ping" },
  { jsonrpc: "2.0", id: true, method: "ping" },
  { jsonrpc: "2.0", id: {}, method: "ping" },
  { jsonrpc: "2.0", id: 1, method: 5 },
  { jsonrpc: "2.0", id: 1, method: "m", params: [1, 2] },
  { jsonrpc: "2.0", id: 1, method: "m", params: null },
  { jsonrpc: "2.0", id: 1, method: "m", params: "x" },
  { jsonrpc: "2.0", id: 1, error: { code: "1", message: "x" } },
  { jsonrpc: "2.0", id: 1, error: { code: 1 } },
  { jsonrpc: "2.0", id: 1, error: null },
  [{ jsonrpc: "2.0", id: 1, method: "ping" }],
  null,
  "string",
  42
]

describe("McpSchema.isMessage", () => {
  it("accepts exactly what the Message schema accepts", () => {
    for (const value of cases) expect([value, McpSchema.isMessage(value)]).toEqual([value, bySchema(value)])
  })

  it("classifies requests, notifications and responses", () => {
    expect(McpSchema.classify(cases[0])?._tag).toBe("Request")
    expect(McpSchema.classify(cases[2])?._tag).toBe("Notification")
    expect(McpSchema.classify(cases[4])?._tag).toBe("Response")
    expect(McpSchema.classify(cases[6])).toBeUndefined()
  })
})

describe("McpSchema.parse", () => {
  const nested = (depth: number): string => `${"[".repeat(depth)}${"]".repeat(depth)}`

  it("refuses messages nested deeper than MAX_NESTING (they could not be re-serialised safely)", () => {
    const ok = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"a":${nested(McpSchema.MAX_NESTING - 4)}}}}`
    const deep = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"a":${nested(20_000)}}}}`
    expect(McpSchema.parse(ok)?._tag).toBe("Request")
    expect(McpSchema.parse(deep)).toBeUndefined()
    expect(McpSchema.parse(`{"jsonrpc":"2.0","id":2,"result":${nested(McpSchema.MAX_NESTING + 1)}}`)).toBeUndefined()
  })
})

describe("McpSchema.headerMismatch (SEP-2243 mirror headers)", () => {
  const request = (method: string, params: Record<string, unknown>) => McpSchema.classify({ jsonrpc: "2.0", id: 1, method, params })!
  const b64 = (text: string) => `=?base64?${Buffer.from(text).toString("base64")}?=`

  it("takes absent headers, matching ones (plain or base64-wrapped), and refuses any other", () => {
    expect(McpSchema.headerMismatch(request("tools/call", { name: "echo" }), undefined, undefined)).toBeUndefined()
    expect(McpSchema.headerMismatch(request("tools/call", { name: "echo" }), "tools/call", "echo")).toBeUndefined()
    expect(McpSchema.headerMismatch(request("prompts/get", { name: "p ü" }), "prompts/get", b64("p ü"))).toBeUndefined()
    for (const method of ["resources/read", "resources/subscribe", "resources/unsubscribe"]) {
      expect(McpSchema.headerMismatch(request(method, { uri: "file:///x" }), method, "file:///x")).toBeUndefined()
      expect(McpSchema.headerMismatch(request(method, { uri: "file:///x" }), method, "file:///y")).toBe("Mcp-Name header does not match the request body")
    }
    const notification = McpSchema.classify({ jsonrpc: "2.0", method: "notifications/initialized" })!
    expect(McpSchema.headerMismatch(notification, "notifications/initialized", undefined)).toBeUndefined()
    expect(McpSchema.headerMismatch(request("tools/call", { name: "echo" }), "tools/list", undefined)).toBe("Mcp-Method header does not match the request body")
    expect(McpSchema.headerMismatch(request("tools/list", {}), undefined, "echo")).toBe("Mcp-Name header does not match the request body")
    const response = McpSchema.classify({ jsonrpc: "2.0", id: 1, result: {} })!
    expect(McpSchema.headerMismatch(response, "tools/call", undefined)).toBe("Mcp-Method header does not match the request body")
  })
})
