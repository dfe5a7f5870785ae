/**
 * HTTP benchmark: the gateway against the minimal Node proxy, in one run, on this machine.
 *
 *   npm run bench:http            (builds dist/ first, then runs this file on Node 24)
 *
 * Three child processes: an upstream (bench/upstream.ts), the baseline proxy
 * (bench/baseline-proxy.ts: node:http + undici Pool.stream) and the gateway (dist/main.js with
 * one route carrying requestHeaderModifier, responseHeaderModifier and cors). autocannon, in
 * this process, drives each proxy with the same load (32 connections, closed loop) for a small
 * GET and a 64 KiB POST: a warm-up of each proxy, then measured slots in ABBA order (baseline,
 * gateway, gateway, baseline) so drift of the machine weighs on both alike. The proxy's CPU time
 * (user+sys from /proc/<pid>/stat, all threads) over its measured slots divided by the completed
 * requests is its CPU per request; the gateway's figure is compared with the baseline's from the
 * same run (reference/performance.md targets). Memory is VmRSS/VmHWM from /proc/<pid>/status.
 * CPU used meanwhile by anything else on the machine (/proc/stat) is reported and flagged: on 2
 * cores another busy process skews every figure. Always exits 0 once the measurements are
 * printed (a benchmark is not a test); exits 1 only when it cannot run.
 *
 * Environment:
 *   BENCH_SECONDS            measured seconds per proxy and scenario (default 10)
 *   BENCH_WARMUP             warm-up seconds per proxy and scenario (default 5: the gateway's JIT needs more than 3)
 *   BENCH_CONNECTIONS        concurrent connections (default 32)
 *   BENCH_ROUNDS             measured rounds per scenario, ABBA order, BENCH_SECONDS split among them (default 10:
 *                            1 s slots; on a small VM CPU speed drifts over seconds, and short interleaved slots
 *                            spread that drift over both proxies)
 *   BENCH_SCENARIOS          "get" or "post" to run one scenario only (default both)
 *   BENCH_GATEWAY_NODE_ARGS  extra node flags for the gateway, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
 *   BENCH_BASELINE_NODE_ARGS the same for the baseline proxy (to profile both the same way)
 *   BENCH_GATEWAY_MAIN       the gateway command to run (default dist/main.js, the bundle); dist/Cli.js, the
 *                            unbundled tsc output, gives CPU profiles readable names
 *   BENCH_REPEAT             repetitions with fresh baseline and gateway processes (default 1). Two processes of
 *                            the same program measure up to ~10-20% apart on a small VM, so one run's ratio moves
 *                            by ±0.1-0.3; with N > 1 a last table lists each run's ratio and judges their median
 *
 * `node bench/http.ts --workers N` (N ≥ 2) measures throughput instead: the same gateway config
 * served by 1 worker (the single process) and by N workers (`WORKER_THREADS=N`, a primary and N
 * cluster workers), same load, ABBA slots, req/s and latency per scenario. CPU per request is not
 * reported there (the primary's pid does not account for its workers). Throughput only scales
 * with cores the load generator and the upstream leave free: on a 2-core machine expect little.
 *
 * `node bench/http.ts --compare` judges a change: two gateways, A (dist/main.js as usual) and B
 * (`BENCH_B_MAIN`, e.g. another worktree's dist/main.js, relative to the project, and/or
 * `BENCH_B_NODE_ARGS`, e.g. "--max-semi-space-size=8", which replace BENCH_GATEWAY_NODE_ARGS for
 * B), and the baseline, in rotating slots of one run (ABC, BCA, CAB; BENCH_REPEAT
 * runs with fresh processes). Runs measured apart differ by more than most changes do here;
 * within a run B/A and B − A per slot pair are steady. Prints CPU µs/req, B/A, the per-round
 * B − A and the peak RSS of each.
 */
import type { ChildProcess } from "node:child_process"
import * as os from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { setTimeout as sleep } from "node:timers/promises"
import {
  alive,
  CONNECTIONS,
  context,
  fixed,
  forkServer,
  GATEWAY_MAIN,
  GATEWAY_NODE_ARGS,
  type GatewayVariant,
  grouped,
  MEASURE_SECONDS,
  type Measurement,
  type Memory,
  memory,
  mib,
  pairedDifference,
  pidOf,
  printHeader,
  type Proxy,
  proxyOf,
  reportTail,
  ratioSummary,
  ratioText,
  REPEAT,
  ROOT,
  runMain,
  runScenario,
  type Scenario,
  send,
  signed,
  startGateway,
  stopChild,
  table,
  variantFromEnv,
  verdict,
  WARMUP_SECONDS
} from "./lib.ts"

// ---------------------------------------------------------------------------------------------
// Settings

const ORIGIN = "http://bench.example"
const POST_BODY = Buffer.alloc(64 * 1024, "a")
const HELLO = "hello, world\n"

interface HttpScenario extends Scenario {
  /** Gateway CPU per request over baseline CPU per request must not exceed this. */
  readonly maxRatio: number
}

const SCENARIOS: ReadonlyArray<HttpScenario> = [
  { name: "small GET", method: "GET", path: "/", headers: { origin: ORIGIN }, body: undefined, maxRatio: 1.25 },
  {
    name: "64 KiB POST",
    method: "POST",
    path: "/upload",
    headers: { origin: ORIGIN, "content-type": "application/octet-stream" },
    body: POST_BODY,
    maxRatio: 1.1
  }
]

/** BENCH_SCENARIOS=get or =post runs one scenario only (for profiling). */
const SELECTED = (() => {
  const wanted = (process.env["BENCH_SCENARIOS"] ?? "").toLowerCase().split(",").map((s) => s.trim()).filter((s) => s !== "")
  if (wanted.length === 0) return SCENARIOS
  const picked = SCENARIOS.filter((s) => wanted.some((w) => s.name.toLowerCase().includes(w)))
  return picked.length === 0 ? SCENARIOS : picked
})()

const RSS_IDLE_TARGET_MIB = 80
const RSS_LOAD_TARGET_MIB = 150

// ---------------------------------------------------------------------------------------------
// The gateway's config and the sanity checks

const gatewayConfig = (port: number, upstreamPort: number): string => `
binds:
- port: ${port}
  listeners:
  - name: bench
    routes:
    - name: bench
      policies:
        requestHeaderModifier: {set: {x-bench: "1"}}
        responseHeaderModifier: {add: {x-served-by: agw}}
        cors: {allowOrigins: ["*"], allowMethods: [GET, POST], allowHeaders: [content-type], maxAge: 10m}
      backends:
      - host: 127.0.0.1:${upstreamPort}
`

/** Checks that a proxy answers both scenarios correctly; for the gateway, that its policies run. */
const sanityCheck = async (port: number, isGateway: boolean): Promise<Array<string>> => {
  const problems: Array<string> = []
  const get = await send(port, { method: "GET", path: "/", headers: { origin: ORIGIN } })
  if (get.status !== 200) problems.push(`GET / answered ${get.status}`)
  if (get.body !== HELLO) problems.push(`GET / body was ${JSON.stringify(get.body.slice(0, 80))}`)
  const post = await send(port, {
    method: "POST",
    path: "/upload",
    headers: { origin: ORIGIN, "content-type": "application/octet-stream", "content-length": String(POST_BODY.length) },
    body: POST_BODY
  })
  if (post.status !== 200) problems.push(`POST /upload answered ${post.status}`)
  if (post.body !== String(POST_BODY.length)) problems.push(`upstream received ${post.body} bytes of ${POST_BODY.length}`)
  if (isGateway) {
    const servedBy = get.headers["x-served-by"]
    if (servedBy !== "agw") problems.push(`responseHeaderModifier: x-served-by was ${JSON.stringify(servedBy)}`)
    const allowOrigin = get.headers["access-control-allow-origin"]
    if (allowOrigin === undefined) problems.push("cors: no access-control-allow-origin on a request with Origin")
    const echoed = await send(port, { method: "GET", path: "/headers", headers: {} })
    let seen: unknown
    try {
      seen = JSON.parse(echoed.body)
    } catch {
      seen = undefined
    }
    const bench = typeof seen === "object" && seen !== null && "x-bench" in seen ? seen["x-bench"] : undefined
    if (bench !== "1") problems.push(`requestHeaderModifier: upstream saw x-bench=${JSON.stringify(bench)}`)
  }
  return problems
}

// ---------------------------------------------------------------------------------------------
// Report

const report = (measurements: ReadonlyArray<Measurement<HttpScenario>>): string => {
  const header = ["scenario", "proxy", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "proxy CPU", "CPU vs baseline", "target", "result", "non-2xx", "errors"]
  const rows: Array<Array<string>> = []
  for (const m of measurements) {
    const baseline = measurements.find((b) => b.scenario === m.scenario && b.proxy === "baseline")
    const isGateway = m.proxy === "gateway"
    const ratio = isGateway && baseline !== undefined ? m.cpuUsPerRequest / baseline.cpuUsPerRequest : NaN
    rows.push([
      m.scenario.name,
      m.proxy,
      grouped(m.requests / m.seconds),
      fixed(m.p50, 2),
      fixed(m.p99, 2),
      fixed(m.cpuUsPerRequest, 1),
      `${fixed(m.proxyCpuPercent, 0)}%`,
      isGateway && baseline !== undefined ? `${ratioText(ratio, m.scenario.maxRatio)}x (${signed(m.cpuUsPerRequest - baseline.cpuUsPerRequest)} µs)` : "1.00x",
      isGateway ? `<= ${m.scenario.maxRatio.toFixed(2)}x` : "",
      isGateway ? verdict(ratio <= m.scenario.maxRatio) : "",
      String(m.non2xx),
      String(m.errors)
    ])
  }
  return table(header, rows, new Set([2, 3, 4, 5, 6, 7, 10, 11]))
}

/** Memory of both proxies; targets apply to the gateway. Peak = max(VmHWM, highest sampled VmRSS). */
const memoryReport = (proxies: ReadonlyArray<Proxy>, atEnd: ReadonlyMap<string, Memory>): string => {
  const rows = proxies.map((p) => {
    const end = atEnd.get(p.name)
    const idle = p.idle
    const peak = Math.max(p.peakRssUnderLoad, end?.hwm ?? NaN)
    const isGateway = p.name === "gateway"
    const idleMib = mib(idle?.rss ?? NaN)
    return [
      p.name,
      fixed(idleMib, 1),
      `${fixed(mib(idle?.anon ?? NaN), 1)} / ${fixed(mib(idle?.file ?? NaN), 1)}`,
      isGateway ? `<= ${RSS_IDLE_TARGET_MIB}  ${verdict(idleMib <= RSS_IDLE_TARGET_MIB)}` : "",
      fixed(mib(peak), 1),
      fixed(mib(end?.rss ?? NaN), 1),
      `${fixed(mib(end?.anon ?? NaN), 1)} / ${fixed(mib(end?.file ?? NaN), 1)}`,
      isGateway ? `<= ${RSS_LOAD_TARGET_MIB}  ${verdict(mib(peak) <= RSS_LOAD_TARGET_MIB)}` : ""
    ]
  })
  return table(
    ["RSS (MiB)", "idle", "idle anon / file", "idle target", "peak under load", "end of load", "end anon / file", "load target"],
    rows,
    new Set([1, 2, 4, 5, 6])
  )
}

/** Runs `sanityCheck` on each proxy and prints the outcome; returns the names that failed. */
const checkProxies = async (proxies: ReadonlyArray<Proxy>, isGateway: (p: Proxy) => boolean): Promise<Array<string>> => {
  const failed: Array<string> = []
  for (const p of proxies) {
    const problems = await sanityCheck(p.port, isGateway(p))
    if (problems.length > 0) failed.push(p.name)
    process.stdout.write(
      problems.length === 0
        ? `sanity check ${p.name}: ok${isGateway(p) ? " (x-bench set upstream, x-served-by added, CORS header present, 64 KiB arrived whole)" : ""}\n`
        : `sanity check ${p.name}: FAILED\n${problems.map((line) => `  - ${line}\n`).join("")}`
    )
  }
  return failed
}

// ---------------------------------------------------------------------------------------------
// Main

/** One run: fresh baseline and gateway processes, every selected scenario, the full report. */
const once = async (upstream: { child: ChildProcess; port: number }, cores: number): Promise<Array<Measurement<HttpScenario>>> => {
  const upstreamUrl = `http://127.0.0.1:${upstream.port}`
  const baseline = await forkServer("baseline proxy", "baseline-proxy.ts", [upstreamUrl])
  const gateway = await startGateway((port) => gatewayConfig(port, upstream.port), "bench:http")
  const upstreamPid = pidOf(upstream.child, "upstream")
  const proxies: ReadonlyArray<Proxy> = [proxyOf("baseline", baseline.port, baseline.child), proxyOf("gateway", gateway.port, gateway.child)]
  process.stdout.write(
    `upstream :${upstream.port}, ${proxies.map((p) => `${p.name} :${p.port} (pid ${p.pid})`).join(", ")}\n`
  )

  // Idle memory: started, answered the readiness probe, left alone for a second.
  await sleep(1000)
  for (const p of proxies) p.idle = memory(p.pid)

  await checkProxies(proxies, (p) => p.name === "gateway")

  const measurements: Array<Measurement<HttpScenario>> = []
  for (const scenario of SELECTED) {
    process.stdout.write(`running ${scenario.name} ...\n`)
    measurements.push(...await runScenario(proxies, scenario, upstreamPid))
    if (!alive(baseline.child)) throw new Error("the baseline proxy died under load")
    if (!alive(gateway.child)) throw new Error(`the gateway died under load\n${gateway.stderr()}`)
  }
  const atEnd = new Map(proxies.map((p) => [p.name, memory(p.pid)]))

  process.stdout.write(`\n${report(measurements)}\n\n`)
  process.stdout.write(`${memoryReport(proxies, atEnd)}\n\n`)
  process.stdout.write(reportTail(proxies, measurements, gateway.stderr(), cores, `CPU vs baseline = gateway CPU µs/req / baseline CPU µs/req (and the difference). Latencies are autocannon's per-response times.`))
  await stopChild(baseline.child)
  await stopChild(gateway.child)
  return measurements
}

/** Each run's gateway/baseline ratio per scenario, and the verdict on their median. */
const repeatReport = (runs: ReadonlyArray<ReadonlyArray<Measurement<HttpScenario>>>): string =>
  ratioSummary(SELECTED.map((scenario) => ({
    name: scenario.name,
    target: scenario.maxRatio,
    ratios: runs.map((ms) => {
      const of = (proxy: string) => ms.find((m) => m.scenario.name === scenario.name && m.proxy === proxy)?.cpuUsPerRequest ?? NaN
      return of("gateway") / of("baseline")
    })
  })))

const main = async (): Promise<void> => {
  const cores = printHeader("HTTP benchmark", `per proxy and scenario${REPEAT > 1 ? `, ${REPEAT} runs with fresh proxy processes` : ""}`)
  const upstream = await forkServer("upstream", "upstream.ts", [])
  const runs: Array<Array<Measurement<HttpScenario>>> = []
  for (let run = 1; run <= REPEAT; run++) {
    if (REPEAT > 1) process.stdout.write(`\n=== run ${run} of ${REPEAT}\n`)
    runs.push(await once(upstream, cores))
  }
  if (REPEAT > 1) process.stdout.write(`\n=== ${REPEAT} runs\n${repeatReport(runs)}\n`)
}

// ---------------------------------------------------------------------------------------------
// --workers N: throughput with 1 and N workers

/** A wrong command line: one line on stderr and exit 1 (the benchmark cannot run), no stack trace. */
const usageError = (message: string): never => {
  process.stderr.write(`bench/http.ts: ${message}\n`)
  process.exit(1)
}

const ARGS = (() => {
  try {
    return parseArgs({ options: { workers: { type: "string" }, compare: { type: "boolean" } }, strict: true }).values
  } catch (error) {
    return usageError(error instanceof Error ? error.message : String(error))
  }
})()

const WORKERS = (() => {
  const raw = ARGS.workers
  if (raw === undefined) return undefined
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 2) return usageError(`--workers must be an integer >= 2, got ${raw}`)
  return n
})()

const workersReport = (measurements: ReadonlyArray<Measurement<HttpScenario>>, single: string): string => {
  const rows = measurements.map((m) => {
    const base = measurements.find((b) => b.scenario === m.scenario && b.proxy === single)
    const rate = m.requests / m.seconds
    const baseRate = base === undefined ? NaN : base.requests / base.seconds
    return [
      m.scenario.name,
      m.proxy,
      grouped(rate),
      m.proxy === single ? "1.00x" : `${fixed(rate / baseRate, 2)}x`,
      fixed(m.p50, 2),
      fixed(m.p99, 2),
      String(m.non2xx),
      String(m.errors)
    ]
  })
  return table(["scenario", "gateway", "req/s", "vs 1 worker", "p50 ms", "p99 ms", "non-2xx", "errors"], rows, new Set([2, 3, 4, 5, 6, 7]))
}

const mainWorkers = async (workers: number): Promise<void> => {
  const cpus = os.cpus()
  process.stdout.write(
    `HTTP throughput, 1 vs ${workers} workers: ${cpus.length} CPU(s), ${CONNECTIONS} connections, ` +
      `${WARMUP_SECONDS} s warm-up + ${MEASURE_SECONDS} s measured per gateway and scenario\n`
  )
  const upstream = await forkServer("upstream", "upstream.ts", [])
  const one = await startGateway((port) => gatewayConfig(port, upstream.port), "bench:http")
  const many = await startGateway((port) => gatewayConfig(port, upstream.port), "bench:http", workers)
  const single = "1 worker"
  const proxies: ReadonlyArray<Proxy> = [proxyOf(single, one.port, one.child), proxyOf(`${workers} workers`, many.port, many.child)]
  await checkProxies(proxies, () => true)
  const measurements: Array<Measurement<HttpScenario>> = []
  for (const scenario of SELECTED) {
    process.stdout.write(`running ${scenario.name} ...\n`)
    measurements.push(...await runScenario(proxies, scenario, pidOf(upstream.child, "upstream")))
    if (!alive(one.child) || !alive(many.child)) throw new Error(`a gateway died under load\n${one.stderr()}${many.stderr()}`)
  }
  process.stdout.write(`\n${workersReport(measurements, single)}\n\n`)
  process.stdout.write(`load context (load generator, upstream and gateways share ${cpus.length} CPU(s)):\n${context(measurements)}\n`)
  process.stdout.write(`\nThe "CPU µs/req" lines above count the ${workers}-worker gateway's primary only; ignore them for it.\n`)
}

// ---------------------------------------------------------------------------------------------
// --compare: gateway A against gateway B in the same run

const COMPARE = ARGS.compare === true
if (COMPARE && WORKERS !== undefined) usageError("--compare and --workers are separate modes: give one")

const variantB = (): GatewayVariant => {
  const b = variantFromEnv()
  return typeof b === "string" ? usageError(b) : b
}

interface Compared {
  readonly rows: Array<Array<string>>
  /** B/A CPU per request, per scenario name. */
  readonly ratios: Map<string, number>
}

const compareOnce = async (upstream: { child: ChildProcess; port: number }, b: GatewayVariant): Promise<Compared> => {
  const baseline = await forkServer("baseline proxy", "baseline-proxy.ts", [`http://127.0.0.1:${upstream.port}`])
  const gwA = await startGateway((port) => gatewayConfig(port, upstream.port), "bench:http")
  const gwB = await startGateway((port) => gatewayConfig(port, upstream.port), "bench:http", 1, undefined, b)
  const proxies: ReadonlyArray<Proxy> = [proxyOf("baseline", baseline.port, baseline.child), proxyOf("A", gwA.port, gwA.child), proxyOf("B", gwB.port, gwB.child)]
  // A/B figures of a B that does not do the same work would mislead: stop instead.
  const failed = await checkProxies(proxies, (p) => p.name !== "baseline")
  if (failed.length > 0) throw new Error(`sanity check failed for ${failed.join(", ")}`)
  const rows: Array<Array<string>> = []
  const ratios = new Map<string, number>()
  for (const scenario of SELECTED) {
    process.stdout.write(`running ${scenario.name} ...\n`)
    const ms = await runScenario(proxies, scenario, pidOf(upstream.child, "upstream"))
    const of = (name: string) => ms.find((m) => m.proxy === name)
    const [base, a, bm] = [of("baseline"), of("A"), of("B")]
    if (base === undefined || a === undefined || bm === undefined) throw new Error("a proxy was not measured")
    const diff = pairedDifference(a, bm)
    ratios.set(scenario.name, bm.cpuUsPerRequest / a.cpuUsPerRequest)
    rows.push([
      scenario.name,
      fixed(base.cpuUsPerRequest, 1),
      `${fixed(a.cpuUsPerRequest, 1)} (${fixed(a.cpuUsPerRequest / base.cpuUsPerRequest, 2)}x)`,
      `${fixed(bm.cpuUsPerRequest, 1)} (${fixed(bm.cpuUsPerRequest / base.cpuUsPerRequest, 2)}x)`,
      `${fixed(bm.cpuUsPerRequest / a.cpuUsPerRequest, 2)}x`,
      `${signed(diff.median)} [${signed(diff.q1)}, ${signed(diff.q3)}]`
    ])
  }
  rows.push(["peak RSS MiB", ...proxies.map((p) => fixed(p.peakRssUnderLoad / 1024, 0)), "", ""])
  for (const c of [baseline.child, gwA.child, gwB.child]) await stopChild(c)
  return { rows, ratios }
}

const mainCompare = async (): Promise<void> => {
  const b = variantB()
  printHeader("HTTP A/B", `per proxy and scenario${REPEAT > 1 ? `, ${REPEAT} runs with fresh proxy processes` : ""}`)
  process.stdout.write(`A: ${path.relative(ROOT, GATEWAY_MAIN)}${GATEWAY_NODE_ARGS.length > 0 ? ` with node ${GATEWAY_NODE_ARGS.join(" ")}` : ""}; B: ${b.main ?? "the same command"}${b.nodeArgs === undefined ? "" : ` with node ${b.nodeArgs.join(" ")}`}\n`)
  const upstream = await forkServer("upstream", "upstream.ts", [])
  const header = ["scenario", "baseline µs/req", "A µs/req", "B µs/req", "B/A", "B − A µs per round: median [IQR]"]
  const all: Array<Array<string>> = []
  const runs: Array<Map<string, number>> = []
  for (let run = 1; run <= REPEAT; run++) {
    const { rows, ratios } = await compareOnce(upstream, b)
    process.stdout.write(`\n${table(header, rows, new Set([1, 2, 3, 4]))}\n`)
    all.push(...rows.map((r) => [`${run}`, ...r]))
    runs.push(ratios)
  }
  if (REPEAT > 1) {
    process.stdout.write(`\n=== ${REPEAT} runs\n${table(["run", ...header], all, new Set([2, 3, 4, 5]))}\n\n`)
    process.stdout.write(`${ratioSummary(SELECTED.map((s) => ({ name: s.name, ratios: runs.map((r) => r.get(s.name) ?? NaN) })), "B/A CPU per request")}\n`)
  }
}

await runMain(COMPARE ? mainCompare : WORKERS === undefined ? main : () => mainWorkers(WORKERS))
