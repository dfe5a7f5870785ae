/**
 * Tracing benchmark: what tracing costs per request when it is configured but a request is not
 * sampled (the hot path must not pay for it), and, for information, when every request is.
 *
 *   npm run bench:tracing         (builds dist/ first, then runs this file on Node 24)
 *
 * Child processes as in bench/http.ts: the upstream, the baseline proxy, and three gateways with
 * the same 0-policy route: tracing not configured, tracing configured with `randomSampling:
 * false` (no request carries a traceparent, so none is sampled), and `randomSampling: true`
 * exporting OTLP/HTTP to a small receiver in this process that accepts and discards. Loaded in
 * turn with the same small GET in interleaved slots (ABBA). Target (issue 6): unsampled tracing
 * adds ≤ 2 µs CPU per request over tracing off. Always exits 0 once the measurements are
 * printed; exits 1 only when it cannot run.
 *
 * Environment: BENCH_SECONDS, BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_ROUNDS and
 * BENCH_GATEWAY_NODE_ARGS as for bench/http.ts.
 */
import * as http from "node:http"
import {
  alive,
  fixed,
  forkServer,
  grouped,
  pidOf,
  printHeader,
  type Proxy,
  proxyOf,
  reportTail,
  runMain,
  runScenario,
  type Scenario,
  send,
  signed,
  startGateway,
  table,
  verdict,
} from "./lib.ts"

/** Unsampled tracing over tracing off, CPU µs per request. */
const MAX_ADDED_US = 2

const SMALL_GET: Scenario = { name: "small GET", method: "GET", path: "/", headers: {}, body: undefined }

const config = (port: number, upstreamPort: number, tracing: string): string => `
${tracing}
binds:
- port: ${port}
  listeners:
  - routes:
    - backends:
      - host: 127.0.0.1:${upstreamPort}
`

const OFF = "gateway, tracing off"
const UNSAMPLED = "gateway, tracing unsampled"
const SAMPLED = "gateway, every request traced"

const main = async (): Promise<void> => {
  const cores = printHeader("Tracing benchmark", "per proxy")
  // An OTLP/HTTP receiver that accepts every batch (the sampled gateway exports to it).
  let batches = 0
  const receiver = http.createServer((req, res) => {
    req.resume()
    req.on("end", () => {
      batches++
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end()
    })
  })
  await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", () => resolve()))
  const otlp = `http://127.0.0.1:${(receiver.address() as { port: number }).port}`
  const tracing = (sampled: boolean) => `config:\n  tracing: {otlpEndpoint: "${otlp}", otlpProtocol: http, path: /v1/traces, randomSampling: ${sampled}}`

  const upstream = await forkServer("upstream", "upstream.ts", [])
  const baseline = await forkServer("baseline proxy", "baseline-proxy.ts", [`http://127.0.0.1:${upstream.port}`])
  const off = await startGateway((port) => config(port, upstream.port, ""), "bench:tracing")
  const unsampled = await startGateway((port) => config(port, upstream.port, tracing(false)), "bench:tracing")
  const sampled = await startGateway((port) => config(port, upstream.port, tracing(true)), "bench:tracing")
  const proxies: ReadonlyArray<Proxy> = [
    proxyOf("baseline", baseline.port, baseline.child),
    proxyOf(OFF, off.port, off.child),
    proxyOf(UNSAMPLED, unsampled.port, unsampled.child),
    proxyOf(SAMPLED, sampled.port, sampled.child)
  ]
  for (const p of [off, unsampled, sampled]) {
    const reply = await send(p.port, { method: "GET", path: "/", headers: {} })
    if (reply.status !== 200) throw new Error(`sanity check: a gateway answered ${reply.status}`)
  }
  process.stdout.write(`running ${SMALL_GET.name} ...\n`)
  const measurements = await runScenario(proxies, SMALL_GET, pidOf(upstream.child, "upstream"))
  for (const p of [off, unsampled, sampled]) if (!alive(p.child)) throw new Error(`a gateway died under load\n${p.stderr()}`)

  const offM = measurements.find((m) => m.proxy === OFF)
  const header = ["proxy", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "over tracing off", "target", "result", "errors"]
  const rows = measurements.map((m) => {
    const added = offM === undefined ? NaN : m.cpuUsPerRequest - offM.cpuUsPerRequest
    const target = m.proxy === UNSAMPLED
    return [
      m.proxy,
      grouped(m.requests / m.seconds),
      fixed(m.p50, 2),
      fixed(m.p99, 2),
      fixed(m.cpuUsPerRequest, 1),
      m.proxy === "baseline" || m.proxy === OFF ? "" : `${signed(added)} µs`,
      target ? `<= +${MAX_ADDED_US} µs` : "",
      target ? verdict(added <= MAX_ADDED_US) : "",
      String(m.errors)
    ]
  })
  process.stdout.write(`\n${table(header, rows, new Set([1, 2, 3, 4, 5, 8]))}\n\nOTLP batches received from the sampled gateway: ${batches}\n\n`)
  process.stdout.write(reportTail(proxies, measurements, off.stderr(), cores, "Each gateway is its own process, measured in its own slots."))
  receiver.close()
}

await runMain(main)
