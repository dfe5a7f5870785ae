import { describe, expect, it } from "vitest"
import { AccessLog, FLUSH_BYTES, FLUSH_INTERVAL_MS } from "../../src/observability/AccessLog.ts"

const collecting = () => {
  const writes: Array<string> = []
  return { writes, sink: { write: (chunk: string) => void writes.push(chunk) } }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe("AccessLog", () => {
  it("formats text lines with quoted values and leaves out empty and removed fields", () => {
    const { writes, sink } = collecting()
    const log = new AccessLog("text", ["http.version"], sink)
    log.log(["route", "http.path", "http.version", "error", "duration"], ["default/r", "/a b", "HTTP/1.1", undefined, "3ms"])
    log.drain()
    expect(writes).toHaveLength(1)
    expect(writes[0]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z\tinfo\trequest route=default\/r http\.path="\/a b" duration=3ms\n$/)
  })

  it("formats JSON lines", () => {
    const { writes, sink } = collecting()
    const log = new AccessLog("json", [], sink)
    log.log(["route", "http.status"], ["default/r", 200])
    log.drain()
    const record = JSON.parse(writes[0]!) as Record<string, unknown>
    expect(record).toMatchObject({ level: "info", scope: "request", route: "default/r", "http.status": 200 })
  })

  it("batches lines: one write for a burst, after the flush interval", async () => {
    const { writes, sink } = collecting()
    const log = new AccessLog("text", [], sink)
    for (let i = 0; i < 50; i++) log.log(["n"], [i])
    expect(writes).toHaveLength(0)
    await sleep(FLUSH_INTERVAL_MS * 5)
    expect(writes).toHaveLength(1)
    expect(writes[0]!.split("\n").filter((l) => l !== "")).toHaveLength(50)
  })

  it("writes at once when a batch reaches FLUSH_BYTES", () => {
    const { writes, sink } = collecting()
    const log = new AccessLog("text", [], sink)
    const big = "x".repeat(1024)
    while (writes.length === 0) log.log(["v"], [big])
    // Written synchronously by the line that crossed the threshold, not one line later.
    const lineLength = writes[0]!.indexOf("\n") + 1
    expect(writes[0]!.length).toBeGreaterThanOrEqual(FLUSH_BYTES)
    expect(writes[0]!.length).toBeLessThan(FLUSH_BYTES + lineLength)
    log.drain()
  })

  it("drain writes what is pending, and nothing is written twice", async () => {
    const { writes, sink } = collecting()
    const log = new AccessLog("text", [], sink)
    log.log(["n"], [1])
    log.drain()
    await sleep(FLUSH_INTERVAL_MS * 3)
    expect(writes).toHaveLength(1)
  })
})
