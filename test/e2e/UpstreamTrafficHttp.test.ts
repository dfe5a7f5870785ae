/**
 * agentgateway's `examples/traffic-http/config.yaml`, served as written: only the bind port and
 * the backend / mirror hosts are replaced (programmatically, from the example file) by local
 * ones. Each route is checked against what the example's comments say it does. The example uses
 * no `transformations`, so nothing here waits on that policy.
 */
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest"
import * as YAML from "yaml"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { type Reply, send } from "../support/Client.ts"

const example = path.resolve(import.meta.dirname, "../../../shared/reference/agentgateway/examples/traffic-http/config.yaml")

interface Seen {
  readonly url: string
  readonly headers: http.IncomingHttpHeaders
}

interface Server {
  readonly port: number
  readonly received: Array<Seen>
  readonly close: () => Promise<void>
}

/**
 * The example's backend: echoes what it got as JSON; `x-test-status` picks the status and
 * `x-test-delay-ms` delays the answer (both are request headers the route forwards untouched).
 */
const startBackend = (): Promise<Server> => {
  const received: Array<Seen> = []
  const server = http.createServer((req, res) => {
    received.push({ url: req.url ?? "", headers: req.headers })
    req.resume()
    const status = Number(req.headers["x-test-status"] ?? "200")
    const delay = Number(req.headers["x-test-delay-ms"] ?? "0")
    const answer = () => {
      if (res.destroyed) return
      res.writeHead(status, { "content-type": "application/json" })
      res.end(JSON.stringify({ url: req.url, headers: req.headers }))
    }
    if (delay > 0) setTimeout(answer, delay)
    else answer()
  })
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      resolve({
        port: typeof address === "object" && address !== null ? address.port : 0,
        received,
        close: () =>
          new Promise((r) => {
            server.close(() => r())
            server.closeAllConnections()
          })
      })
    })
  })
}


const echoed = (reply: Reply) => JSON.parse(reply.body) as { url: string; headers: Record<string, string | undefined> }

/**
 * The example with its listening port and every `host:` of a backend (routes' backends and the
 * mirror target) replaced; `127.0.0.1:8080` is the backend, `127.0.0.1:8081` the mirror.
 */
const localized = (port: number, hosts: Record<string, string>): string => {
  const doc = YAML.parseDocument(fs.readFileSync(example, "utf8"))
  const replaced: Array<string> = []
  YAML.visit(doc, {
    Pair(_, pair) {
      if (!YAML.isScalar(pair.key) || !YAML.isScalar(pair.value)) return
      if (pair.key.value === "port" && pair.value.value === 3000) pair.value.value = port
      if (pair.key.value === "host" && typeof pair.value.value === "string") {
        const local = hosts[pair.value.value]
        if (local === undefined) throw new Error(`unexpected host ${pair.value.value} in the example`)
        replaced.push(pair.value.value)
        pair.value.value = local
      }
    }
  })
  // The example's shape is what this suite checks: fail loudly if upstream changes it.
  expect(replaced.sort()).toEqual(["127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1:8081"])
  return doc.toString()
}

describe("upstream example traffic-http", () => {
  let backend: Server
  let mirror: Server
  let gw: Running
  let port: number

  beforeAll(async () => {
    backend = await startBackend()
    mirror = await startBackend()
    port = await freePort()
    const yaml = localized(port, { "127.0.0.1:8080": `127.0.0.1:${backend.port}`, "127.0.0.1:8081": `127.0.0.1:${mirror.port}` })
    gw = await startGateway(yaml)
  })
  afterAll(async () => {
    await gw.stop()
    await backend.close()
    await mirror.close()
  })

  // "Test with: curl '127.0.0.1:3000/match?param=hello' -H "x-header: test-0""
  it("match-example: path prefix, GET, query param and header regex select the route; forwarded unchanged", async () => {
    const res = await send(port, "GET", "/match?param=hello", { "x-header": "test-0" })
    expect(res.status).toBe(200)
    const echo = echoed(res)
    expect(echo.url).toBe("/match?param=hello")
    expect(echo.headers["host"]).toBe(`127.0.0.1:${port}`)
    // No policy of the catch-all route ran.
    expect(res.headers["x-ratelimit-limit"]).toBeUndefined()
    expect(echo.headers["x-req-added"]).toBeUndefined()
  })

  it("match-example: a request missing one condition falls through to the catch-all policy-example route", async () => {
    for (const [method, target, headers] of [
      ["GET", "/match?param=hello", { "x-header": "test-x" }],
      ["GET", "/match?param=bye", { "x-header": "test-1" }],
      ["POST", "/match?param=hello", { "x-header": "test-1" }]
    ] as const) {
      const res = await send(port, method, target, headers)
      expect(res.status).toBe(200)
      expect(echoed(res).url).toBe("/new-path?" + target.split("?")[1])
    }
  })

  it("policy-example: url and authority rewritten, request and response headers modified, rate-limit headers", async () => {
    const res = await send(port, "GET", "/anything/here?q=1", { "x-illegal-header": "secret", "x-kept": "1" })
    expect(res.status).toBe(200)
    const echo = echoed(res)
    expect(echo.url).toBe("/new-path?q=1")
    expect(echo.headers["host"]).toBe("custom-host-header")
    expect(echo.headers["x-req-added"]).toBe("value")
    expect(echo.headers["x-illegal-header"]).toBeUndefined()
    expect(echo.headers["x-kept"]).toBe("1")
    expect(res.headers["x-req-added"]).toBe("value")
    expect(res.headers["x-ratelimit-limit"]).toBe("10")
    expect(res.headers["x-ratelimit-remaining"]).toMatch(/^\d$/)
  })

  it("policy-example: CORS preflight answered by the gateway (origin echoed: `*` with credentials)", async () => {
    const before = backend.received.length
    const res = await send(port, "OPTIONS", "/any", { origin: "https://app.example", "access-control-request-method": "GET" })
    expect(res.status).toBe(200)
    expect(res.headers["access-control-allow-origin"]).toBe("https://app.example")
    expect(res.headers["access-control-allow-credentials"]).toBe("true")
    expect(res.headers["access-control-allow-methods"]).toBe("GET")
    expect(res.headers["access-control-allow-headers"]).toBe("header")
    expect(res.headers["access-control-max-age"]).toBe("100")
    expect(backend.received.length).toBe(before)
  })

  it("policy-example: CORS headers on a cross-origin request", async () => {
    const res = await send(port, "GET", "/any", { origin: "https://app.example" })
    expect(res.status).toBe(200)
    expect(res.headers["access-control-allow-origin"]).toBe("https://app.example")
    expect(res.headers["access-control-allow-credentials"]).toBe("true")
    expect(res.headers["access-control-expose-headers"]).toBe("header2")
  })

  it("policy-example: a 429 from the backend is retried twice (attempts: 2, codes: [429])", async () => {
    const before = backend.received.length
    const res = await send(port, "GET", "/retry-me", { "x-test-status": "429" })
    expect(res.status).toBe(429)
    const attempts = backend.received.slice(before)
    expect(attempts.map((a) => a.headers["x-retry-attempt"])).toEqual([undefined, "1", "2"])
  })

  it("policy-example: requestTimeout 1s answers 504 `request timeout` for a slow backend", async () => {
    const res = await send(port, "GET", "/slow", { "x-test-delay-ms": "3000" })
    expect(res.status).toBe(504)
    expect(res.body).toBe("request timeout")
  })

  it("policy-example: percentage .5 mirrors a request whose draw is below one half, rewritten, to the mirror backend", async () => {
    // The gateway runs in this process and Effect's default Random draws from Math.random.
    const random = vi.spyOn(Math, "random")
    try {
      random.mockReturnValue(0.25)
      expect((await send(port, "GET", "/mirrored", { "x-mark": "mirrored" })).status).toBe(200)
      random.mockReturnValue(0.75)
      expect((await send(port, "GET", "/not-mirrored", { "x-mark": "not-mirrored" })).status).toBe(200)
    } finally {
      random.mockRestore()
    }
    const copies = async () => {
      for (let i = 0; i < 100 && !mirror.received.some((c) => c.headers["x-mark"] === "mirrored"); i++) {
        await new Promise((r) => setTimeout(r, 10))
      }
      return mirror.received.filter((c) => c.headers["x-mark"] !== undefined)
    }
    const marked = await copies()
    expect(marked.map((c) => [c.url, c.headers["host"], c.headers["x-mark"], c.headers["x-req-added"]])).toEqual([
      ["/new-path", "custom-host-header", "mirrored", "value"]
    ])
  })

  it("policy-example: localRateLimit (10 tokens, 1 per second) answers 429 once the bucket is empty", async () => {
    const replies = await Promise.all(Array.from({ length: 25 }, () => send(port, "GET", "/burst")))
    const limited = replies.filter((r) => r.status === 429)
    expect(replies.every((r) => r.status === 200 || r.status === 429)).toBe(true)
    expect(limited.length).toBeGreaterThan(0)
    for (const r of limited) {
      expect(r.body).toBe("rate limit exceeded")
      expect(r.headers["x-ratelimit-limit"]).toBe("10")
      expect(r.headers["x-ratelimit-remaining"]).toBe("0")
    }
  })

  it("direct-response: /direct answers 200 `hello!` without a backend", async () => {
    const before = backend.received.length
    const res = await send(port, "GET", "/direct/x")
    expect(res.status).toBe(200)
    expect(res.body).toBe("hello!")
    expect(backend.received.length).toBe(before)
  })

  it("ip-rules: a loopback client is allowed by cidr(\"127.0.0.1/8\").containsIP(source.address)", async () => {
    const res = await send(port, "GET", "/ips")
    expect(res.status).toBe(200)
    expect(res.body).toBe("hello!")
  })

  it("ip-rules: a client from outside 127.0.0.0/8 (IPv6 loopback ::1) gets 403 `authorization failed`", async () => {
    const res = await send(port, "GET", "/ips", {}, { host: "::1" })
    expect(res.status).toBe(403)
    expect(res.body).toBe("authorization failed")
  })
})
