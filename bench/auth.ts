/**
 * Authentication benchmark: what `jwtAuth` costs per request once a token is verified, in one
 * run.
 *
 *   npm run bench:auth        (builds dist/ first, then runs this file on Node 24)
 *
 * Child processes as in bench/policies.ts: the upstream and one gateway (dist/main.js) with two
 * routes selected by path: `/open` without policies and `/jwt` with a strict `jwtAuth` (inline
 * ES256 JWKS). Both are loaded in turn with the same small GET carrying the same valid bearer
 * token (32 connections, closed loop, interleaved ABBA slots); after the first request the
 * verification comes from the verified-token cache, so the difference in CPU per request is
 * what a cached token costs: extraction, the cache lookup, stripping the header and exposing
 * the claims to CEL. Target: at most `MAX_ADDED_US` µs. Before the load a sanity check proves
 * the policy runs (401 without a token, 200 with it, the upstream never sees it). Always exits
 * 0 once the measurements are printed; exits 1 only when it cannot run.
 *
 * Environment: BENCH_SECONDS, BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_ROUNDS and
 * BENCH_GATEWAY_NODE_ARGS as for bench/http.ts.
 */
import { exportJWK, generateKeyPair, SignJWT } from "jose"
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

/** A cached valid token may add at most this much CPU per request over the open route. */
const MAX_ADDED_US = 15

const ISSUER = "https://bench.example"
const HELLO = "hello, world\n"
/** The token outlives any run. */
const TOKEN_LIFETIME_S = 24 * 3600

const keys = await generateKeyPair("ES256")
const JWKS = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: "bench", alg: "ES256" }] })
const TOKEN = await new SignJWT({ iss: ISSUER, sub: "bench-user", aud: "bench", exp: Math.floor(Date.now() / 1000) + TOKEN_LIFETIME_S })
  .setProtectedHeader({ alg: "ES256", kid: "bench" })
  .sign(keys.privateKey)

const SMALL_GET: Scenario = { name: "small GET + bearer", method: "GET", path: "/", headers: { authorization: `Bearer ${TOKEN}` }, body: undefined }

const gatewayConfig = (port: number, upstreamPort: number): string => `
binds:
- port: ${port}
  listeners:
  - name: bench
    routes:
    - name: open
      matches: [{path: {pathPrefix: /open}}]
      backends:
      - host: 127.0.0.1:${upstreamPort}
    - name: jwt
      matches: [{path: {pathPrefix: /jwt}}]
      policies:
        jwtAuth: {mode: strict, issuer: ${ISSUER}, audiences: [bench], jwks: '${JWKS}'}
      backends:
      - host: 127.0.0.1:${upstreamPort}
`

const sanityCheck = async (port: number): Promise<Array<string>> => {
  const problems: Array<string> = []
  for (const route of ["/open", "/jwt"]) {
    const get = await send(port, { method: "GET", path: route, headers: SMALL_GET.headers })
    if (get.status !== 200 || get.body !== HELLO) problems.push(`GET ${route} with the token answered ${get.status} ${JSON.stringify(get.body.slice(0, 80))}`)
  }
  const anonymous = await send(port, { method: "GET", path: "/jwt", headers: {} })
  if (anonymous.status !== 401) problems.push(`GET /jwt without a token answered ${anonymous.status}`)
  const seen = await send(port, { method: "GET", path: "/jwt/headers", headers: SMALL_GET.headers })
  try {
    const headers: unknown = JSON.parse(seen.body)
    if (typeof headers !== "object" || headers === null || "authorization" in headers) problems.push("the upstream saw the token on /jwt")
  } catch {
    problems.push(`GET /jwt/headers answered ${seen.status} ${JSON.stringify(seen.body.slice(0, 80))}`)
  }
  return problems
}

const OPEN = "gateway, no auth"
const JWT = "gateway, jwtAuth (cached token)"

const report = (measurements: ReadonlyArray<Measurement>): string => {
  const open = measurements.find((m) => m.proxy === OPEN)
  const header = ["scenario", "route", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "proxy CPU", "added CPU µs/req", "target", "result", "non-2xx", "errors"]
  const rows = measurements.map((m) => {
    const added = open === undefined ? NaN : m.cpuUsPerRequest - open.cpuUsPerRequest
    const hasTarget = m.proxy === JWT
    return [
      m.scenario.name,
      m.proxy,
      grouped(m.requests / m.seconds),
      fixed(m.p50, 2),
      fixed(m.p99, 2),
      fixed(m.cpuUsPerRequest, 1),
      `${fixed(m.proxyCpuPercent, 0)}%`,
      m.proxy === OPEN ? "" : signed(added),
      hasTarget ? `<= ${MAX_ADDED_US}` : "",
      hasTarget ? verdict(added <= MAX_ADDED_US) : "",
      String(m.non2xx),
      String(m.errors)
    ]
  })
  return table(header, rows, new Set([2, 3, 4, 5, 6, 7, 10, 11]))
}

const main = async (): Promise<void> => {
  const cores = printHeader("Auth benchmark", "per route")
  const upstream = await forkServer("upstream", "upstream.ts", [])
  const gateway = await startGateway((port) => gatewayConfig(port, upstream.port), "bench:auth")
  const upstreamPid = pidOf(upstream.child, "upstream")
  // One gateway process, two routes: each measured slot loads one path only, so the process's
  // CPU over a slot belongs to that route.
  const proxies: ReadonlyArray<Proxy> = [proxyOf(OPEN, gateway.port, gateway.child, "/open"), proxyOf(JWT, gateway.port, gateway.child, "/jwt")]
  process.stdout.write(`upstream :${upstream.port}, gateway :${gateway.port} (/open, /jwt)\n`)
  const problems = await sanityCheck(gateway.port)
  process.stdout.write(
    problems.length === 0
      ? "sanity check: ok (200 with the token on both routes, 401 without it on /jwt, the token stripped upstream)\n"
      : `sanity check: FAILED\n${problems.map((line) => `  - ${line}\n`).join("")}`
  )
  process.stdout.write(`running ${SMALL_GET.name} ...\n`)
  const measurements = await runScenario(proxies, SMALL_GET, upstreamPid)
  if (!alive(gateway.child)) throw new Error(`the gateway died under load\n${gateway.stderr()}`)
  process.stdout.write(`\n${report(measurements)}\n\n`)
  process.stdout.write(reportTail(proxies, measurements, gateway.stderr(), cores, "Both rows are one gateway process measured in separate slots, each loading one route."))
}

await runMain(main)
