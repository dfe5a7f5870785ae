/**
 * The `agentgateway` command as users run it: `node dist/main.js` (built by `npm test`'s
 * pretest step) in a child process.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import { isBuiltin } from "node:module"
import * as os from "node:os"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { MALLOC_ARENAS } from "../../src/shared/MallocArenas.ts"
import { freePort } from "../support/Harness.ts"
import { startUpstream } from "../support/Upstream.ts"

const root = path.resolve(import.meta.dirname, "../..")
const main = path.join(root, "dist/main.js")
const opsEnv = { ...process.env, ADMIN_ADDR: "127.0.0.1:0", STATS_ADDR: "127.0.0.1:0", READINESS_ADDR: "127.0.0.1:0" }

const cli = (args: ReadonlyArray<string>, input?: string) =>
  spawnSync(process.execPath, [main, ...args], { cwd: root, encoding: "utf8", env: opsEnv, timeout: 15_000, ...(input === undefined ? {} : { input }) })

const children: Array<ChildProcess> = []
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill("SIGKILL")
})

/** Starts the gateway and resolves once its startup line is printed. */
const serve = (args: ReadonlyArray<string>, stdin?: string, env: NodeJS.ProcessEnv = opsEnv) =>
  new Promise<{ child: ChildProcess; output: () => string; exited: Promise<number | null> }>((resolve, reject) => {
    const child = spawn(process.execPath, [main, ...args], { cwd: root, env, stdio: ["pipe", "pipe", "pipe"] })
    children.push(child)
    let output = ""
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)))
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      if (output.includes("serving")) resolve({ child, output: () => output, exited })
    }
    child.stdout.on("data", onData)
    child.stderr.on("data", onData)
    void exited.then((code) => reject(new Error(`exited ${code}: ${output}`)))
    if (stdin !== undefined) child.stdin.end(stdin)
  })

describe("agentgateway CLI", () => {
  it("is built", () => {
    expect(fs.existsSync(main), "dist/main.js is missing: run `npm run build` (npm test does)").toBe(true)
  })

  it("is one file: besides Node built-ins it imports only the packages scripts/bundle.ts keeps out", () => {
    const text = fs.readFileSync(main, "utf8")
    // Static and dynamic import specifiers of the bundle; its own modules are inside it.
    const specifiers = new Set([...text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*)"([^"]+)"/g)].map((m) => m[1]!))
    const packages = [...specifiers].filter((s) => !isBuiltin(s)).map((s) => s.split("/").slice(0, s.startsWith("@") ? 2 : 1).join("/"))
    expect([...new Set(packages)].sort()).toEqual(["@grpc/grpc-js", "aws4", "ioredis", "jose", "undici"])
  })

  it("--version prints JSON, -V a line", () => {
    const json = cli(["--version"])
    expect(json.status).toBe(0)
    expect(JSON.parse(json.stdout)).toMatchObject({ name: "effect-agentgateway", version: expect.any(String) })
    const short = cli(["-V"])
    expect(short.stdout).toMatch(/^agentgateway \d+\.\d+\.\d+/)
  })

  it("--validate-only exits 0 for a valid config", () => {
    const res = cli(["--validate-only", "-f", "examples/quickstart.yaml"])
    expect(res.stderr).toBe("")
    expect(res.status).toBe(0)
    expect(res.stdout).toContain("config is valid")
  })

  it("--validate-only exits 1 listing every error with file:line:column and field", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agw-cli-"))
    const file = path.join(dir, "config.yaml")
    fs.writeFileSync(
      file,
      ["binds:", "- port: 3000", "  listeners:", "  - routes:", "    - backends:", "      - hots: 127.0.0.1:8080", "      matches:", "      - path: {prefix: /x}", ""].join("\n")
    )
    const res = cli(["--validate-only", "-f", file])
    expect(res.status).toBe(1)
    expect(res.stderr).toContain("invalid config (")
    expect(res.stderr).toContain(`${file}:6:9 binds[0].listeners[0].routes[0].backends[0]: unknown field "hots"`)
    expect(res.stderr).toContain(`${file}:8:16 binds[0].listeners[0].routes[0].matches[0].path: unknown field "prefix"`)
    expect(res.stderr).not.toMatch(/\n\s+at /) // no stack trace
    fs.rmSync(dir, { recursive: true })
  })

  it("rejects unknown flags and conflicting sources with usage", () => {
    expect(cli(["--nope"]).status).toBe(2)
    const both = cli(["-f", "a.yaml", "-c", "{}"])
    expect(both.status).toBe(2)
    expect(both.stderr).toContain("only one of")
  })

  it("serves an inline -c config, and a config read from stdin with -f -", async () => {
    const p1 = await freePort()
    const inline = await serve(["-c", JSON.stringify({ binds: [{ port: p1, listeners: [{ routes: [{ policies: { directResponse: { status: 200, body: "inline" } } }] }] }] })])
    expect(await (await fetch(`http://127.0.0.1:${p1}/`)).text()).toBe("inline")
    inline.child.kill("SIGTERM")
    expect(await inline.exited).toBe(0)
    const p2 = await freePort()
    const stdin = await serve(["-f", "-"], `binds:\n- port: ${p2}\n  listeners:\n  - routes:\n    - policies: {directResponse: {status: 200, body: stdin}}\n`)
    expect(await (await fetch(`http://127.0.0.1:${p2}/`)).text()).toBe("stdin")
    stdin.child.kill("SIGINT")
    expect(await stdin.exited).toBe(0)
  })

  it.runIf(process.platform === "linux")(
    "serves with glibc's malloc arenas capped (MallocArenas.ts): the same pid and arguments; an operator's MALLOC_ARENA_MAX wins",
    async () => {
      const unset: NodeJS.ProcessEnv = { ...opsEnv }
      delete unset["MALLOC_ARENA_MAX"]
      const proc = (pid: number | undefined, file: string) => fs.readFileSync(`/proc/${pid}/${file}`, "utf8").split("\0").filter((s) => s !== "")
      for (const [env, expected] of [[unset, `${MALLOC_ARENAS}`], [{ ...unset, MALLOC_ARENA_MAX: "5" }, "5"]] as const) {
        const port = await freePort()
        const args = ["-c", `{binds: [{port: ${port}, listeners: [{routes: [{policies: {directResponse: {status: 200, body: capped}}}]}]}]}`]
        const gw = await serve(args, undefined, env)
        // Serving is printed by the process that serves, after the re-execution: the spawned pid, its own arguments.
        expect(proc(gw.child.pid, "environ").filter((v) => v.startsWith("MALLOC_ARENA_MAX="))).toEqual([`MALLOC_ARENA_MAX=${expected}`])
        expect(proc(gw.child.pid, "cmdline")).toEqual([process.execPath, main, ...args])
        expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe("capped")
        gw.child.kill("SIGTERM")
        expect(await gw.exited).toBe(0)
      }
    }
  )

  it("fails to start with a config error and exit code 1, no stack trace", async () => {
    const res = cli(["-c", "binds: [{port: 1, listeners: [{routes: [{policies: {bogus: 1}}]}]}]"])
    expect(res.status).toBe(1)
    expect(res.stderr).toContain('<inline>:1:53 binds[0].listeners[0].routes[0].policies: unknown field "bogus"')
    expect(res.stderr).not.toMatch(/\n\s+at /)
  })

  it("on SIGTERM stops accepting, lets in-flight requests finish, then exits 0", async () => {
    const upstream = await startUpstream()
    try {
      const port = await freePort()
      const gw = await serve(["-c", `{binds: [{port: ${port}, listeners: [{routes: [{backends: [{host: "127.0.0.1:${upstream.port}"}]}]}]}]}`])
      const inflight = fetch(`http://127.0.0.1:${port}/slow?ms=700`)
      await new Promise((r) => setTimeout(r, 150))
      gw.child.kill("SIGTERM")
      await new Promise((r) => setTimeout(r, 150))
      // new connections are refused while draining
      await expect(fetch(`http://127.0.0.1:${port}/`)).rejects.toThrow()
      const res = await inflight
      expect(res.status).toBe(200)
      expect(await res.text()).toBe("slow")
      expect(await gw.exited).toBe(0)
      expect(gw.output()).toContain("draining")
    } finally {
      await upstream.close()
    }
  })

  it("at the termination deadline closes what is still in flight and exits 0", async () => {
    const upstream = await startUpstream()
    try {
      const port = await freePort()
      const gw = await serve([
        "-c",
        `{config: {connectionTerminationDeadline: 300ms}, binds: [{port: ${port}, listeners: [{routes: [{backends: [{host: "127.0.0.1:${upstream.port}"}]}]}]}]}`
      ])
      const inflight = fetch(`http://127.0.0.1:${port}/slow?ms=10000`).then(
        (res) => res.text().then(() => "answered", () => "cut"),
        () => "cut"
      )
      await new Promise((r) => setTimeout(r, 150))
      const start = Date.now()
      gw.child.kill("SIGTERM")
      expect(await gw.exited).toBe(0)
      // The deadline, not the 10 s the upstream would take.
      expect(Date.now() - start).toBeLessThan(3000)
      expect(await inflight).toBe("cut")
    } finally {
      await upstream.close()
    }
  })
})
