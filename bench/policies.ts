/**
 * Policy benchmark: what a route's policies cost, against the minimal Node proxy, in one run.
 *
 *   npm run bench:policies        (builds dist/ first, then runs this file on Node 24)
 *
 * Child processes as in bench/http.ts: the upstream, the baseline proxy, and one gateway
 * (dist/main.js) with two routes selected by path: `/p0` without policies and `/p6` with six
 * (cors, requestHeaderModifier, localRateLimit with a bucket no load can empty, authorization
 * with a 3-clause CEL rule, timeout, retry on 503). The three are loaded in turn with the same
 * small GET (32 connections, closed loop) in interleaved slots (ABBA order), and each one's CPU
 * per request is compared with the baseline's from the same run. Before the load a sanity check
 * proves every policy of `/p6` runs. Always exits 0 once the measurements are printed; exits 1
 * only when it cannot run.
 *
 * Environment: BENCH_SECONDS, BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_ROUNDS, BENCH_REPEAT and
 * BENCH_GATEWAY_NODE_ARGS as for bench/http.ts.
 */
import type { ChildProcess } from "node:child_process"
import { setTimeout as sleep } from "node:timers/promises"
import {
  alive,
  fixed,
  forkServer,
  grouped,
  type Measurement,
  pidOf,
  printHeader,
  type Proxy,
  proxyOf,
  ratioSummary,
  ratioText,
  REPEAT,
  reportTail,
  runMain,
  runScenario,
  type Scenario,
  send,
  signed,
  startGateway,
  stopChild,
  table,
  verdict,
} from "./lib.ts"
import { ORIGIN, RATE_LIMIT_TOKENS, REQUEST_HEADERS, SIX_POLICIES } from "./six-policies.ts"

const HELLO = "hello, world\n"

/** The 6-policy route's CPU per request over the baseline's must not exceed this. */
const MAX_RATIO_SIX = 1.4

const SMALL_GET: Scenario = { name: "small GET", method: "GET", path: "/", headers: { ...REQUEST_HEADERS }, body: undefined }

const gatewayConfig = (port: number, upstreamPort: number): string => `
binds:
- port: ${port}
  listeners:
  - name: bench
    routes:
    - name: p0
      matches: [{path: {pathPrefix: /p0}}]
      backends:
      - host: 127.0.0.1:${upstreamPort}
    - name: p6
      matches: [{path: {pathPrefix: /p6}}]
      policies: ${JSON.stringify(SIX_POLICIES)}
      backends:
      - host: 127.0.0.1:${upstreamPort}
`

// ---------------------------------------------------------------------------------------------
// Sanity checks: each proxy answers the load's request; each policy of /p6 demonstrably runs

const headersSeenUpstream = async (port: number, target: string, headers: Record<string, string>): Promise<Record<string, unknown>> => {
  const reply = await send(port, { method: "GET", path: target, headers })
  try {
    const parsed: unknown = JSON.parse(reply.body)
    return typeof parsed === "object" && parsed !== null ? { ...parsed } : {}
  } catch {
    return {}
  }
}

const sanityCheck = async (port: number, route: "baseline" | "p0" | "p6"): Promise<Array<string>> => {
  const problems: Array<string> = []
  const prefix = route === "baseline" ? "" : `/${route}`
  const get = await send(port, { method: "GET", path: prefix === "" ? "/" : prefix, headers: SMALL_GET.headers })
  if (get.status !== 200) problems.push(`GET ${prefix || "/"} answered ${get.status}`)
  if (get.body !== HELLO) problems.push(`GET ${prefix || "/"} body was ${JSON.stringify(get.body.slice(0, 80))}`)
  const limit = get.headers["x-ratelimit-limit"]
  if (route === "p0") {
    if (limit !== undefined) problems.push("the 0-policy route answered with x-ratelimit-limit")
    if (get.headers["access-control-allow-origin"] !== undefined) problems.push("the 0-policy route answered with CORS headers")
  }
  if (route !== "p6") return problems

  if (limit !== String(RATE_LIMIT_TOKENS)) problems.push(`localRateLimit: x-ratelimit-limit was ${JSON.stringify(limit)}`)
  if (get.headers["access-control-allow-origin"] !== ORIGIN) {
    problems.push(`cors: access-control-allow-origin was ${JSON.stringify(get.headers["access-control-allow-origin"])}`)
  }
  const seen = await headersSeenUpstream(port, "/p6/headers", SMALL_GET.headers)
  if (seen["x-bench"] !== "1") problems.push(`requestHeaderModifier: upstream saw x-bench=${JSON.stringify(seen["x-bench"])}`)
  const noEnv = await send(port, { method: "GET", path: "/p6", headers: { origin: ORIGIN } })
  if (noEnv.status !== 403 || noEnv.body !== "authorization failed") {
    problems.push(`authorization: without x-env the answer was ${noEnv.status} ${JSON.stringify(noEnv.body)}`)
  }
  const wrongEnv = await send(port, { method: "GET", path: "/p6", headers: { origin: ORIGIN, "x-env": "prod" } })
  if (wrongEnv.status !== 403) problems.push(`authorization: with x-env: prod the answer was ${wrongEnv.status}`)
  const retried = await send(port, { method: "GET", path: "/p6/status/503", headers: SMALL_GET.headers })
  if (retried.status !== 503 || retried.body !== "attempt 1") {
    problems.push(`retry: a 503 ended as ${retried.status} ${JSON.stringify(retried.body)} (expected the retry's "attempt 1")`)
  }
  const slow = await send(port, { method: "GET", path: "/p6/slow", headers: SMALL_GET.headers })
  if (slow.status !== 504 || slow.body !== "request timeout") {
    problems.push(`timeout: a slow upstream ended as ${slow.status} ${JSON.stringify(slow.body)}`)
  }
  return problems
}

// ---------------------------------------------------------------------------------------------
// Report

const BASELINE = "baseline"
const ZERO = "gateway, 0 policies"
const SIX = "gateway, 6 policies"

const report = (measurements: ReadonlyArray<Measurement>): string => {
  const baseline = measurements.find((m) => m.proxy === BASELINE)
  const header = ["scenario", "proxy", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "proxy CPU", "CPU vs baseline", "target", "result", "non-2xx", "errors"]
  const rows = measurements.map((m) => {
    const isBaseline = m.proxy === BASELINE
    const ratio = baseline === undefined ? NaN : m.cpuUsPerRequest / baseline.cpuUsPerRequest
    const hasTarget = m.proxy === SIX
    return [
      m.scenario.name,
      m.proxy,
      grouped(m.requests / m.seconds),
      fixed(m.p50, 2),
      fixed(m.p99, 2),
      fixed(m.cpuUsPerRequest, 1),
      `${fixed(m.proxyCpuPercent, 0)}%`,
      isBaseline || baseline === undefined
        ? "1.00x"
        : `${ratioText(ratio, MAX_RATIO_SIX)}x (${signed(m.cpuUsPerRequest - baseline.cpuUsPerRequest)} µs)`,
      hasTarget ? `<= ${MAX_RATIO_SIX.toFixed(2)}x` : "",
      hasTarget ? verdict(ratio <= MAX_RATIO_SIX) : "",
      String(m.non2xx),
      String(m.errors)
    ]
  })
  return table(header, rows, new Set([2, 3, 4, 5, 6, 7, 10, 11]))
}

// ---------------------------------------------------------------------------------------------
// Main

/** One run: fresh baseline and gateway processes, the full report; the measurements. */
const once = async (upstream: { child: ChildProcess; port: number }, cores: number): Promise<ReadonlyArray<Measurement>> => {
  const baseline = await forkServer("baseline proxy", "baseline-proxy.ts", [`http://127.0.0.1:${upstream.port}`])
  const gateway = await startGateway((port) => gatewayConfig(port, upstream.port), "bench:policies")
  const upstreamPid = pidOf(upstream.child, "upstream")
  // One gateway process, two routes: each measured slot loads one path only, so the process's
  // CPU over a slot belongs to that route.
  const proxies: ReadonlyArray<Proxy> = [
    proxyOf(BASELINE, baseline.port, baseline.child),
    proxyOf(ZERO, gateway.port, gateway.child, "/p0"),
    proxyOf(SIX, gateway.port, gateway.child, "/p6")
  ]
  process.stdout.write(`upstream :${upstream.port}, baseline :${baseline.port}, gateway :${gateway.port} (/p0, /p6)\n`)

  const checks: ReadonlyArray<readonly [string, number, "baseline" | "p0" | "p6"]> = [
    [BASELINE, baseline.port, "baseline"],
    [ZERO, gateway.port, "p0"],
    [SIX, gateway.port, "p6"]
  ]
  for (const [name, port, route] of checks) {
    const problems = await sanityCheck(port, route)
    process.stdout.write(
      problems.length === 0
        ? `sanity check ${name}: ok${
          route === "p6"
            ? " (CORS header, x-bench set upstream, x-ratelimit-limit, 403 without x-env, a 503 retried once, 504 on a slow upstream)"
            : ""
        }\n`
        : `sanity check ${name}: FAILED\n${problems.map((line) => `  - ${line}\n`).join("")}`
    )
  }
  // Let the timed-out slow exchange and the retried connections settle before measuring.
  await sleep(500)

  process.stdout.write(`running ${SMALL_GET.name} ...\n`)
  const measurements = await runScenario(proxies, SMALL_GET, upstreamPid)
  if (!alive(baseline.child)) throw new Error("the baseline proxy died under load")
  if (!alive(gateway.child)) throw new Error(`the gateway died under load\n${gateway.stderr()}`)

  process.stdout.write(`\n${report(measurements)}\n\n`)
  const zero = measurements.find((m) => m.proxy === ZERO)
  const six = measurements.find((m) => m.proxy === SIX)
  if (zero !== undefined && six !== undefined) {
    const added = six.cpuUsPerRequest - zero.cpuUsPerRequest
    process.stdout.write(`6 policies over 0 policies: ${signed(added)} µs/req, ${fixed(added / 6, 2)} µs per policy on average\n\n`)
  }
  process.stdout.write(reportTail(proxies, measurements, gateway.stderr(), cores, `The two gateway rows are one process measured in separate slots, each loading one route.`))
  await stopChild(baseline.child)
  await stopChild(gateway.child)
  return measurements
}

const main = async (): Promise<void> => {
  const cores = printHeader("Policy benchmark", `per proxy${REPEAT > 1 ? `, ${REPEAT} runs with fresh proxy processes` : ""}`)
  const upstream = await forkServer("upstream", "upstream.ts", [])
  const runs: Array<ReadonlyArray<Measurement>> = []
  for (let run = 1; run <= REPEAT; run++) {
    if (REPEAT > 1) process.stdout.write(`\n=== run ${run} of ${REPEAT}\n`)
    runs.push(await once(upstream, cores))
  }
  if (REPEAT === 1) return
  const ratio = (ms: ReadonlyArray<Measurement>, proxy: string) =>
    (ms.find((m) => m.proxy === proxy)?.cpuUsPerRequest ?? NaN) / (ms.find((m) => m.proxy === BASELINE)?.cpuUsPerRequest ?? NaN)
  process.stdout.write(`\n=== ${REPEAT} runs\n${ratioSummary([
    { name: `${SMALL_GET.name}, 6 policies`, target: MAX_RATIO_SIX, ratios: runs.map((ms) => ratio(ms, SIX)) },
    { name: `${SMALL_GET.name}, 0 policies`, ratios: runs.map((ms) => ratio(ms, ZERO)) }
  ])}\n`)
}

await runMain(main)
