/**
 * What the benchmarks share: settings from the environment, child processes that are always
 * killed on the way out, the gateway started from an inline config, one-off requests, CPU and
 * memory readings from /proc, and the measured load (autocannon in this process unless the
 * caller brings its own driver, interleaved ABBA slots per proxy) with its report helpers.
 * `bench/http.ts`, `bench/policies.ts` and `bench/mcp.ts` are the entry points; their headers
 * document the environment variables.
 */
import autocannon from "autocannon"
import { type ChildProcess, execFileSync, fork, spawn } from "node:child_process"
import { existsSync, readFileSync, readlinkSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { setTimeout as sleep } from "node:timers/promises"
import { fileURLToPath } from "node:url"

// ---------------------------------------------------------------------------------------------
// Settings

export const positive = (name: string, fallback: number): number => {
  const raw = process.env[name]
  if (raw === undefined || raw === "") return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value <= 0) {
    process.stderr.write(`${name}=${raw} is not a positive number; using ${fallback}\n`)
    return fallback
  }
  return value
}

export const MEASURE_SECONDS = positive("BENCH_SECONDS", 10)
export const WARMUP_SECONDS = positive("BENCH_WARMUP", 5)
export const CONNECTIONS = Math.round(positive("BENCH_CONNECTIONS", 32))
/** Measured rounds per scenario, in `slotOrder`; each proxy gets MEASURE_SECONDS / ROUNDS per round. */
export const ROUNDS = Math.round(positive("BENCH_ROUNDS", 10))
/** Repetitions with fresh proxy processes (`BENCH_REPEAT`), for bench/http.ts and bench/policies.ts. */
export const REPEAT = Math.max(1, Math.round(positive("BENCH_REPEAT", 1)))
export const GATEWAY_NODE_ARGS = (process.env["BENCH_GATEWAY_NODE_ARGS"] ?? "").split(/\s+/).filter((a) => a !== "")
/** Extra node flags for the baseline proxy (`BENCH_BASELINE_NODE_ARGS`), to profile it the same way. */
export const BASELINE_NODE_ARGS = (process.env["BENCH_BASELINE_NODE_ARGS"] ?? "").split(/\s+/).filter((a) => a !== "")

export const ROOT = fileURLToPath(new URL("..", import.meta.url))
export const BENCH_DIR = fileURLToPath(new URL(".", import.meta.url))
/**
 * The gateway command the benches run: the bundle, or `BENCH_GATEWAY_MAIN` (relative to the
 * project), e.g. `dist/Cli.js`, the unbundled tsc output, for CPU profiles with readable names.
 */
export const GATEWAY_MAIN = path.resolve(ROOT, process.env["BENCH_GATEWAY_MAIN"] ?? path.join("dist", "main.js"))
/** The pinned Node 24 (the `node` npm package); the system node may be older. */
export const NODE_BIN = existsSync(path.join(ROOT, "node_modules", ".bin", "node"))
  ? path.join(ROOT, "node_modules", ".bin", "node")
  : process.execPath

/** One kind of request the load sends. */
export interface Scenario {
  readonly name: string
  readonly method: "GET" | "POST"
  readonly path: string
  readonly headers: Record<string, string>
  readonly body: Buffer | undefined
}

/** "other CPU" (% of one CPU) above which the run is flagged as disturbed. */
export const OTHER_CPU_WARNING = 10

// ---------------------------------------------------------------------------------------------
// Child processes: every one is tracked and killed on any way out

const children = new Set<ChildProcess>()

export const alive = (child: ChildProcess): boolean => child.exitCode === null && child.signalCode === null

export const track = <C extends ChildProcess>(child: C): C => {
  children.add(child)
  child.once("exit", () => children.delete(child))
  // A spawn failure surfaces as "exited"/"did not answer" in the waits; never as an unhandled event.
  child.on("error", (error) => process.stderr.write(`child process ${child.pid ?? "(not started)"}: ${error.message}\n`))
  return child
}

const killAll = (signal: NodeJS.Signals): void => {
  for (const child of children) if (alive(child)) child.kill(signal)
}

/** SIGTERM, then SIGKILL whatever is still running after `graceMs`. */
export const stopAll = async (graceMs: number): Promise<void> => {
  const waiting = [...children].filter(alive).map((child) =>
    new Promise<void>((resolve) => {
      child.once("exit", () => resolve())
      child.kill("SIGTERM")
    })
  )
  await Promise.race([Promise.all(waiting), sleep(graceMs)])
  killAll("SIGKILL")
}

/** SIGTERM one child and wait for it to exit (SIGKILL after 5 s). */
export const stopChild = async (child: ChildProcess): Promise<void> => {
  if (!alive(child)) return
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  child.kill("SIGTERM")
  await Promise.race([exited, sleep(5000)])
  if (alive(child)) child.kill("SIGKILL")
  await exited
}

process.on("exit", () => killAll("SIGKILL"))

let currentLoad: autocannon.Instance | undefined
let interrupted = false
/** Whether a signal stopped the run (the exit code is then 130). */
export const isInterrupted = (): boolean => interrupted
const onSignal = (signal: NodeJS.Signals) => {
  if (interrupted) process.exit(130)
  interrupted = true
  process.stderr.write(`\n${signal}: stopping the benchmark and its child processes\n`)
  currentLoad?.stop()
  void stopAll(2000).then(() => process.exit(130))
}
process.on("SIGINT", onSignal)
process.on("SIGTERM", onSignal)
process.on("SIGHUP", onSignal)

const isPortMessage = (message: unknown): message is { readonly type: "listening"; readonly port: number } =>
  typeof message === "object" && message !== null && "type" in message && message.type === "listening" &&
  "port" in message && typeof message.port === "number"

/** Forks a bench/*.ts script on the pinned Node and waits for it to report its port over IPC. */
export const forkServer = (name: string, script: string, args: ReadonlyArray<string>): Promise<{ child: ChildProcess; port: number }> =>
  new Promise((resolve, reject) => {
    const child = track(fork(path.join(BENCH_DIR, script), [...args], {
      execPath: NODE_BIN,
      execArgv: ["--disable-warning=ExperimentalWarning", ...(script === "baseline-proxy.ts" ? BASELINE_NODE_ARGS : [])],
      stdio: ["ignore", "inherit", "inherit", "ipc"]
    }))
    const timer = setTimeout(() => reject(new Error(`${name} did not report a port within 15 s`)), 15_000)
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`${name} exited before listening (code ${code}, signal ${signal})`))
    })
    child.on("message", (message) => {
      if (!isPortMessage(message)) return
      clearTimeout(timer)
      resolve({ child, port: message.port })
    })
  })

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** A gateway started otherwise than GATEWAY_MAIN with GATEWAY_NODE_ARGS. */
export interface GatewayVariant {
  readonly main?: string | undefined
  readonly nodeArgs?: ReadonlyArray<string> | undefined
}

/**
 * Gateway B of a `--compare` run: `BENCH_B_MAIN` (a dist/main.js, relative to the project)
 * and/or `BENCH_B_NODE_ARGS` (node flags replacing BENCH_GATEWAY_NODE_ARGS); a message when
 * neither is set.
 */
export const variantFromEnv = (): GatewayVariant | string => {
  const main = process.env["BENCH_B_MAIN"]
  const args = process.env["BENCH_B_NODE_ARGS"]
  if (main === undefined && args === undefined) return "--compare needs BENCH_B_MAIN and/or BENCH_B_NODE_ARGS to say what B is"
  return {
    main: main === undefined ? undefined : path.resolve(ROOT, main),
    nodeArgs: args === undefined ? undefined : args.split(/\s+/).filter((a) => a !== "")
  }
}

/**
 * Starts dist/main.js with an inline config (or, given `file`, the config written to that file
 * and watched: `-f`) and waits until its data port answers, and with `workers` > 1 until its
 * readiness probe says every worker has started.
 */
export const startGateway = async (
  config: (port: number) => string,
  /** The npm script that builds dist/ and runs the benchmark, for the error message. */
  script: string,
  workers = 1,
  file?: string,
  /** Another command or other node flags than GATEWAY_MAIN and GATEWAY_NODE_ARGS (bench/http.ts --compare). */
  variant?: GatewayVariant
): Promise<{ child: ChildProcess; port: number; stderr: () => string }> => {
  const main = variant?.main ?? GATEWAY_MAIN
  if (!existsSync(main)) throw new Error(`${main} is missing: run \`npm run build\` (npm run ${script} does)`)
  const port = await freePort()
  const readiness = workers > 1 ? await freePort() : 0
  if (file !== undefined) writeFileSync(file, config(port))
  const source = file === undefined ? ["-c", config(port)] : ["-f", file]
  const child = track(spawn(NODE_BIN, [...(variant?.nodeArgs ?? GATEWAY_NODE_ARGS), main, ...source], {
    cwd: ROOT,
    env: {
      ...process.env,
      ADMIN_ADDR: "127.0.0.1:0",
      STATS_ADDR: "127.0.0.1:0",
      READINESS_ADDR: `127.0.0.1:${readiness}`,
      CONNECTION_TERMINATION_DEADLINE: "1s",
      WORKER_THREADS: String(workers)
    },
    // stdout carries one access-log line per request: straight to /dev/null, never a full pipe.
    stdio: ["ignore", "ignore", "pipe"]
  }))
  let stderr = ""
  child.stderr?.setEncoding("utf8")
  child.stderr?.on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-16_384)
  })
  const deadline = Date.now() + 20_000
  for (;;) {
    if (!alive(child)) throw new Error(`the gateway exited during start-up (code ${child.exitCode}):\n${stderr}`)
    if (Date.now() > deadline) throw new Error(`the gateway did not answer on port ${port} within 20 s:\n${stderr}`)
    const answered = await send(port, { method: "GET", path: "/", headers: {} }).then(() => true, () => false)
    const ready = !answered || workers === 1 ||
      await send(readiness, { method: "GET", path: "/healthz/ready", headers: {} }).then((r) => r.status === 200, () => false)
    if (answered && ready) return { child, port, stderr: () => stderr }
    await sleep(50)
  }
}

// ---------------------------------------------------------------------------------------------
// One-off requests (start-up probes and sanity checks)

export interface Reply {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

export const send = (port: number, request: { method: string; path: string; headers: Record<string, string>; body?: Buffer }): Promise<Reply> =>
  new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, method: request.method, path: request.path, headers: request.headers, agent: false, timeout: 5000 },
      (res) => {
        let body = ""
        res.setEncoding("utf8")
        res.on("data", (chunk: string) => {
          body += chunk
        })
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
        res.on("error", reject)
      }
    )
    req.on("timeout", () => req.destroy(new Error("timed out")))
    req.on("error", reject)
    req.end(request.body)
  })

// ---------------------------------------------------------------------------------------------
// /proc readings

export const CLK_TCK = (() => {
  try {
    const value = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim())
    return Number.isFinite(value) && value > 0 ? value : 100
  } catch {
    return 100
  }
})()

/** User + system CPU seconds of a process (all its threads) from /proc/<pid>/stat. */
export const cpuSeconds = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  // Fields after "pid (comm) ": state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return (Number(fields[11] ?? NaN) + Number(fields[12] ?? NaN)) / CLK_TCK
}

/** CPU seconds the whole machine spent busy (all CPUs, /proc/stat: everything but idle and iowait). */
const machineBusySeconds = (): number => {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? ""
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number)
  const [user = 0, nice = 0, system = 0, _idle = 0, _iowait = 0, irq = 0, softirq = 0, steal = 0] = ticks
  return (user + nice + system + irq + softirq + steal) / CLK_TCK
}

export interface Memory {
  /** VmRSS, KiB. */
  readonly rss: number
  /** VmHWM, the peak VmRSS so far, KiB. */
  readonly hwm: number
  /** RssAnon (heaps) and RssFile (mapped files: mostly the node binary), KiB. */
  readonly anon: number
  readonly file: number
}

export const memory = (pid: number): Memory => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN)
  return { rss: field("VmRSS"), hwm: field("VmHWM"), anon: field("RssAnon"), file: field("RssFile") }
}

export const mib = (kib: number): number => kib / 1024

// ---------------------------------------------------------------------------------------------
// Load

/** Fractional-millisecond response times (autocannon's own histogram is 1 ms coarse). */
export class Latencies {
  private values = new Float64Array(1 << 18)
  private count = 0
  readonly record = (_client: unknown, _status: number, _bytes: number, ms: number): void => this.add(ms)
  readonly add = (ms: number): void => {
    if (this.count === this.values.length) {
      const grown = new Float64Array(this.values.length * 2)
      grown.set(this.values)
      this.values = grown
    }
    this.values[this.count++] = ms
  }
  percentiles(ps: ReadonlyArray<number>): Array<number> {
    const sorted = this.values.slice(0, this.count).sort()
    return ps.map((p) => sorted[Math.min(this.count - 1, Math.max(0, Math.ceil(p * this.count) - 1))] ?? NaN)
  }
}

/** What one load of a proxy achieved; `statuses` counts responses by HTTP status. */
export interface LoadResult {
  readonly requests: number
  readonly non2xx: number
  readonly errors: number
  readonly timeouts: number
  readonly statuses: ReadonlyMap<string, number>
}

/**
 * Drives one proxy with a scenario's load for `seconds`, recording each response time in
 * `latencies` when given. The default is autocannon; bench/mcp.ts brings its own (MCP sessions).
 * A driver must end early once `isInterrupted()` turns true.
 */
export type LoadDriver<S extends Scenario = Scenario> = (proxy: Proxy, scenario: S, seconds: number, latencies: Latencies | undefined) => Promise<LoadResult>

const autocannonLoad: LoadDriver = (proxy, scenario, seconds, latencies) =>
  new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: `http://127.0.0.1:${proxy.port}${proxy.path ?? scenario.path}`,
        connections: CONNECTIONS,
        duration: seconds,
        method: scenario.method,
        headers: scenario.headers,
        ...(scenario.body === undefined ? {} : { body: scenario.body })
      },
      (error, result) => {
        currentLoad = undefined
        if (error !== null) reject(error)
        else {
          resolve({
            requests: result.requests.total,
            non2xx: result.non2xx,
            errors: result.errors,
            timeouts: result.timeouts,
            statuses: new Map(Object.entries(result.statusCodeStats).map(([status, { count }]) => [status, count]))
          })
        }
      }
    )
    currentLoad = instance
    if (latencies !== undefined) instance.on("response", latencies.record)
  })

/** A proxy process under load; several may share a process (routes of one gateway, by `path`). */
export interface Proxy {
  readonly name: string
  readonly port: number
  readonly pid: number
  /** The path loaded instead of the scenario's: selects one route of a gateway. */
  readonly path: string | undefined
  /** The processes serving this proxy (their CPU is "upstream CPU"); absent: runScenario's upstream. */
  readonly upstreamPids?: ReadonlyArray<number>
  /** Every status code answered under load (warm-up and measured), and transport failures. */
  readonly statuses: Map<string, number>
  errors: number
  timeouts: number
  /** Highest VmRSS sampled while under load, KiB. */
  peakRssUnderLoad: number
  /** Started, answered a probe, then left alone for a second; before any load. */
  idle: Memory | undefined
  /**
   * Runs before each of this proxy's slots (warm-up included): several "proxies" may be one
   * gateway process under different configs, switched by a hot reload here.
   */
  prepare?: () => Promise<void>
}

export interface Measurement<S extends Scenario = Scenario> {
  readonly scenario: S
  readonly proxy: string
  readonly requests: number
  readonly seconds: number
  readonly p50: number
  readonly p99: number
  readonly cpuUsPerRequest: number
  /** The upstream processes' CPU over the same slots / completed requests. */
  readonly upstreamCpuUsPerRequest: number
  readonly proxyCpuPercent: number
  readonly upstreamCpuPercent: number
  readonly clientCpuPercent: number
  /** CPU the rest of the machine used meanwhile (other processes, the idle proxy), % of one CPU. */
  readonly otherCpuPercent: number
  readonly non2xx: number
  readonly errors: number
  /** CPU µs per request of each measured slot, in round order (for paired comparisons). */
  readonly slots: ReadonlyArray<number>
}

const tally = (proxy: Proxy, result: LoadResult): void => {
  for (const [status, count] of result.statuses) {
    proxy.statuses.set(status, (proxy.statuses.get(status) ?? 0) + count)
  }
  proxy.errors += result.errors
  proxy.timeouts += result.timeouts
}

const sampleRss = (proxy: Proxy): () => void => {
  const sample = () => {
    try {
      proxy.peakRssUnderLoad = Math.max(proxy.peakRssUnderLoad, memory(proxy.pid).rss)
    } catch {
      // the process is gone; the run reports it elsewhere
    }
  }
  sample()
  const timer = setInterval(sample, 100)
  return () => {
    clearInterval(timer)
    sample()
  }
}

/** Sums of the measured slots of one proxy in one scenario. */
interface Totals {
  cpu: number
  upstreamCpu: number
  clientCpu: number
  machineCpu: number
  wall: number
  requests: number
  non2xx: number
  errors: number
  readonly latencies: Latencies
}

/**
 * One measured slot: load for `seconds`, CPU read around it, added to `totals`. Returns the slot's
 * CPU µs/req and the CPU other processes used meanwhile (% of one CPU).
 */
const measureSlot = async <S extends Scenario>(
  proxy: Proxy,
  scenario: S,
  seconds: number,
  upstreamPids: ReadonlyArray<number>,
  totals: Totals,
  driver: LoadDriver<S>
): Promise<{ usPerRequest: number; otherPercent: number }> => {
  const upstreamSeconds = () => upstreamPids.reduce((sum, pid) => sum + cpuSeconds(pid), 0)
  const cpu0 = cpuSeconds(proxy.pid)
  const upstream0 = upstreamSeconds()
  const client0 = process.cpuUsage()
  const machine0 = machineBusySeconds()
  const wall0 = performance.now()
  const result = await driver(proxy, scenario, seconds, totals.latencies)
  const cpu = cpuSeconds(proxy.pid) - cpu0
  const upstreamCpu = upstreamSeconds() - upstream0
  const client = process.cpuUsage(client0)
  const machine = machineBusySeconds() - machine0
  const wall = (performance.now() - wall0) / 1000
  tally(proxy, result)
  totals.cpu += cpu
  totals.upstreamCpu += upstreamCpu
  totals.clientCpu += (client.user + client.system) / 1e6
  totals.machineCpu += machine
  totals.wall += wall
  totals.requests += result.requests
  totals.non2xx += result.non2xx
  totals.errors += result.errors
  return {
    usPerRequest: result.requests > 0 ? (cpu * 1e6) / result.requests : NaN,
    otherPercent: (Math.max(0, machine - cpu - upstreamCpu - (client.user + client.system) / 1e6) / wall) * 100
  }
}

/**
 * One scenario: a warm-up of each proxy, then ROUNDS measured rounds in `slotOrder` (two
 * proxies: baseline, gateway, gateway, baseline, ...) so slow drift of the machine weighs on all alike.
 */
/**
 * The proxies' order in one round. Two alternate (ABBA). Three or more rotate (ABC, BCA, CAB),
 * so that each takes each position equally often and none runs twice in a row: reversing three
 * (ABC, CBA) kept B in the middle and ran A and C twice in a row, and an A/A comparison of one
 * build then read 1.42× for the 64 KiB POST.
 */
export const slotOrder = <P>(proxies: ReadonlyArray<P>, round: number): ReadonlyArray<P> => {
  if (proxies.length <= 2) return round % 2 === 0 ? proxies : [...proxies].reverse()
  const shift = round % proxies.length
  return [...proxies.slice(shift), ...proxies.slice(0, shift)]
}

export const runScenario = async <S extends Scenario>(
  proxies: ReadonlyArray<Proxy>,
  scenario: S,
  upstreamPid: number,
  driver: LoadDriver<S> = autocannonLoad
): Promise<Array<Measurement<S>>> => {
  const stopSampling = proxies.map(sampleRss)
  try {
    for (const proxy of proxies) {
      await proxy.prepare?.()
      tally(proxy, await driver(proxy, scenario, WARMUP_SECONDS, undefined))
      await sleep(200)
    }
    const totals = new Map<string, Totals>(proxies.map((p) => [p.name, {
      cpu: 0,
      upstreamCpu: 0,
      clientCpu: 0,
      machineCpu: 0,
      wall: 0,
      requests: 0,
      non2xx: 0,
      errors: 0,
      latencies: new Latencies()
    }]))
    const slotSeconds = MEASURE_SECONDS / ROUNDS
    const perSlot = new Map<string, Array<number>>(proxies.map((p) => [p.name, []]))
    let disturbed = 0
    for (let round = 0; round < ROUNDS; round++) {
      const order = slotOrder(proxies, round)
      for (const proxy of order) {
        const t = totals.get(proxy.name)
        if (t === undefined) continue
        await proxy.prepare?.()
        const slot = await measureSlot(proxy, scenario, slotSeconds, proxy.upstreamPids ?? [upstreamPid], t, driver)
        perSlot.get(proxy.name)?.push(slot.usPerRequest)
        if (slot.otherPercent > OTHER_CPU_WARNING) disturbed++
        await sleep(100)
      }
    }
    const spread = [...perSlot].map(([name, values]) => {
      const sorted = [...values].sort((a, b) => a - b)
      const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN
      return `${name} ${fixed(at(0), 1)} / ${fixed(at(0.5), 1)} / ${fixed(at(1), 1)}`
    })
    process.stdout.write(
      `  CPU µs/req over ${ROUNDS} slot(s) of ${fixed(slotSeconds, 1)} s each, min / median / max: ${spread.join("; ")}` +
        `${disturbed > 0 ? `; ${disturbed} slot(s) with other CPU > ${OTHER_CPU_WARNING}%` : ""}\n`
    )
    return proxies.map((proxy) => {
      const t = totals.get(proxy.name)
      const [p50 = NaN, p99 = NaN] = t?.latencies.percentiles([0.5, 0.99]) ?? []
      const wall = t?.wall ?? NaN
      const requests = t?.requests ?? 0
      return {
        scenario,
        proxy: proxy.name,
        requests,
        seconds: wall,
        p50,
        p99,
        cpuUsPerRequest: requests > 0 ? ((t?.cpu ?? NaN) * 1e6) / requests : NaN,
        upstreamCpuUsPerRequest: requests > 0 ? ((t?.upstreamCpu ?? NaN) * 1e6) / requests : NaN,
        proxyCpuPercent: ((t?.cpu ?? NaN) / wall) * 100,
        upstreamCpuPercent: ((t?.upstreamCpu ?? NaN) / wall) * 100,
        clientCpuPercent: ((t?.clientCpu ?? NaN) / wall) * 100,
        otherCpuPercent: (Math.max(0, (t?.machineCpu ?? NaN) - (t?.cpu ?? NaN) - (t?.upstreamCpu ?? NaN) - (t?.clientCpu ?? NaN)) / wall) * 100,
        non2xx: t?.non2xx ?? 0,
        errors: t?.errors ?? 0,
        slots: perSlot.get(proxy.name) ?? []
      }
    })
  } finally {
    for (const stop of stopSampling) stop()
  }
}

// ---------------------------------------------------------------------------------------------
// Report helpers

/**
 * The last table of a repeated benchmark: each run's ratio (fresh processes each run, so the
 * spread shows how far one run's ratio can be trusted) and the verdict on their median.
 */
export const ratioSummary = (
  rows: ReadonlyArray<{ readonly name: string; readonly ratios: ReadonlyArray<number>; readonly target?: number }>,
  /** What the ratios are. */
  what = "CPU vs baseline"
): string => {
  const median = (values: ReadonlyArray<number>): number => {
    const sorted = [...values].sort((a, b) => a - b)
    const mid = Math.floor(sorted.length / 2)
    return sorted.length % 2 === 1 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2
  }
  return table(
    ["scenario", `${what}, each run`, "median", "target", "result"],
    rows.map((r) => {
      const m = median(r.ratios)
      const t = r.target
      return [
        r.name,
        r.ratios.map((x) => `${fixed(x, 2)}x`).join(" "),
        `${t === undefined ? fixed(m, 2) : ratioText(m, t)}x`,
        t === undefined ? "" : `<= ${t.toFixed(2)}x`,
        t === undefined ? "" : verdict(m <= t)
      ]
    }),
    new Set([2])
  )
}

/**
 * `b − a` per round (slots of the same round run back to back, so slow phases of the machine
 * cancel out): the median and the interquartile range of those differences.
 */
export const pairedDifference = (a: Measurement, b: Measurement): { median: number; q1: number; q3: number } => {
  const diffs = a.slots.map((x, i) => (b.slots[i] ?? NaN) - x).filter(Number.isFinite).sort((x, y) => x - y)
  const at = (q: number) => diffs[Math.min(diffs.length - 1, Math.floor(q * diffs.length))] ?? NaN
  return { median: at(0.5), q1: at(0.25), q3: at(0.75) }
}

export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>, rightAligned: ReadonlySet<number>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join("  ").trimEnd()
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n")
}

export const fixed = (value: number, digits: number): string => (Number.isFinite(value) ? value.toFixed(digits) : "n/a")
export const grouped = (value: number): string => (Number.isFinite(value) ? Math.round(value).toLocaleString("en-US") : "n/a")
export const verdict = (ok: boolean): string => (ok ? "PASS" : "MISS")
export const signed = (value: number): string => `${value >= 0 ? "+" : ""}${fixed(value, 1)}`
/** Two decimals, or three when two would round onto the target and hide which side it is on. */
export const ratioText = (ratio: number, target: number): string =>
  fixed(ratio, 2) === fixed(target, 2) && ratio !== target ? fixed(ratio, 3) : fixed(ratio, 2)

export const context = (measurements: ReadonlyArray<Measurement>): string =>
  table(
    ["scenario", "proxy", "requests", "seconds", "load generator CPU", "upstream CPU", "other CPU"],
    measurements.map((m) => [
      m.scenario.name,
      m.proxy,
      grouped(m.requests),
      fixed(m.seconds, 2),
      `${fixed(m.clientCpuPercent, 0)}%`,
      `${fixed(m.upstreamCpuPercent, 0)}%`,
      `${fixed(m.otherCpuPercent, 0)}%`
    ]),
    new Set([2, 3, 4, 5, 6])
  )

/**
 * The closing part of a report: each proxy's responses under load, the gateway's stderr, the load
 * context, a warning when other processes disturbed the run, and how to read the figures.
 */
export const reportTail = (
  proxies: ReadonlyArray<Proxy>,
  measurements: ReadonlyArray<Measurement>,
  gatewayStderr: string,
  cpuCount: number,
  note: string
): string => {
  let out = ""
  for (const p of proxies) {
    const total = [...p.statuses.values()].reduce((a, b) => a + b, 0)
    const breakdown = [...p.statuses.entries()].sort().map(([status, count]) => `${status}: ${count.toLocaleString("en-US")}`).join(", ")
    const allOk = p.errors === 0 && [...p.statuses.keys()].every((s) => s === "200")
    out += `${p.name} responses under load (warm-up + measured): ${total.toLocaleString("en-US")} ` +
      `[${breakdown === "" ? "none" : breakdown}], errors ${p.errors} (timeouts ${p.timeouts})` +
      `${allOk ? "  all 200" : "  NOT ALL 200"}\n`
  }
  const stderr = gatewayStderr.trim()
  if (stderr !== "") out += `\ngateway stderr (last 16 KiB):\n${stderr}\n`
  out += `\nload context (same cores: load generator, upstream and proxy share ${cpuCount} CPU(s)):\n${context(measurements)}\n`
  const busiest = Math.max(...measurements.map((m) => m.otherCpuPercent))
  if (busiest > OTHER_CPU_WARNING) {
    out += `\nWARNING: other processes used up to ${fixed(busiest, 0)}% of a CPU while a proxy was measured; ` +
      `on ${cpuCount} CPU(s) that skews CPU µs/req and req/s. Rerun on a quiet machine.\n`
  }
  out += `\nCPU µs/req = proxy user+sys CPU time, all threads (/proc/<pid>/stat, CLK_TCK ${CLK_TCK}), over the measured slots / completed requests.\n${note}\n`
  return out
}

/** A proxy to measure; the pid must be node itself, not a wrapper shell. */
export const proxyOf = (name: string, port: number, child: ChildProcess, routePath?: string): Proxy => {
  const id = pidOf(child, name)
  const exe = readlinkSync(`/proc/${id}/exe`)
  if (!path.basename(exe).startsWith("node")) throw new Error(`${name} pid ${id} runs ${exe}, not node`)
  return { name, port, pid: id, path: routePath, statuses: new Map(), errors: 0, timeouts: 0, peakRssUnderLoad: 0, idle: undefined }
}

export const pidOf = (child: ChildProcess, name: string): number => {
  if (child.pid === undefined) throw new Error(`${name} has no pid`)
  return child.pid
}

/** Runs `main`, then stops every child: exit 0, 1 when it could not run, 130 when interrupted. */
export const runMain = async (main: () => Promise<void>): Promise<never> => {
  const exitCode = await main().then(
    () => 0,
    (error: unknown) => {
      if (!interrupted) process.stderr.write(`benchmark failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
      return interrupted ? 130 : 1
    }
  )
  await stopAll(5000)
  return process.exit(exitCode)
}

/**
 * Prints a benchmark's first line (Node version, cores, load shape; warns when the Node is not
 * 24) and returns the core count for `reportTail`.
 */
export const printHeader = (title: string, per: string): number => {
  const nodeVersion = execFileSync(NODE_BIN, ["--version"], { encoding: "utf8" }).trim()
  if (!nodeVersion.startsWith("v24.")) process.stderr.write(`warning: ${NODE_BIN} is ${nodeVersion}, not Node 24\n`)
  const cpus = os.cpus()
  process.stdout.write(
    `${title}: ${nodeVersion}, ${cpus.length} CPU(s) (${cpus[0]?.model.trim() ?? "unknown"}), ` +
      `${CONNECTIONS} connections, ${WARMUP_SECONDS} s warm-up + ${MEASURE_SECONDS} s measured ${per}\n`
  )
  return cpus.length
}
