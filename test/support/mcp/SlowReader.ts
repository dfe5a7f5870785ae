/**
 * A slow client reading a long MCP stream: it calls the fixture's `flood` tool through the
 * gateway (running in this process) and pauses after every chunk, sampling this process's
 * retained memory (after a full GC) every 4 MiB. What the gateway holds must stay a few buffers
 * whatever the stream's length.
 */
import * as http from "node:http"
import * as v8 from "node:v8"
import * as vm from "node:vm"

const SAMPLE_EVERY = 4 * 1024 * 1024

/** Bytes received and the peak retained growth (MiB) while reading `total` bytes of notifications. */
export const readFloodSlowly = async (url: string, sessionId: string, total: number, tool = "flood"): Promise<{ received: number; peakMiB: number; tail: string }> => {
  const body = JSON.stringify({ jsonrpc: "2.0", id: 7, method: "tools/call", params: { name: tool, arguments: { bytes: total, chunk: 65536 } } })
  // Retained memory, not garbage: collect before each sample.
  v8.setFlagsFromString("--expose-gc")
  const gc = vm.runInNewContext("gc") as () => void
  const retained = () => {
    gc()
    const m = process.memoryUsage()
    return m.heapUsed + m.arrayBuffers
  }
  const base = retained()
  let peak = 0
  return new Promise((resolve, reject) => {
    const headers = { accept: "application/json, text/event-stream", "content-type": "application/json", "mcp-session-id": sessionId }
    const req = http.request(url, { method: "POST", headers }, (res) => {
      let bytes = 0
      let nextSample = SAMPLE_EVERY
      let tail = ""
      res.on("data", (chunk: Buffer) => {
        bytes += chunk.length
        tail = (tail + chunk.toString("latin1")).slice(-200)
        if (bytes >= nextSample) {
          nextSample += SAMPLE_EVERY
          peak = Math.max(peak, retained() - base)
        }
        // Slow reader: a pause after every chunk lets the socket and pipes fill up.
        res.pause()
        setTimeout(() => res.resume(), 1)
      })
      res.on("end", () => resolve({ received: bytes, peakMiB: peak / (1024 * 1024), tail }))
      res.on("error", reject)
    })
    req.on("error", reject)
    req.end(body)
  })
}
