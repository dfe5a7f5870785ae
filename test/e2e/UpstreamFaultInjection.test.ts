/**
 * agentgateway's `examples/fault-injection/config.yaml`, unchanged except that its port and
 * backend addresses point at this test's gateway port and real upstream. `random()` is pinned
 * with a spy on `Math.random` (the gateway runs in this process), so each branch is forced.
 */
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest"
import * as YAML from "yaml"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"

const example = path.resolve(import.meta.dirname, "../../../shared/reference/agentgateway/examples/fault-injection/config.yaml")

interface Reply {
  readonly status: number
  readonly body: string
}

const get = (port: number, target: string, headers: Record<string, string> = {}): Promise<Reply> =>
  new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: target, headers, agent: false }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (c: string) => (body += c))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on("error", reject)
    req.end()
  })

/** Points every bind and backend of the example at this test's ports; nothing else changes. */
const retarget = (text: string, port: number, upstreamPort: number): string => {
  const doc: { binds: Array<{ port: number; listeners: Array<{ routes: Array<{ backends: Array<{ host: string }> }> }> }> } = YAML.parse(text)
  for (const bind of doc.binds) {
    bind.port = port
    for (const listener of bind.listeners) for (const route of listener.routes) for (const b of route.backends) b.host = `127.0.0.1:${upstreamPort}`
  }
  return YAML.stringify(doc)
}

describe("upstream example: fault-injection", () => {
  let upstream: Upstream
  let gw: Running
  let port: number

  beforeAll(async () => {
    upstream = await startUpstream()
    port = await freePort()
    const text = fs.readFileSync(example, "utf8")
    // The example's policies reach the gateway as written.
    expect(text).toContain('duration: "random() < 0.1 ? 2000 : 0"')
    gw = await startGateway(retarget(text, port, upstream.port))
  })

  afterAll(async () => {
    await gw.stop()
    await upstream.close()
  })

  afterEach(() => {
    vi.restoreAllMocks()
  })

  it("abort-probability: random() < 0.1 answers 503 injected fault without reaching the backend", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.05)
    const before = upstream.received.length
    const reply = await get(port, "/abort")
    expect(reply).toEqual({ status: 503, body: "injected fault" })
    expect(upstream.received.length).toBe(before)
  })

  it("abort-probability: otherwise (no fallback) the request is proxied", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.5)
    const reply = await get(port, "/abort/x")
    expect(reply.status).toBe(200)
    expect(JSON.parse(reply.body).url).toBe("/abort/x")
  })

  it("delay-probability: both branches are proxied (a delayed one after its 2 s)", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.5)
    const fast = await get(port, "/random")
    expect(fast.status).toBe(200)
    expect(JSON.parse(fast.body).url).toBe("/random")
    vi.spyOn(Math, "random").mockReturnValue(0.05)
    const started = Date.now()
    const delayed = await get(port, "/random/slow-branch")
    expect(delayed.status).toBe(200)
    expect(JSON.parse(delayed.body).url).toBe("/random/slow-branch")
    // Generous lower bound only: the 2000 ms branch was taken.
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900)
  }, 15_000)

  it("delay-header: x-chaos: 1 opts in, and a request without the header is proxied undelayed", async () => {
    const opted = await get(port, "/header", { "x-chaos": "1" })
    expect(opted.status).toBe(200)
    expect(JSON.parse(opted.body).headers["x-chaos"]).toBe("1")
    const plain = await get(port, "/header")
    expect(plain.status).toBe(200)
    expect(JSON.parse(plain.body).url).toBe("/header")
  })
})
