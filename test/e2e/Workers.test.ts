/**
 * `workerThreads` > 1 as users run it: `node dist/main.js` (built by `npm test`'s pretest step)
 * as a primary supervising real worker processes that share the data port. Requests go over
 * fresh connections, which cluster's round-robin hands to the workers in turn.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { setTimeout as sleep } from "node:timers/promises"
import parse from "parse-prometheus-text-format"
import { afterEach, describe, expect, it } from "vitest"
import { send } from "../support/Client.ts"
import { freePort } from "../support/Harness.ts"
import { startUpstream } from "../support/Upstream.ts"

const root = path.resolve(import.meta.dirname, "../..")
const main = path.join(root, "dist/main.js")
/** How long a test waits for the gateway to reach a state (start, reload, restart). */
const WAIT_MS = 15_000

const children: Array<ChildProcess> = []
const dirs: Array<string> = []
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill("SIGKILL")
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true })
})

interface Gateway {
  readonly child: ChildProcess
  readonly file: string
  readonly port: number
  readonly admin: number
  readonly stats: number
  readonly readiness: number
  readonly output: () => string
  readonly exited: Promise<number | null>
}

const config = (port: number, body: string, extra = "") => `
config:
  workerThreads: 2
binds:
- port: ${port}
  listeners:
  - routes:
    - name: hello
      matches: [{path: {pathPrefix: /hello}}]
      policies: {directResponse: {status: 200, body: ${body}}}
    - name: proxied
      backends: [{host: "\${UPSTREAM}"}]
${extra}`

/** Starts the gateway from a config file; resolves once the primary says every worker serves. */
const start = async (body: string, env: Record<string, string> = {}, upstreamPort = 1): Promise<Gateway> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agw-workers-"))
  dirs.push(dir)
  const [port, admin, stats, readiness] = [await freePort(), await freePort(), await freePort(), await freePort()]
  const file = path.join(dir, "config.yaml")
  fs.writeFileSync(file, config(port, body))
  const child = spawn(process.execPath, [main, "-f", file], {
    cwd: root,
    env: {
      ...process.env,
      ADMIN_ADDR: `127.0.0.1:${admin}`,
      STATS_ADDR: `127.0.0.1:${stats}`,
      READINESS_ADDR: `127.0.0.1:${readiness}`,
      UPSTREAM: `127.0.0.1:${upstreamPort}`,
      CONNECTION_TERMINATION_DEADLINE: "5s",
      ...env
    },
    stdio: ["ignore", "pipe", "pipe"]
  })
  children.push(child)
  let output = ""
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)))
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      if (/serving .* with 2 workers/.test(output) || /serving :\d+ \(config/.test(output) && env["WORKER_THREADS"] === "1") resolve()
    }
    child.stdout.on("data", onData)
    child.stderr.on("data", onData)
    void exited.then((code) => reject(new Error(`exited ${code}: ${output}`)))
  })
  return { child, file, port, admin, stats, readiness, output: () => output, exited }
}

interface WorkerInfo {
  readonly id: number
  readonly pid: number | null
  readonly state: string
  readonly version: string | null
  readonly restarts: number
  readonly requests: number | null
}

const workers = async (gw: Gateway): Promise<Array<WorkerInfo>> => {
  const res = await send(gw.admin, "GET", "/workers")
  expect(res.status).toBe(200)
  const body: { readonly workers: Array<WorkerInfo> } = JSON.parse(res.body)
  return body.workers
}

interface ReloadStatus {
  readonly current: { readonly generation: number; readonly version: string } | null
  readonly lastError: { readonly message: string } | null
  readonly successes: number
  readonly failures: number
  readonly workers: ReadonlyArray<{ readonly id: number; readonly version: string | null; readonly lastError: { readonly message: string } | null }>
}

const reloadStatus = async (gw: Gateway): Promise<ReloadStatus> => {
  const body: { readonly reload: ReloadStatus } = JSON.parse((await send(gw.admin, "GET", "/config_dump")).body)
  return body.reload
}

const until = async <A>(what: string, probe: () => Promise<A | undefined>): Promise<A> => {
  const deadline = Date.now() + WAIT_MS
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

const sample = (text: string, name: string, labels: Record<string, string> = {}): number => {
  const family = parse(text).find((f) => f.name === name)
  const matching = (family?.metrics ?? []).filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
  return matching.reduce((n, m) => n + Number(m.value ?? "NaN"), 0)
}

describe("workerThreads: 2", () => {
  it("serves from two worker processes, and /metrics sums what both served", async () => {
    const gw = await start("v1")
    for (let i = 0; i < 6; i++) {
      const res = await send(gw.port, "GET", "/hello")
      expect([res.status, res.body]).toEqual([200, "v1"])
    }
    const list = await workers(gw)
    expect(list.map((w) => [w.id, w.state])).toEqual([[1, "serving"], [2, "serving"]])
    const pids = new Set(list.map((w) => w.pid))
    expect(pids.size).toBe(2)
    expect(pids.has(gw.child.pid ?? -1)).toBe(false)
    // Both workers served some of the requests, and together all of them.
    expect(list.every((w) => (w.requests ?? 0) > 0)).toBe(true)
    expect(list.reduce((n, w) => n + (w.requests ?? 0), 0)).toBe(6)

    const scrape = await send(gw.stats, "GET", "/metrics")
    expect(scrape.status).toBe(200)
    expect(sample(scrape.body, "agentgateway_requests_total", { route: "default/hello", status: "200" })).toBe(6)
    expect(scrape.body).toContain('agentgateway_request_duration_seconds_count{backend="unknown",protocol="http",method="GET",status="200",reason="DirectResponse"')
    expect(scrape.body).toMatch(/agentgateway_request_duration_seconds_count\{[^}]*route="default\/hello"[^}]*\} 6\n/)
    // Process-wide families once, from the primary, not once per worker.
    expect(sample(scrape.body, "agentgateway_build_info")).toBe(1)
    expect(sample(scrape.body, "agentgateway_config_reloads_total", { result: "success" })).toBe(1)
    expect(sample(scrape.body, "agentgateway_workers_serving")).toBe(2)
    expect((await send(gw.readiness, "GET", "/healthz/ready")).body).toBe("ready\n")
    gw.child.kill("SIGTERM")
    expect(await gw.exited).toBe(0)
  })

  it("POST /logging reaches every worker; POST /quitquitquit drains them and exits 0", async () => {
    const gw = await start("v1")
    const accessLines = () => gw.output().split("\n").filter((l) => l.includes("request gateway=")).length
    for (let i = 0; i < 2; i++) await send(gw.port, "GET", "/hello")
    await until("two access-log lines", async () => (accessLines() === 2 ? true : undefined))
    expect(await send(gw.admin, "POST", "/logging?level=warn")).toMatchObject({ status: 200, body: "current log level is warn\n" })
    // Four fresh connections: both workers serve some, and neither logs them.
    const before = (await workers(gw)).map((w) => w.requests ?? 0)
    for (let i = 0; i < 4; i++) expect((await send(gw.port, "GET", "/hello")).body).toBe("v1")
    const after = (await workers(gw)).map((w) => w.requests ?? 0)
    expect(after.every((n, i) => n > (before[i] ?? 0))).toBe(true)
    await sleep(200)
    expect(accessLines()).toBe(2)
    await send(gw.admin, "POST", "/logging?reset")
    for (let i = 0; i < 2; i++) await send(gw.port, "GET", "/hello")
    await until("the access log back on both workers", async () => (accessLines() === 4 ? true : undefined))
    expect(await send(gw.admin, "POST", "/quitquitquit")).toMatchObject({ status: 200, body: "shutdown now\n" })
    expect(await gw.exited).toBe(0)
  })

  it("a reload reaches every worker; a reload the workers cannot apply is reported per worker", async () => {
    const gw = await start("v1")
    const before = await reloadStatus(gw)
    fs.writeFileSync(gw.file, config(gw.port, "v2"))
    const after = await until("the reload", async () => {
      const s = await reloadStatus(gw)
      return s.successes === 2 ? s : undefined
    })
    expect(after.current?.version).not.toBe(before.current?.version)
    expect(after.workers.map((w) => [w.id, w.version, w.lastError])).toEqual([[1, after.current?.version, null], [2, after.current?.version, null]])
    for (let i = 0; i < 4; i++) expect((await send(gw.port, "GET", "/hello")).body).toBe("v2")

    // A new port someone else holds: the primary's validation passes, every worker's listen fails.
    const holder = net.createServer()
    await new Promise<void>((r) => holder.listen(0, () => r()))
    try {
      const address = holder.address()
      const busy = typeof address === "object" && address !== null ? address.port : 0
      fs.writeFileSync(gw.file, config(gw.port, "v3", `- port: ${busy}\n  listeners:\n  - routes:\n    - policies: {directResponse: {status: 200}}\n`))
      const failed = await until("the failed reload", async () => {
        const s = await reloadStatus(gw)
        return s.failures === 1 ? s : undefined
      })
      expect(failed.current?.version).toBe(after.current?.version)
      expect(failed.lastError?.message).toContain("not applied by 2 of 2 workers")
      for (const w of failed.workers) {
        expect(w.version).toBe(after.current?.version)
        expect(w.lastError?.message).toContain("EADDRINUSE")
      }
      expect(failed.lastError?.message).toMatch(/worker 1: [^\n]*EADDRINUSE/)
      expect(failed.lastError?.message).toMatch(/worker 2: [^\n]*EADDRINUSE/)
      for (let i = 0; i < 4; i++) expect((await send(gw.port, "GET", "/hello")).body).toBe("v2")
      const scrape = (await send(gw.stats, "GET", "/metrics")).body
      expect(sample(scrape, "agentgateway_config_reloads_total", { result: "failure" })).toBe(1)
      expect(sample(scrape, "agentgateway_config_synchronized")).toBe(0)
    } finally {
      holder.close()
    }
  })

  it("a worker killed with SIGKILL is forked again and traffic continues", async () => {
    const gw = await start("v1")
    const [first] = await workers(gw)
    expect(first?.pid).toEqual(expect.any(Number))
    process.kill(first?.pid ?? 0, "SIGKILL")
    const restarted = await until("the restart", async () => {
      const w = (await workers(gw)).find((x) => x.id === 1)
      return w !== undefined && w.state === "serving" && w.pid !== first?.pid ? w : undefined
    })
    expect(restarted.restarts).toBe(1)
    expect(gw.output()).toMatch(/worker 1 \(pid \d+\) exited \(SIGKILL\); restarting it in 100ms/)
    for (let i = 0; i < 6; i++) expect((await send(gw.port, "GET", "/hello")).body).toBe("v1")
    const list = await workers(gw)
    expect(list.every((w) => w.state === "serving" && (w.requests ?? 0) > 0)).toBe(true)
    const scrape = (await send(gw.stats, "GET", "/metrics")).body
    expect(sample(scrape, "agentgateway_worker_restarts_total")).toBe(1)
    expect(sample(scrape, "agentgateway_workers_serving")).toBe(2)
  })

  it("SIGTERM drains every worker: in-flight requests on both complete, readiness fails, the primary exits 0", async () => {
    const upstream = await startUpstream()
    try {
      const gw = await start("v1", {}, upstream.port)
      // Two connections, so each worker holds one slow request.
      const inflight = [send(gw.port, "GET", "/slow?ms=800"), send(gw.port, "GET", "/slow?ms=800")]
      await sleep(200)
      const busy = await workers(gw)
      expect(busy.map((w) => w.state)).toEqual(["serving", "serving"])
      gw.child.kill("SIGTERM")
      await sleep(150)
      expect(await send(gw.readiness, "GET", "/healthz/ready")).toMatchObject({ status: 503, body: "not ready\n" })
      for (const res of await Promise.all(inflight)) expect([res.status, res.body]).toEqual([200, "slow"])
      expect(await gw.exited).toBe(0)
      expect(gw.output()).toContain("draining 2 workers")
      for (const w of busy) expect(() => process.kill(w.pid ?? 0, 0)).toThrow()
    } finally {
      await upstream.close()
    }
  })

  it("a worker that cannot start fails the start with exit code 1", async () => {
    const holder = net.createServer()
    await new Promise<void>((r) => holder.listen(0, () => r()))
    try {
      const address = holder.address()
      const busy = typeof address === "object" && address !== null ? address.port : 0
      const child = spawn(process.execPath, [main, "-c", `{config: {workerThreads: 2}, binds: [{port: ${busy}, listeners: [{routes: [{policies: {directResponse: {status: 200}}}]}]}]}`], {
        cwd: root,
        env: { ...process.env, ADMIN_ADDR: "off", STATS_ADDR: "off", READINESS_ADDR: "off" },
        stdio: ["ignore", "pipe", "pipe"]
      })
      children.push(child)
      let stderr = ""
      child.stderr.on("data", (c: Buffer) => (stderr += c.toString()))
      const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)))
      expect(code).toBe(1)
      expect(stderr).toContain("workers failed to start")
      expect(stderr).toMatch(/worker \d+: [^\n]*EADDRINUSE/)
      expect(stderr).not.toMatch(/\n\s+at /)
    } finally {
      holder.close()
    }
  })
})

describe("worker count", () => {
  it("WORKER_THREADS=1 wins over the config: the single-process gateway, no cluster", async () => {
    const gw = await start("single", { WORKER_THREADS: "1" })
    expect((await send(gw.port, "GET", "/hello")).body).toBe("single")
    expect((await send(gw.admin, "GET", "/workers")).status).toBe(404)
    expect(gw.output()).toMatch(/serving :\d+ \(config /)
    expect(gw.output()).not.toMatch(/with \d+ workers/)
    gw.child.kill("SIGTERM")
    expect(await gw.exited).toBe(0)
  })

  it("an invalid WORKER_THREADS or workerThreads is a config error", async () => {
    const run = (args: ReadonlyArray<string>, env: Record<string, string>) =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [main, ...args], { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
        children.push(child)
        let stderr = ""
        child.stderr.on("data", (c: Buffer) => (stderr += c.toString()))
        child.on("exit", (code) => resolve({ code, stderr }))
      })
    const fromEnv = await run(["-c", "{binds: []}"], { WORKER_THREADS: "lots" })
    expect(fromEnv.code).toBe(1)
    expect(fromEnv.stderr).toContain('WORKER_THREADS: must be a positive integer or "auto", got "lots"')
    const fromConfig = await run(["--validate-only", "-c", "{config: {workerThreads: 0}}"], {})
    expect(fromConfig.code).toBe(1)
    expect(fromConfig.stderr).toContain('config.workerThreads: must be a positive integer or "auto", got 0')
  })
})
