/**
 * Randomised checks (seeded, so a failure reproduces) of the parsers that read bytes a client
 * or an upstream controls (security.md §0.5, §1.1): the SSE parser and the stdio line splitter
 * give the same messages however the stream is cut into chunks, the JSON nesting scan agrees
 * with the real depth of any value, and the JSON-RPC envelope parser never throws.
 */
import { describe, expect, it } from "vitest"
import { LineSplitter, MAX_MESSAGE_BYTES, type SseEvent, SseParser } from "../../src/mcp/EventStream.ts"
import * as McpSchema from "../../src/mcp/McpSchema.ts"
import * as Json from "../../src/shared/Json.ts"
import { prng } from "../support/Prng.ts"

type Next = () => number
const pick = <A>(next: Next, items: ReadonlyArray<A>): A => items[Math.floor(next() * items.length)]!
const int = (next: Next, max: number) => Math.floor(next() * max)

/** Text made of the characters that matter to these parsers, plus multi-byte ones. */
const TEXT = ["a", "b", " ", ":", "\"", "\\", "[", "]", "{", "}", ",", "é", "€", "😀", "data", "event", "id"]
const text = (next: Next, max: number) => Array.from({ length: int(next, max) }, () => pick(next, TEXT)).join("")

/** Cuts `whole` at random places (sometimes inside a CRLF or a multi-byte character). */
const chunks = <T extends string | Buffer>(next: Next, whole: T): Array<T> => {
  const out: Array<T> = []
  let at = 0
  while (at < whole.length) {
    const size = 1 + int(next, 12)
    out.push(whole.slice(at, at + size) as T)
    at += size
  }
  return out
}

const collectSse = (pieces: ReadonlyArray<string>): Array<SseEvent> => {
  const events: Array<SseEvent> = []
  const parser = new SseParser((e) => events.push(e))
  for (const piece of pieces) expect(parser.push(piece)).toBeUndefined()
  return events
}

describe("SseParser", () => {
  it("gives the same events whole and in 2,000 random chunkings, with LF and CRLF lines", () => {
    const next = prng(0x55e)
    for (let round = 0; round < 2000; round++) {
      const expected: Array<{ event: string; data: string }> = []
      let stream = ""
      const eol = () => (next() < 0.5 ? "\n" : "\r\n")
      for (let i = 0; i < 1 + int(next, 4); i++) {
        if (next() < 0.3) stream += `: comment ${text(next, 5)}${eol()}`
        const event = next() < 0.5 ? "" : pick(next, ["message", "endpoint", "ping"])
        if (event !== "") stream += `event: ${event}${eol()}`
        const lines = Array.from({ length: 1 + int(next, 3) }, () => text(next, 8).replace(/[\r\n]/g, ""))
        for (const line of lines) stream += `data: ${line}${eol()}`
        stream += eol()
        expected.push({ event: event === "" ? "message" : event, data: lines.join("\n") })
      }
      const simplify = (events: Array<SseEvent>) => events.map(({ event, data }) => ({ event, data }))
      expect(simplify(collectSse([stream]))).toEqual(expected)
      expect(simplify(collectSse(chunks(next, stream)))).toEqual(expected)
    }
  })
})

describe("LineSplitter", () => {
  it("gives the same lines for 2,000 random byte chunkings, multi-byte characters cut in two included", () => {
    const next = prng(0x11e)
    for (let round = 0; round < 2000; round++) {
      const lines = Array.from({ length: 1 + int(next, 5) }, () => `{"x":"${text(next, 10).replace(/[\r\n"\\]/g, "")}"}`)
      const bytes = Buffer.from(lines.join("\n") + "\n", "utf8")
      const seen: Array<string> = []
      const splitter = new LineSplitter((line) => seen.push(line))
      for (const piece of chunks(next, bytes)) expect(splitter.push(piece)).toBeUndefined()
      expect(seen).toEqual(lines)
    }
  })
})

/** A random JSON value and its nesting depth (arrays and objects count one level each). */
const value = (next: Next, budget: number): { value: unknown; depth: number } => {
  const roll = next()
  if (budget <= 0 || roll < 0.3) {
    return { value: pick(next, [1, -2.5e3, true, null, "s", text(next, 6), "]]]", "{[", "\\\"["]), depth: 0 }
  }
  const children = Array.from({ length: int(next, 3) }, () => value(next, budget - 1 - int(next, 4)))
  const depth = 1 + Math.max(0, ...children.map((c) => c.depth))
  if (roll < 0.65) return { value: children.map((c) => c.value), depth }
  return { value: Object.fromEntries(children.map((c, i) => [`k${i}${pick(next, ["", "[", "}", "\""])}`, c.value])), depth }
}

describe("Json.nestsDeeperThan", () => {
  it("agrees with the real depth of 5,000 random values (brackets inside strings do not count)", () => {
    const next = prng(0xdee9)
    for (let round = 0; round < 5000; round++) {
      const { value: v, depth } = value(next, 12)
      const serialized = JSON.stringify(v)
      const limit = int(next, 10)
      expect(Json.nestsDeeperThan(serialized, limit)).toBe(depth > limit)
    }
  })
})

describe("McpSchema.parse", () => {
  it("never throws on 20,000 mutated messages, and classifies only objects with jsonrpc 2.0", () => {
    const next = prng(0x3c9)
    const seeds = [
      `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"m":"x"}}}`,
      `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`,
      `{"jsonrpc":"2.0","id":"a","result":{"content":[]}}`,
      `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"x"}}`
    ]
    for (let round = 0; round < 20_000; round++) {
      const chars = [...pick(next, seeds)]
      for (let m = 0; m < 1 + int(next, 4); m++) {
        const at = int(next, chars.length)
        const op = next()
        if (op < 0.33) chars.splice(at, 1)
        else if (op < 0.66) chars.splice(at, 0, pick(next, TEXT))
        else chars[at] = pick(next, TEXT)
      }
      const input = chars.join("")
      const parsed = McpSchema.parse(input)
      if (parsed !== undefined) {
        const raw: unknown = JSON.parse(input)
        expect(typeof raw === "object" && raw !== null && !Array.isArray(raw) && (raw as { jsonrpc?: unknown }).jsonrpc === "2.0").toBe(true)
      }
    }
  })
})

describe("SseParser with a long event", () => {
  it("reassembles an 8 MiB data line that arrives in 2,048 chunks", () => {
    const events: Array<SseEvent> = []
    const parser = new SseParser((e) => events.push(e))
    const piece = "x".repeat(4096)
    expect(parser.push("event: message\r\ndata: ")).toBeUndefined()
    for (let i = 0; i < 2048; i++) expect(parser.push(piece)).toBeUndefined()
    expect(parser.push("\r")).toBeUndefined()
    expect(parser.push("\n\r\n")).toBeUndefined()
    expect(events).toHaveLength(1)
    expect(events[0]!.data.length).toBe(8 * 1024 * 1024)
  })
})

describe("SseParser bounds", () => {
  it("refuses an event over MAX_MESSAGE_BYTES, whether one unfinished line or many data lines", () => {
    const piece = "y".repeat(1024 * 1024)
    const oneLine = new SseParser(() => {})
    let error: string | undefined
    oneLine.push("data: ")
    for (let i = 0; error === undefined && i <= MAX_MESSAGE_BYTES / piece.length; i++) error = oneLine.push(piece)
    expect(error).toBe("upstream event too large")

    const manyLines = new SseParser(() => {})
    error = undefined
    for (let i = 0; error === undefined && i <= MAX_MESSAGE_BYTES / piece.length; i++) error = manyLines.push(`data: ${piece}\n`)
    expect(error).toBe("upstream event too large")
  })
})
