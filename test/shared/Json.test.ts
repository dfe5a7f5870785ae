/**
 * JSON bounded before parsing: the nesting scan (brackets in strings do not count), the
 * top-level scalar read of a message too deep to parse, and that a deep document never reaches
 * `JSON.parse` (which would block the event loop on it) in the MCP, A2A and CEL parsers.
 */
import { afterEach, describe, expect, it, vi } from "vitest"
import { methodOf } from "../../src/a2a/Protocol.ts"
import { parseJson } from "../../src/cel/Functions.ts"
import * as McpSchema from "../../src/mcp/McpSchema.ts"
import * as Json from "../../src/shared/Json.ts"

const nested = (depth: number, inner = "1") => `${"[".repeat(depth)}${inner}${"]".repeat(depth)}`

describe("Json.nestsDeeperThan", () => {
  it("counts arrays and objects, not brackets inside strings or escaped quotes", () => {
    expect(Json.nestsDeeperThan(nested(64), 64)).toBe(false)
    expect(Json.nestsDeeperThan(nested(65), 64)).toBe(true)
    expect(Json.nestsDeeperThan(`{"a":{"b":[{"c":1}]}}`, 4)).toBe(false)
    expect(Json.nestsDeeperThan(`{"a":{"b":[{"c":1}]}}`, 3)).toBe(true)
    expect(Json.nestsDeeperThan(`{"s":"${"[".repeat(100)}"}`, 1)).toBe(false)
    expect(Json.nestsDeeperThan(`{"s":"\\"${"{".repeat(100)}"}`, 1)).toBe(false)
    expect(Json.nestsDeeperThan(`["\\\\",${nested(3)}]`, 3)).toBe(true)
  })

  it("parseBounded refuses deep text without calling JSON.parse, and parses the rest", () => {
    const spy = vi.spyOn(JSON, "parse")
    expect(() => Json.parseBounded(nested(1 << 20))).toThrow(Json.TooDeep)
    expect(spy).not.toHaveBeenCalled()
    expect(Json.parseBounded(`{"a":[1,2]}`)).toEqual({ a: [1, 2] })
  })
})

describe("Json.topLevelScalar", () => {
  it("reads a top-level string or number member without parsing the document", () => {
    const deep = `{"jsonrpc":"2.0","result":{"x":${nested(500)}},"id":7}`
    expect(Json.topLevelScalar(deep, "id")).toBe(7)
    expect(Json.topLevelScalar(`{"id" : "a\\"b", "result": ${nested(500)}}`, "id")).toBe(`a"b`)
    expect(Json.topLevelScalar(`{"result":{"id":1}}`, "id")).toBeUndefined()
    expect(Json.topLevelScalar(`{"method":"x","id":2}`, "method")).toBe("x")
    expect(Json.topLevelScalar(`{"note":"\\"id\\": 3"}`, "id")).toBeUndefined()
    expect(Json.topLevelScalar(`{"id":{"n":1}}`, "id")).toBeUndefined()
  })
})

describe("parsers of client and upstream JSON", () => {
  afterEach(() => vi.restoreAllMocks())

  it("never hand a document deeper than MAX_NESTING to JSON.parse", () => {
    const deep = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"a":${nested(1 << 20)}}}`
    const spy = vi.spyOn(JSON, "parse")
    expect(McpSchema.parse(deep)).toBeUndefined()
    expect(McpSchema.parseUpstream(`{"jsonrpc":"2.0","id":9,"result":${nested(1 << 20)}}`)).toEqual({ _tag: "Invalid", id: 9 })
    expect(methodOf(Buffer.from(deep))).toBe("unknown")
    expect(() => parseJson(deep)).toThrow(Json.TooDeep)
    expect(spy.mock.calls.filter(([text]) => typeof text === "string" && text.length > 10_000)).toEqual([])
  })
})
