/**
 * A2A benchmark: streaming time-to-first-event through the gateway against the agent directly,
 * in one run, on this machine.
 *
 *   npm run bench:a2a             (builds dist/ first, then runs this file on Node 24)
 *
 * Child processes: the `@a2a-js/sdk` agent (bench/a2a-agent.ts) and the gateway (dist/main.js)
 * with one route, `a2a: {}`, in front of it. The load is one v1.0 `SendStreamingMessage` at a
 * time per path over one keep-alive connection (a closed loop: latency, not throughput), the
 * two paths interleaved in ABBA order so machine drift hits both alike. Time to first event is
 * measured from writing the request to the end of the first SSE event (`\n\n`), which must be
 * the JSON-RPC answer carrying the new task; the rest of the stream is read to its end before
 * the next request. Target (issue 7): gateway p50 ≤ direct p50 + 0.6 ms. Always exits 0 once the
 * figures are printed; exits 1 only when it cannot run.
 *
 * Environment: BENCH_GATEWAY_NODE_ARGS as for bench/http.ts, and
 *   BENCH_A2A_STREAMS  measured streams per path (default 2000)
 *   BENCH_A2A_WARMUP   streams per path before measuring (default 200)
 */
import * as http from "node:http"
import { fixed, forkServer, isInterrupted, Latencies, positive, runMain, startGateway, table, verdict } from "./lib.ts"

const STREAMS = Math.round(positive("BENCH_A2A_STREAMS", 2000))
const WARMUP = Math.round(positive("BENCH_A2A_WARMUP", 200))
/** The p50 time to first event the gateway may add (issue 7). */
const TARGET_DELTA_MS = 0.6
/** One stream that takes longer than this counts as an error. */
const STREAM_TIMEOUT_MS = 10_000
/** Streams per ABBA slot. */
const SLOT = 50

interface Path {
  readonly name: string
  readonly port: number
  readonly agent: http.Agent
  readonly latencies: Latencies
  measured: number
  errors: number
}

let seq = 0
const body = (): Buffer =>
  Buffer.from(JSON.stringify({
    jsonrpc: "2.0",
    id: ++seq,
    method: "SendStreamingMessage",
    params: { message: { messageId: `bench-${seq}`, role: "ROLE_USER", parts: [{ text: "hello", mediaType: "text/plain" }] }, configuration: {} }
  }))

/** One stream: resolves with the time to its first event in ms, or undefined when it was wrong. */
const stream = (path: Path): Promise<number | undefined> =>
  new Promise((resolve) => {
    const payload = body()
    let first: number | undefined
    let text = ""
    let settled = false
    const done = (value: number | undefined) => {
      if (settled) return
      settled = true
      resolve(value)
    }
    const req = http.request(
      {
        host: "127.0.0.1",
        port: path.port,
        method: "POST",
        path: "/a2a/jsonrpc",
        agent: path.agent,
        timeout: STREAM_TIMEOUT_MS,
        headers: { "content-type": "application/json", accept: "text/event-stream", "a2a-version": "1.0", "content-length": String(payload.length) }
      },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume()
          return done(undefined)
        }
        res.setEncoding("utf8")
        res.on("data", (chunk: string) => {
          if (first !== undefined) return
          text += chunk
          const end = text.indexOf("\n\n")
          if (end === -1) return
          first = performance.now() - start
          // The first event answers the call with the task it created.
          if (!text.slice(0, end).includes('"task"')) first = Number.NaN
        })
        res.on("end", () => done(first !== undefined && Number.isFinite(first) ? first : undefined))
        res.on("error", () => done(undefined))
      }
    )
    req.on("timeout", () => req.destroy(new Error("timed out")))
    req.on("error", () => done(undefined))
    const start = performance.now()
    req.end(payload)
  })

const run = async (path: Path, count: number, record: boolean): Promise<void> => {
  for (let i = 0; i < count && !isInterrupted(); i++) {
    const ms = await stream(path)
    if (ms === undefined) path.errors++
    else if (record) {
      path.latencies.add(ms)
      path.measured++
    }
  }
}

const main = async (): Promise<void> => {
  const agent = await forkServer("a2a agent", "a2a-agent.ts", [])
  const gateway = await startGateway(
    (port) =>
      JSON.stringify({
        binds: [{ port, listeners: [{ routes: [{ name: "agent", policies: { a2a: {} }, backends: [{ host: `127.0.0.1:${agent.port}` }] }] }] }]
      }),
    "bench:a2a"
  )
  const paths: ReadonlyArray<Path> = [
    { name: "direct", port: agent.port, agent: new http.Agent({ keepAlive: true, maxSockets: 1 }), latencies: new Latencies(), measured: 0, errors: 0 },
    { name: "gateway", port: gateway.port, agent: new http.Agent({ keepAlive: true, maxSockets: 1 }), latencies: new Latencies(), measured: 0, errors: 0 }
  ]
  const [direct, viaGateway] = paths
  if (direct === undefined || viaGateway === undefined) throw new Error("unreachable")
  process.stdout.write(`A2A streaming time to first event: ${STREAMS} streams per path after ${WARMUP} warm-up, one at a time, ABBA slots of ${SLOT}\n`)
  for (const p of paths) await run(p, WARMUP, false)
  for (let done = 0, slot = 0; done < STREAMS && !isInterrupted(); done += SLOT, slot++) {
    const n = Math.min(SLOT, STREAMS - done)
    const order = slot % 2 === 0 ? [direct, viaGateway] : [viaGateway, direct]
    for (const p of order) await run(p, n, true)
  }
  for (const p of paths) p.agent.destroy()
  const ps = [0.5, 0.9, 0.99]
  const rows = paths.map((p) => {
    const [p50, p90, p99] = p.latencies.percentiles(ps)
    return [p.name, String(p.measured), fixed(p50 ?? Number.NaN, 3), fixed(p90 ?? Number.NaN, 3), fixed(p99 ?? Number.NaN, 3), String(p.errors)]
  })
  process.stdout.write(table(["path", "streams", "p50 ms", "p90 ms", "p99 ms", "errors"], rows, new Set([1, 2, 3, 4, 5])) + "\n")
  const delta = (viaGateway.latencies.percentiles([0.5])[0] ?? Number.NaN) - (direct.latencies.percentiles([0.5])[0] ?? Number.NaN)
  process.stdout.write(`p50 time to first event, gateway − direct: ${delta >= 0 ? "+" : ""}${fixed(delta, 3)} ms (target ≤ +${TARGET_DELTA_MS} ms): ${verdict(delta <= TARGET_DELTA_MS)}\n`)
}

await runMain(main)
