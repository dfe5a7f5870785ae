/**
 * MCP benchmark: tools/call through the gateway against a direct server, the minimal Node
 * passthrough and mcp-proxy, and a federated tools/list against a single server; one run, on
 * this machine.
 *
 *   npm run bench:mcp             (builds dist/ first, then runs this file on Node 24)
 *
 * Child processes: two SDK servers over Streamable HTTP (bench/mcp-echo-server.ts, `alpha` and
 * `beta`: McpServer + StreamableHTTPServerTransport, stateful), the baseline proxy
 * (bench/baseline-proxy.ts) in front of alpha, mcp-proxy (the npm devDependency, its default
 * settings) serving the same server run over stdio as Streamable HTTP, and the gateway
 * (dist/main.js) with three MCP routes: /one with alpha as its single target, /stdio with the
 * same server run over stdio as its single target (one server process per MCP session, as
 * upstream agentgateway does: the like-for-like comparison with mcp-proxy, which serves every
 * session from one stdio server), and /fed federating alpha and beta (tools named `alpha_*`,
 * `beta_*`).
 *
 * The load is this file's own (not autocannon: MCP needs sessions): BENCH_SESSIONS MCP
 * sessions per path, each initialized once before the warm-up, then each in a closed loop of
 * raw keep-alive POSTs (an undici Pool per path, no SDK client on the measured path); every
 * answer is parsed (SSE or JSON) and checked: the echo's text for tools/call, the tool count for
 * tools/list. Wrong answers count as errors, never as calls. Slots are interleaved in ABBA order
 * as in bench/http.ts. CPU per call is the proxy process's own (/proc/<pid>/stat, all threads);
 * the servers behind it are reported apart, and for mcp-proxy that is the stdio server it
 * spawned. Targets (reference/performance.md): gateway CPU/call ≤ 1.5× the passthrough's,
 * gateway calls/s ≥ 2.5× mcp-proxy's and ≥ 0.7× direct; federated tools/list ≥ 0.5× a single
 * server's. Always exits 0 once the measurements are printed; exits 1 only when it cannot run.
 *
 * Environment: BENCH_SECONDS, BENCH_WARMUP, BENCH_ROUNDS, BENCH_GATEWAY_NODE_ARGS as for
 * bench/http.ts (BENCH_CONNECTIONS does not apply), and
 *   BENCH_SESSIONS   concurrent MCP sessions per path, one call in flight each (default 16)
 *   BENCH_SCENARIOS  "call" or "list" to run one scenario only (default both)
 *   BENCH_ONLY       tools/call paths to load, by their report names, comma-separated (e.g.
 *                    "baseline,gateway"; default all)
 *
 * `node bench/mcp.ts --compare` judges a change on the single-target tools/call path as
 * `bench/http.ts --compare` does (gateway A = dist/main.js, B = BENCH_B_MAIN and/or
 * BENCH_B_NODE_ARGS, and the baseline, in rotating slots; BENCH_REPEAT runs with fresh
 * processes): CPU µs/call of each, B/A, the per-round B − A, calls/s and peak RSS.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { setTimeout as sleep } from "node:timers/promises"
import { errors as undiciErrors, Pool } from "undici"
import {
  alive,
  BENCH_DIR,
  fixed,
  forkServer,
  freePort,
  GATEWAY_MAIN,
  GATEWAY_NODE_ARGS,
  type GatewayVariant,
  grouped,
  isInterrupted,
  type LoadDriver,
  type LoadResult,
  MEASURE_SECONDS,
  type Measurement,
  NODE_BIN,
  pairedDifference,
  pidOf,
  positive,
  type Proxy,
  proxyOf,
  ratioText,
  REPEAT,
  reportTail,
  ROOT,
  runMain,
  runScenario,
  type Scenario,
  send,
  signed,
  startGateway,
  stopChild,
  table,
  track,
  variantFromEnv,
  verdict,
  WARMUP_SECONDS
} from "./lib.ts"

// ---------------------------------------------------------------------------------------------
// Settings

const SESSIONS = Math.round(positive("BENCH_SESSIONS", 16))
const PROTOCOL_VERSION = "2025-11-25"
const ACCEPT = "application/json, text/event-stream"
const ECHO_TEXT = "hello, mcp"
/** The tools bench/mcp-echo-server.ts registers, in its order. */
const TOOLS = ["echo", "upper", "reverse", "length", "whoami"]
/** One call that takes longer than this counts as a timeout. */
const CALL_TIMEOUT_MS = 10_000
/** How long mcp-proxy may take to spawn its stdio server and listen. */
const START_TIMEOUT_MS = 20_000
const MCP_PROXY_BIN = path.join(ROOT, "node_modules", "mcp-proxy", "dist", "bin", "mcp-proxy.mjs")
const ECHO_SERVER = path.join(BENCH_DIR, "mcp-echo-server.ts")

const MAX_CPU_RATIO = 1.5
const MIN_VS_MCP_PROXY = 2.5
const MIN_VS_DIRECT = 0.7
const MIN_LIST_VS_DIRECT = 0.5

interface McpScenario extends Scenario {
  /** The JSON-RPC request with this id, as sent. */
  readonly rpc: (id: number) => string
}

const CALL: McpScenario = {
  name: "tools/call echo",
  method: "POST",
  path: "/mcp",
  headers: {},
  body: undefined,
  rpc: (id) => `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"echo","arguments":{"text":${JSON.stringify(ECHO_TEXT)}}}}`
}

const LIST: McpScenario = {
  name: "tools/list",
  method: "POST",
  path: "/mcp",
  headers: {},
  body: undefined,
  rpc: (id) => `{"jsonrpc":"2.0","id":${id},"method":"tools/list"}`
}

/** BENCH_ONLY=baseline,gateway: the tools/call paths to load, by their names in the report (default all). */
const ONLY = (process.env["BENCH_ONLY"] ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "")

/** BENCH_SCENARIOS=call or =list runs one scenario only. */
const wanted = (process.env["BENCH_SCENARIOS"] ?? "").toLowerCase().split(",").map((s) => s.trim()).filter((s) => s !== "")
const runs = (key: "call" | "list"): boolean => wanted.length === 0 || wanted.includes(key) || !wanted.some((w) => w === "call" || w === "list")

// ---------------------------------------------------------------------------------------------
// JSON-RPC answers, read without casts

const field = (value: unknown, key: string): unknown =>
  typeof value === "object" && value !== null && key in value ? Object.getOwnPropertyDescriptor(value, key)?.value : undefined

/** The JSON-RPC message answering `id` in a JSON or SSE body, or undefined. */
const answerOf = (contentType: string | undefined, text: string, id: number): unknown => {
  const parse = (json: string): unknown => {
    try {
      return JSON.parse(json)
    } catch {
      return undefined
    }
  }
  if (contentType?.startsWith("application/json") === true) {
    const message = parse(text)
    return field(message, "id") === id ? message : undefined
  }
  // SSE: a frame's data lines joined by "\n"; other frames (notifications) are skipped.
  for (const frame of text.split(/\r?\n\r?\n/)) {
    const data = frame.split(/\r?\n/).filter((line) => line.startsWith("data:")).map((line) => line.slice(line.startsWith("data: ") ? 6 : 5))
    if (data.length === 0) continue
    const message = parse(data.join("\n"))
    if (field(message, "id") === id) return message
  }
  return undefined
}

const firstText = (message: unknown): unknown => {
  const content = field(field(message, "result"), "content")
  return Array.isArray(content) ? field(content[0], "text") : undefined
}

const toolNames = (message: unknown): Array<string> | undefined => {
  const tools = field(field(message, "result"), "tools")
  if (!Array.isArray(tools)) return undefined
  return tools.map((tool) => String(field(tool, "name")))
}

const headerText = (value: string | Array<string> | undefined): string | undefined => (Array.isArray(value) ? value[0] : value)

// ---------------------------------------------------------------------------------------------
// Sessions

interface Session {
  readonly headers: Record<string, string>
  nextId: number
}

/** Initializes one session with one-off requests (lib.send) and returns its request headers. */
const openSession = async (port: number, endpoint: string): Promise<Session> => {
  const init = await send(port, {
    method: "POST",
    path: endpoint,
    headers: { accept: ACCEPT, "content-type": "application/json" },
    body: Buffer.from(JSON.stringify({
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: "bench", version: "1.0.0" } }
    }))
  })
  const answer = answerOf(headerText(init.headers["content-type"]), init.body, 0)
  const sessionId = headerText(init.headers["mcp-session-id"])
  const version = field(field(answer, "result"), "protocolVersion")
  if (init.status !== 200 || sessionId === undefined || typeof version !== "string") {
    throw new Error(`initialize at :${port}${endpoint} answered ${init.status} (session ${sessionId ?? "none"}): ${init.body.slice(0, 200)}`)
  }
  const headers = { accept: ACCEPT, "content-type": "application/json", "mcp-session-id": sessionId, "mcp-protocol-version": version }
  const initialized = await send(port, {
    method: "POST",
    path: endpoint,
    headers,
    body: Buffer.from(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
  })
  if (initialized.status !== 202) throw new Error(`notifications/initialized at :${port}${endpoint} answered ${initialized.status}`)
  return { headers, nextId: 1 }
}

/** One request on a session with a one-off connection (sanity checks). */
const rpcOnce = async (port: number, endpoint: string, session: Session, body: (id: number) => string): Promise<unknown> => {
  const id = session.nextId++
  const reply = await send(port, { method: "POST", path: endpoint, headers: session.headers, body: Buffer.from(body(id)) })
  return answerOf(headerText(reply.headers["content-type"]), reply.body, id)
}

const callTool = (name: string, text?: string) => (id: number): string =>
  JSON.stringify({ jsonrpc: "2.0", id, method: "tools/call", params: { name, arguments: text === undefined ? {} : { text } } })

// ---------------------------------------------------------------------------------------------
// The load: SESSIONS closed loops of raw POSTs per path

interface Target {
  readonly pool: Pool
  readonly endpoint: string
  readonly sessions: Array<Session>
  /** Whether the answer to one load request is right. */
  readonly check: (message: unknown) => boolean
}

const targets = new Map<Proxy, Target>()

const mcpLoad: LoadDriver<McpScenario> = async (proxy, scenario, seconds, latencies): Promise<LoadResult> => {
  const target = targets.get(proxy)
  if (target === undefined) throw new Error(`${proxy.name} has no MCP sessions`)
  const statuses = new Map<string, number>()
  let requests = 0
  let non2xx = 0
  let errors = 0
  let timeouts = 0
  const end = performance.now() + seconds * 1000
  const loop = async (session: Session): Promise<void> => {
    while (!isInterrupted() && performance.now() < end) {
      const id = session.nextId++
      const started = performance.now()
      try {
        const reply = await target.pool.request({ path: target.endpoint, method: "POST", headers: session.headers, body: scenario.rpc(id) })
        const text = await reply.body.text()
        const ms = performance.now() - started
        const status = String(reply.statusCode)
        statuses.set(status, (statuses.get(status) ?? 0) + 1)
        if (reply.statusCode < 200 || reply.statusCode > 299) non2xx++
        else if (target.check(answerOf(headerText(reply.headers["content-type"]), text, id))) {
          requests++
          latencies?.add(ms)
        } else errors++
      } catch (error) {
        errors++
        if (error instanceof undiciErrors.HeadersTimeoutError || error instanceof undiciErrors.BodyTimeoutError) timeouts++
        // A dead proxy refuses at once: do not spin.
        await sleep(10)
      }
    }
  }
  await Promise.all(target.sessions.map(loop))
  return { requests, non2xx, errors, timeouts, statuses }
}

const isEcho = (message: unknown): boolean => firstText(message) === ECHO_TEXT
const listsTools = (count: number) => (message: unknown): boolean => toolNames(message)?.length === count

/** Opens SESSIONS sessions on a path and its keep-alive pool. */
const prepare = async (proxy: Proxy, check: (message: unknown) => boolean): Promise<void> => {
  const endpoint = proxy.path ?? "/mcp"
  const sessions: Array<Session> = []
  for (let i = 0; i < SESSIONS; i++) sessions.push(await openSession(proxy.port, endpoint))
  const pool = new Pool(`http://127.0.0.1:${proxy.port}`, {
    connections: SESSIONS,
    pipelining: 1,
    headersTimeout: CALL_TIMEOUT_MS,
    bodyTimeout: CALL_TIMEOUT_MS,
    keepAliveTimeout: 120_000
  })
  targets.set(proxy, { pool, endpoint, sessions, check })
}

// ---------------------------------------------------------------------------------------------
// mcp-proxy and the stdio server it spawns

const parentOf = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1] ?? NaN)
}

/** Every live descendant of `root` (from /proc: ppid links). */
const descendants = (root: number): Array<number> => {
  const parents = new Map<number, number>()
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      parents.set(Number(entry), parentOf(Number(entry)))
    } catch {
      // exited meanwhile
    }
  }
  const found: Array<number> = []
  const walk = (pid: number) => {
    for (const [child, parent] of parents) {
      if (parent === pid) {
        found.push(child)
        walk(child)
      }
    }
  }
  walk(root)
  return found
}

/** Grandchildren are not ChildProcess objects: killed by pid on the way out. */
const strays = new Set<number>()
process.on("exit", () => {
  for (const pid of strays) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // already gone
    }
  }
})

const startMcpProxy = async (): Promise<{ child: ChildProcess; port: number; serverPids: Array<number>; stderr: () => string }> => {
  const port = await freePort()
  const child = track(spawn(
    NODE_BIN,
    [MCP_PROXY_BIN, "--port", String(port), "--host", "127.0.0.1", "--server", "stream", "--", NODE_BIN, ECHO_SERVER, "stdio", "stdio"],
    { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] }
  ))
  let stderr = ""
  child.stderr?.setEncoding("utf8")
  child.stderr?.on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-16_384)
  })
  const deadline = Date.now() + START_TIMEOUT_MS
  for (;;) {
    if (!alive(child)) throw new Error(`mcp-proxy exited during start-up (code ${child.exitCode}):\n${stderr}`)
    if (Date.now() > deadline) throw new Error(`mcp-proxy did not answer on port ${port} within ${START_TIMEOUT_MS / 1000} s:\n${stderr}`)
    const answered = await send(port, { method: "GET", path: "/ping", headers: {} }).then(() => true, () => false)
    const serverPids = answered ? descendants(pidOf(child, "mcp-proxy")) : []
    for (const pid of serverPids) strays.add(pid)
    // It connects to its stdio server before it listens; the server is its child by then.
    if (serverPids.length > 0) return { child, port, serverPids, stderr: () => stderr }
    await sleep(100)
  }
}

// ---------------------------------------------------------------------------------------------
// The gateway's config and the sanity checks

const gatewayConfig = (port: number, alpha: number, beta: number): string => `
binds:
- port: ${port}
  listeners:
  - name: bench
    routes:
    - name: one
      matches: [{path: {pathPrefix: /one}}]
      backends:
      - mcp:
          targets:
          - name: alpha
            mcp: {host: "http://127.0.0.1:${alpha}/mcp"}
    - name: stdio
      matches: [{path: {pathPrefix: /stdio}}]
      backends:
      - mcp:
          targets:
          - name: stdio
            stdio: {cmd: ${JSON.stringify(NODE_BIN)}, args: [${JSON.stringify(ECHO_SERVER)}, stdio, stdio]}
    - name: fed
      matches: [{path: {pathPrefix: /fed}}]
      backends:
      - mcp:
          targets:
          - name: alpha
            mcp: {host: "http://127.0.0.1:${alpha}/mcp"}
          - name: beta
            mcp: {host: "http://127.0.0.1:${beta}/mcp"}
`

/** A path answers echo, lists the five tools, and `whoami` names the server behind it. */
const sanityCheck = async (port: number, endpoint: string, server: string): Promise<Array<string>> => {
  const problems: Array<string> = []
  const session = await openSession(port, endpoint)
  const echo = firstText(await rpcOnce(port, endpoint, session, CALL.rpc))
  if (echo !== ECHO_TEXT) problems.push(`tools/call echo answered ${JSON.stringify(echo)}`)
  const names = toolNames(await rpcOnce(port, endpoint, session, LIST.rpc))
  if (names?.join(",") !== TOOLS.join(",")) problems.push(`tools/list listed ${JSON.stringify(names)}`)
  const who = firstText(await rpcOnce(port, endpoint, session, callTool("whoami")))
  if (who !== server) problems.push(`whoami answered ${JSON.stringify(who)}, not ${server}`)
  return problems
}

/** The federating route lists both servers' tools prefixed, and routes each prefixed call to its server. */
const federationCheck = async (port: number, endpoint: string): Promise<Array<string>> => {
  const problems: Array<string> = []
  const session = await openSession(port, endpoint)
  const expected = [...TOOLS.map((t) => `alpha_${t}`), ...TOOLS.map((t) => `beta_${t}`)]
  const names = toolNames(await rpcOnce(port, endpoint, session, LIST.rpc))
  if (names?.join(",") !== expected.join(",")) problems.push(`tools/list listed ${JSON.stringify(names)}`)
  for (const server of ["alpha", "beta"]) {
    const who = firstText(await rpcOnce(port, endpoint, session, callTool(`${server}_whoami`)))
    if (who !== server) problems.push(`${server}_whoami answered ${JSON.stringify(who)}`)
    const echo = firstText(await rpcOnce(port, endpoint, session, callTool(`${server}_echo`, ECHO_TEXT)))
    if (echo !== ECHO_TEXT) problems.push(`${server}_echo answered ${JSON.stringify(echo)}`)
  }
  return problems
}

const printCheck = (name: string, problems: ReadonlyArray<string>, detail: string): void => {
  process.stdout.write(
    problems.length === 0
      ? `sanity check ${name}: ok (${detail})\n`
      : `sanity check ${name}: FAILED\n${problems.map((line) => `  - ${line}\n`).join("")}`
  )
}

// ---------------------------------------------------------------------------------------------
// Report

const DIRECT = "direct"
const BASELINE = "baseline"
const MCP_PROXY = "mcp-proxy"
const GATEWAY = "gateway"
const GATEWAY_STDIO = "gateway, stdio target"
const LIST_DIRECT = "direct (alpha)"
const LIST_GATEWAY = "gateway, 2 targets"

const perSecond = (m: Measurement | undefined): number => (m === undefined ? NaN : m.requests / m.seconds)

const measurementsTable = (measurements: ReadonlyArray<Measurement>, unit: string): string =>
  table(
    ["scenario", "proxy", `${unit}/s`, "p50 ms", "p99 ms", `proxy CPU µs/${unit}`, `server CPU µs/${unit}`, `proxy+server µs/${unit}`, "proxy CPU", "non-2xx", "errors"],
    measurements.map((m) => {
      // Direct: the server is the measured process; there is nothing behind it.
      const isDirect = m.proxy === DIRECT || m.proxy === LIST_DIRECT
      return [
        m.scenario.name,
        m.proxy,
        grouped(m.requests / m.seconds),
        fixed(m.p50, 2),
        fixed(m.p99, 2),
        fixed(m.cpuUsPerRequest, 1),
        isDirect ? "-" : fixed(m.upstreamCpuUsPerRequest, 1),
        isDirect ? fixed(m.cpuUsPerRequest, 1) : fixed(m.cpuUsPerRequest + m.upstreamCpuUsPerRequest, 1),
        `${fixed(m.proxyCpuPercent, 0)}%`,
        String(m.non2xx),
        String(m.errors)
      ]
    }),
    new Set([2, 3, 4, 5, 6, 7, 8, 9, 10])
  )

const targetsTable = (calls: ReadonlyArray<Measurement>, lists: ReadonlyArray<Measurement>): string => {
  const rows: Array<Array<string>> = []
  const of = (ms: ReadonlyArray<Measurement>, name: string) => ms.find((m) => m.proxy === name)
  const row = (what: string, ratio: number, target: number, atMost: boolean) =>
    rows.push([what, `${ratioText(ratio, target)}x`, `${atMost ? "<=" : ">="} ${target.toFixed(2)}x`, verdict(atMost ? ratio <= target : ratio >= target)])
  const gateway = of(calls, GATEWAY)
  if (gateway !== undefined) {
    row("gateway CPU/call vs baseline CPU/call", gateway.cpuUsPerRequest / (of(calls, BASELINE)?.cpuUsPerRequest ?? NaN), MAX_CPU_RATIO, true)
    row("gateway calls/s vs mcp-proxy calls/s", perSecond(gateway) / perSecond(of(calls, MCP_PROXY)), MIN_VS_MCP_PROXY, false)
    row("gateway calls/s vs direct calls/s", perSecond(gateway) / perSecond(of(calls, DIRECT)), MIN_VS_DIRECT, false)
  }
  const stdio = of(calls, GATEWAY_STDIO)
  if (stdio !== undefined) {
    // Like for like with mcp-proxy: both reach the same server over stdio (the gateway, as
    // upstream does, with one server process per session; mcp-proxy with one for all).
    row("gateway (stdio target) calls/s vs mcp-proxy calls/s", perSecond(stdio) / perSecond(of(calls, MCP_PROXY)), MIN_VS_MCP_PROXY, false)
    row("gateway (stdio target) calls/s vs direct calls/s", perSecond(stdio) / perSecond(of(calls, DIRECT)), MIN_VS_DIRECT, false)
  }
  const federated = of(lists, LIST_GATEWAY)
  if (federated !== undefined) {
    row("federated tools/list/s vs direct tools/list/s", perSecond(federated) / perSecond(of(lists, LIST_DIRECT)), MIN_LIST_VS_DIRECT, false)
  }
  return table(["target", "ratio", "target", "result"], rows, new Set([1]))
}

// ---------------------------------------------------------------------------------------------
// Main

const main = async (): Promise<void> => {
  const nodeVersion = execFileSync(NODE_BIN, ["--version"], { encoding: "utf8" }).trim()
  if (!nodeVersion.startsWith("v24.")) process.stderr.write(`warning: ${NODE_BIN} is ${nodeVersion}, not Node 24\n`)
  const cpus = os.cpus()
  process.stdout.write(
    `MCP benchmark: ${nodeVersion}, ${cpus.length} CPU(s) (${cpus[0]?.model.trim() ?? "unknown"}), ` +
      `${SESSIONS} sessions per path, ${WARMUP_SECONDS} s warm-up + ${MEASURE_SECONDS} s measured per path and scenario\n`
  )

  const alpha = await forkServer("echo server alpha", "mcp-echo-server.ts", ["http", "alpha"])
  const beta = await forkServer("echo server beta", "mcp-echo-server.ts", ["http", "beta"])
  const baseline = await forkServer("baseline proxy", "baseline-proxy.ts", [`http://127.0.0.1:${alpha.port}`])
  const mcpProxy = await startMcpProxy()
  const gateway = await startGateway((port) => gatewayConfig(port, alpha.port, beta.port), "bench:mcp")
  const alphaPid = pidOf(alpha.child, "echo server alpha")
  const betaPid = pidOf(beta.child, "echo server beta")
  process.stdout.write(
    `alpha :${alpha.port} (pid ${alphaPid}), beta :${beta.port} (pid ${betaPid}), baseline :${baseline.port}, ` +
      `mcp-proxy :${mcpProxy.port} (stdio server pid ${mcpProxy.serverPids.join(", ")}), gateway :${gateway.port} (/one, /fed)\n`
  )

  const stdioPids: Array<number> = []
  const callProxies: ReadonlyArray<Proxy> = ([
    { ...proxyOf(DIRECT, alpha.port, alpha.child, "/mcp"), upstreamPids: [] },
    { ...proxyOf(BASELINE, baseline.port, baseline.child, "/mcp"), upstreamPids: [alphaPid] },
    { ...proxyOf(MCP_PROXY, mcpProxy.port, mcpProxy.child, "/mcp"), upstreamPids: mcpProxy.serverPids },
    { ...proxyOf(GATEWAY, gateway.port, gateway.child, "/one/mcp"), upstreamPids: [alphaPid] },
    // Filled once its sessions are open: the gateway spawns one stdio server per session.
    { ...proxyOf(GATEWAY_STDIO, gateway.port, gateway.child, "/stdio/mcp"), upstreamPids: stdioPids }
  ] satisfies Array<Proxy>).filter((p) => ONLY.length === 0 || ONLY.includes(p.name))
  const listDirect: Proxy = { ...proxyOf(LIST_DIRECT, alpha.port, alpha.child, "/mcp"), upstreamPids: [] }
  const listGateway: Proxy = { ...proxyOf(LIST_GATEWAY, gateway.port, gateway.child, "/fed/mcp"), upstreamPids: [alphaPid, betaPid] }
  const listProxies: ReadonlyArray<Proxy> = [listDirect, listGateway]

  const checks: ReadonlyArray<readonly [string, number, string, string]> = [
    [DIRECT, alpha.port, "/mcp", "alpha"],
    [BASELINE, baseline.port, "/mcp", "alpha"],
    [MCP_PROXY, mcpProxy.port, "/mcp", "stdio"],
    [`${GATEWAY} /one`, gateway.port, "/one/mcp", "alpha"],
    [`${GATEWAY} /stdio`, gateway.port, "/stdio/mcp", "stdio"]
  ]
  for (const [name, port, endpoint, server] of checks) {
    printCheck(name, await sanityCheck(port, endpoint, server), `tools/call echo, tools/list of ${TOOLS.length}, whoami = ${server}`)
  }
  printCheck(`${GATEWAY} /fed`, await federationCheck(gateway.port, "/fed/mcp"), "tools/list alpha_* + beta_*, each whoami and echo reach their server")

  const callMeasurements: Array<Measurement<McpScenario>> = []
  const listMeasurements: Array<Measurement<McpScenario>> = []
  if (runs("call")) {
    for (const p of callProxies) await prepare(p, isEcho)
    stdioPids.push(...descendants(pidOf(gateway.child, "the gateway")))
    process.stdout.write(`running ${CALL.name} ...\n`)
    callMeasurements.push(...await runScenario(callProxies, CALL, alphaPid, mcpLoad))
  }
  if (runs("list")) {
    await prepare(listDirect, listsTools(TOOLS.length))
    await prepare(listGateway, listsTools(TOOLS.length * 2))
    process.stdout.write(`running ${LIST.name} ...\n`)
    listMeasurements.push(...await runScenario(listProxies, LIST, alphaPid, mcpLoad))
  }
  const others: ReadonlyArray<readonly [string, ChildProcess]> = [
    ["echo server alpha", alpha.child],
    ["echo server beta", beta.child],
    ["the baseline proxy", baseline.child],
    ["mcp-proxy", mcpProxy.child]
  ]
  for (const [name, child] of others) {
    if (!alive(child)) throw new Error(`${name} died under load`)
  }
  if (!alive(gateway.child)) throw new Error(`the gateway died under load\n${gateway.stderr()}`)
  await Promise.all([...targets.values()].map((t) => t.pool.close()))

  const all: Array<Measurement> = [...callMeasurements, ...listMeasurements]
  if (callMeasurements.length > 0) process.stdout.write(`\n${measurementsTable(callMeasurements, "call")}\n`)
  if (listMeasurements.length > 0) process.stdout.write(`\n${measurementsTable(listMeasurements, "list")}\n`)
  process.stdout.write(`\n${targetsTable(callMeasurements, listMeasurements)}\n\n`)
  const stderrs = [mcpProxy.stderr().trim() === "" ? "" : `mcp-proxy stderr (last 16 KiB):\n${mcpProxy.stderr().trim()}\n`]
  process.stdout.write(
    reportTail(
      [...(callMeasurements.length > 0 ? callProxies : []), ...(listMeasurements.length > 0 ? listProxies : [])],
      all,
      gateway.stderr(),
      cpus.length,
      `"upstream CPU"/"server CPU" = the servers behind a path: alpha (baseline, gateway /one), alpha + beta (gateway /fed), the stdio servers the gateway spawned, one per session (gateway /stdio), ` +
        `the stdio server mcp-proxy spawned (mcp-proxy); for direct the server itself is the measured process. ` +
        `"CPU µs/req" above means per call (per list). Latencies are per answered call, measured in this process.\n${stderrs.join("")}`
    )
  )
}

// ---------------------------------------------------------------------------------------------
// --compare: gateway A against gateway B on tools/call, in the same run

/** A/B of one change on the single-target tools/call path: baseline, A and B in rotating slots. */
const compareOnce = async (b: GatewayVariant): Promise<Array<Array<string>>> => {
  const alpha = await forkServer("echo server alpha", "mcp-echo-server.ts", ["http", "alpha"])
  const beta = await forkServer("echo server beta", "mcp-echo-server.ts", ["http", "beta"])
  const baseline = await forkServer("baseline proxy", "baseline-proxy.ts", [`http://127.0.0.1:${alpha.port}`])
  const gwA = await startGateway((port) => gatewayConfig(port, alpha.port, beta.port), "bench:mcp")
  const gwB = await startGateway((port) => gatewayConfig(port, alpha.port, beta.port), "bench:mcp", 1, undefined, b)
  const alphaPid = pidOf(alpha.child, "echo server alpha")
  const proxies: ReadonlyArray<Proxy> = [
    { ...proxyOf(BASELINE, baseline.port, baseline.child, "/mcp"), upstreamPids: [alphaPid] },
    { ...proxyOf("A", gwA.port, gwA.child, "/one/mcp"), upstreamPids: [alphaPid] },
    { ...proxyOf("B", gwB.port, gwB.child, "/one/mcp"), upstreamPids: [alphaPid] }
  ]
  // A/B figures of a B that does not do the same work would mislead: stop instead.
  for (const p of proxies) {
    const result = await sanityCheck(p.port, p.path ?? "/mcp", "alpha")
    printCheck(p.name, result, `tools/call echo, tools/list of ${TOOLS.length}, whoami = alpha`)
    if (result.length > 0) throw new Error(`sanity check failed for ${p.name}`)
  }
  for (const p of proxies) await prepare(p, isEcho)
  process.stdout.write(`running ${CALL.name} ...\n`)
  const ms = await runScenario(proxies, CALL, alphaPid, mcpLoad)
  const of = (name: string) => ms.find((m) => m.proxy === name)
  const [base, a, bm] = [of(BASELINE), of("A"), of("B")]
  if (base === undefined || a === undefined || bm === undefined) throw new Error("a proxy was not measured")
  for (const [name, child] of [[BASELINE, baseline.child], ["A", gwA.child], ["B", gwB.child]] as const) {
    if (!alive(child)) throw new Error(`${name} died under load`)
  }
  await Promise.all(proxies.map((p) => targets.get(p)?.pool.close()))
  for (const p of proxies) targets.delete(p)
  for (const c of [baseline.child, gwA.child, gwB.child, alpha.child, beta.child]) await stopChild(c)
  const diff = pairedDifference(a, bm)
  return [[
    fixed(base.cpuUsPerRequest, 1),
    `${fixed(a.cpuUsPerRequest, 1)} (${fixed(a.cpuUsPerRequest / base.cpuUsPerRequest, 2)}x)`,
    `${fixed(bm.cpuUsPerRequest, 1)} (${fixed(bm.cpuUsPerRequest / base.cpuUsPerRequest, 2)}x)`,
    `${fixed(bm.cpuUsPerRequest / a.cpuUsPerRequest, 2)}x`,
    `${signed(diff.median)} [${signed(diff.q1)}, ${signed(diff.q3)}]`,
    `${grouped(perSecond(a))} / ${grouped(perSecond(bm))}`,
    ...proxies.map((p) => fixed(p.peakRssUnderLoad / 1024, 0))
  ]]
}

const mainCompare = async (): Promise<void> => {
  const b = variantFromEnv()
  if (typeof b === "string") throw new Error(b)
  process.stdout.write(
    `MCP A/B (tools/call, single target): ${SESSIONS} sessions per path, ${WARMUP_SECONDS} s warm-up + ${MEASURE_SECONDS} s measured` +
      `${REPEAT > 1 ? `, ${REPEAT} runs with fresh processes` : ""}\n` +
      `A: ${path.relative(ROOT, GATEWAY_MAIN)}${GATEWAY_NODE_ARGS.length > 0 ? ` with node ${GATEWAY_NODE_ARGS.join(" ")}` : ""}; ` +
      `B: ${b.main ?? "the same command"}${b.nodeArgs === undefined ? "" : ` with node ${b.nodeArgs.join(" ")}`}\n`
  )
  const header = ["run", "baseline µs/call", "A µs/call", "B µs/call", "B/A", "B − A µs per round: median [IQR]", "A / B calls/s", "peak RSS MiB base", "A", "B"]
  const rows: Array<Array<string>> = []
  for (let run = 1; run <= REPEAT; run++) {
    for (const row of await compareOnce(b)) rows.push([`${run}`, ...row])
    process.stdout.write(`\n${table(header, rows, new Set([1, 2, 3, 4, 6, 7, 8, 9]))}\n\n`)
  }
}

const COMPARE = process.argv.slice(2).includes("--compare")
const unknown = process.argv.slice(2).filter((a) => a !== "--compare")
if (unknown.length > 0) {
  process.stderr.write(`bench/mcp.ts: unknown argument ${unknown.join(" ")} (only --compare)\n`)
  process.exit(1)
}

await runMain(COMPARE ? mainCompare : main)
