/**
 * remoteRateLimit through real sockets: the real gateway from YAML in front of a real upstream,
 * limited by a gRPC rate limit service speaking Envoy's wire format (test/support/
 * RateLimitService.ts), or by a real `redis-server` — including two gateway processes sharing
 * one Redis.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { type Reply, send } from "../support/Client.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { type RateLimitService, startRateLimitService } from "../support/RateLimitService.ts"
import { type RedisServer, startRedis } from "../support/RedisServer.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"

const limits = (r: Reply) => [r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"], r.headers["x-ratelimit-reset"]]

const sendAll = async (port: number, n: number, method = "GET", target = "/") => {
  const out: Array<Reply> = []
  for (let i = 0; i < n; i++) out.push(await send(port, method, target))
  return out
}

describe("remoteRateLimit over gRPC (Envoy RLS)", () => {
  let upstream: Upstream
  let rls: RateLimitService
  let gw: Running
  let port: number
  let deadPort: number

  beforeAll(async () => {
    upstream = await startUpstream()
    rls = await startRateLimitService()
    port = await freePort()
    deadPort = await freePort()
    gw = await startGateway(
      `
backends:
- name: rls
  host: 127.0.0.1:$RLS
binds:
- port: $PORT
  listeners:
  - routes:
    - name: limited
      matches: [{path: {pathPrefix: /limited}}]
      policies:
        remoteRateLimit:
          domain: shop
          backend: rls
          policies:
            requestHeaderModifier: {set: {x-gateway: agw}}
          descriptors:
          - entries:
            - {key: method, value: request.method}
            - {key: user, value: 'request.headers["x-user"]'}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: costly
      matches: [{path: {pathPrefix: /costly}}]
      policies:
        remoteRateLimit:
          domain: shop
          host: 127.0.0.1:$RLS
          descriptors:
          - entries: [{key: route, value: '"costly"'}]
            cost: 'int(request.headers["x-cost"])'
            limitOverride: '{"unit": "hour", "requestsPerUnit": 7}'
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: closed
      matches: [{path: {pathPrefix: /down-closed}}]
      policies:
        remoteRateLimit:
          domain: shop
          host: 127.0.0.1:$DEAD
          descriptors: [{entries: [{key: k, value: '"v"'}]}]
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: open
      matches: [{path: {pathPrefix: /down-open}}]
      policies:
        remoteRateLimit:
          domain: shop
          host: 127.0.0.1:$DEAD
          failureMode: failOpen
          descriptors: [{entries: [{key: k, value: '"v"'}]}]
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: conditional
      matches: [{path: {pathPrefix: /cond}}]
      policies:
        remoteRateLimit:
          conditional:
          - condition: 'request.headers["x-tier"] == "free"'
            domain: free
            host: 127.0.0.1:$RLS
            descriptors: [{entries: [{key: tier, value: '"free"'}]}]
      backends: [{host: 127.0.0.1:$UPSTREAM}]
`,
      { vars: { PORT: port, UPSTREAM: upstream.port, RLS: rls.port, DEAD: deadPort } }
    )
  })

  afterAll(async () => {
    await gw?.stop()
    await rls?.close()
    await upstream?.close()
  })

  afterEach(() => {
    rls.requests.length = 0
    rls.setRules([])
    rls.setAnswer({})
    rls.failWith(undefined)
  })

  it("sends domain, CEL-evaluated entries and hits_addend; 429 with x-ratelimit-* once over", async () => {
    rls.setRules([{ match: [{ key: "method", value: "GET" }, { key: "user" }], requestsPerUnit: 2, unit: "minute" }])
    const replies: Array<Reply> = []
    for (let i = 0; i < 3; i++) replies.push(await send(port, "GET", "/limited", { "x-user": "alice" }))
    expect(replies.map((r) => r.status)).toEqual([200, 200, 429])
    expect(replies[2]!.body).toBe("rate limit exceeded")
    expect(limits(replies[0]!).slice(0, 2)).toEqual(["2", "1"])
    expect(limits(replies[1]!).slice(0, 2)).toEqual(["2", "0"])
    expect(limits(replies[2]!).slice(0, 2)).toEqual(["2", "0"])
    const reset = Number(replies[2]!.headers["x-ratelimit-reset"])
    expect(reset).toBeGreaterThan(0)
    expect(reset).toBeLessThanOrEqual(60)
    expect(rls.requests[0]).toEqual({
      domain: "shop",
      hitsAddend: 1,
      descriptors: [{ entries: [{ key: "method", value: "GET" }, { key: "user", value: "alice" }], hitsAddend: 1, limit: undefined }],
      metadata: expect.objectContaining({ "x-gateway": "agw" })
    })
    // Another user has its own counter at the service.
    expect((await send(port, "GET", "/limited", { "x-user": "bob" })).status).toBe(200)
    expect(upstream.received.filter((r) => r.url === "/limited")).toHaveLength(3)
  })

  it("a descriptor whose entry cannot be evaluated is dropped: no call, request passes", async () => {
    const reply = await send(port, "GET", "/limited")
    expect(reply.status).toBe(200)
    expect(rls.requests).toHaveLength(0)
    expect(reply.headers["x-ratelimit-limit"]).toBeUndefined()
  })

  it("cost CEL becomes hits_addend and limitOverride the descriptor's limit", async () => {
    rls.setRules([{ match: [{ key: "route", value: "costly" }], requestsPerUnit: 5, unit: "hour" }])
    const first = await send(port, "GET", "/costly", { "x-cost": "3" })
    const second = await send(port, "GET", "/costly", { "x-cost": "3" })
    expect([first.status, second.status]).toEqual([200, 429])
    expect(limits(first).slice(0, 2)).toEqual(["5", "2"])
    expect(rls.requests[0]).toMatchObject({
      hitsAddend: 3,
      descriptors: [{ entries: [{ key: "route", value: "costly" }], hitsAddend: 3, limit: { requestsPerUnit: 7, unit: 3 } }]
    })
  })

  it("headers from the service reach the request and the response (the 429 too)", async () => {
    rls.setRules([{ match: [{ key: "user", value: "carol" }], requestsPerUnit: 1, unit: "minute" }])
    rls.setAnswer({ responseHeaders: [["x-quota", "q1"]], requestHeaders: [["x-rl-tier", "gold"]] })
    const ok = await send(port, "GET", "/limited", { "x-user": "carol" })
    expect(ok.status).toBe(200)
    expect(ok.headers["x-quota"]).toBe("q1")
    expect((JSON.parse(ok.body) as { headers: Record<string, string> }).headers["x-rl-tier"]).toBe("gold")
    const over = await send(port, "GET", "/limited", { "x-user": "carol" })
    expect([over.status, over.headers["x-quota"]]).toEqual([429, "q1"])
  })

  it("service errors: failClosed answers 500 `rate limit failed`, failOpen passes", async () => {
    const closed = await send(port, "GET", "/down-closed")
    expect([closed.status, closed.body]).toEqual([500, "rate limit failed"])
    const open = await send(port, "GET", "/down-open")
    expect(open.status).toBe(200)
    rls.failWith(14)
    const failing = await send(port, "GET", "/limited", { "x-user": "dave" })
    expect([failing.status, failing.body]).toEqual([500, "rate limit failed"])
    expect(rls.requests).toHaveLength(1)
  })

  it("conditional: only requests matching a condition are limited", async () => {
    rls.setRules([{ match: [{ key: "tier", value: "free" }], requestsPerUnit: 1, unit: "minute" }])
    expect((await send(port, "GET", "/cond", { "x-tier": "free" })).status).toBe(200)
    expect((await send(port, "GET", "/cond", { "x-tier": "free" })).status).toBe(429)
    expect((await send(port, "GET", "/cond", { "x-tier": "paid" })).status).toBe(200)
    expect(rls.requests.map((r) => r.domain)).toEqual(["free", "free"])
  })
})

describe("upstream example traffic-ratelimiting-global", () => {
  const dir = path.resolve(import.meta.dirname, "../../../shared/reference/agentgateway/examples/traffic-ratelimiting-global")
  let upstream: Upstream
  let rls: RateLimitService
  let gw: Running
  let port: number

  beforeAll(async () => {
    upstream = await startUpstream()
    // ratelimit-config.yaml of the example: GET / 5 per minute, POST 10 per minute.
    rls = await startRateLimitService([
      { match: [{ key: "method", value: "GET" }, { key: "path", value: "/" }], requestsPerUnit: 5, unit: "minute" },
      { match: [{ key: "method", value: "POST" }], requestsPerUnit: 10, unit: "minute" }
    ])
    port = await freePort()
    const otlp = await freePort()
    const yaml = fs.readFileSync(path.join(dir, "config.yaml"), "utf8")
      .replace("http://localhost:4317", `http://127.0.0.1:${otlp}`)
      .replace("port: 3000", `port: ${port}`)
      .replace("127.0.0.1:8081", `127.0.0.1:${rls.port}`)
      .replace("localhost:8080", `127.0.0.1:${upstream.port}`)
    gw = await startGateway(yaml)
  })

  afterAll(async () => {
    await gw?.stop()
    await rls?.close()
    await upstream?.close()
  })

  it("GET / is limited to 5 per minute and POST to 10, per the service's config", async () => {
    const gets = await sendAll(port, 6, "GET", "/")
    expect(gets.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 429])
    expect(limits(gets[4]!).slice(0, 2)).toEqual(["5", "0"])
    const posts = await sendAll(port, 11, "POST", "/orders")
    expect(posts.map((r) => r.status)).toEqual([...Array<number>(10).fill(200), 429])
    // Other GET paths have no limit at the service.
    expect((await send(port, "GET", "/other")).status).toBe(200)
    expect(rls.requests[0]).toMatchObject({ domain: "agentgateway", descriptors: [{ entries: [{ key: "method", value: "GET" }, { key: "path", value: "/" }] }] })
  })

  it("failOpen: with the service down, requests pass", async () => {
    await rls.close()
    const replies = await sendAll(port, 2, "GET", "/")
    expect(replies.map((r) => r.status)).toEqual([200, 200])
  })
})

const redisConfig = (url: string, failureMode: string, extra = "") => `
binds:
- port: $PORT
  listeners:
  - routes:
    - name: r
      matches: [{path: {pathPrefix: /r}}]
      policies:
        remoteRateLimit:
          redis: {url: "${url}", commandTimeout: 500ms}
          domain: e2e
          failureMode: ${failureMode}
          descriptors:
          - entries: [{key: user, value: 'request.headers["x-user"]'}]
            limit: {maxTokens: 3, tokensPerFill: 3, fillInterval: 1h}
          ${extra}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
`

describe("remoteRateLimit on Redis", () => {
  let upstream: Upstream
  let redis: RedisServer
  let closed: Running
  let open: Running
  let closedPort: number
  let openPort: number

  beforeAll(async () => {
    upstream = await startUpstream()
    redis = await startRedis()
    closedPort = await freePort()
    openPort = await freePort()
    closed = await startGateway(redisConfig(redis.url, "failClosed"), { vars: { PORT: closedPort, UPSTREAM: upstream.port } })
    open = await startGateway(
      redisConfig(redis.url, "failOpen", `- entries: [{key: tier, value: '"all"'}]
            limitOverride: '{"unit": "hour", "requestsPerUnit": 100}'`),
      { vars: { PORT: openPort, UPSTREAM: upstream.port } }
    )
  })

  afterAll(async () => {
    await closed?.stop()
    await open?.stop()
    await redis?.stop()
    await upstream?.close()
  })

  it("a bucket per descriptor value: 3 pass, then 429 with the bucket's headers", async () => {
    const replies: Array<Reply> = []
    for (let i = 0; i < 4; i++) replies.push(await send(closedPort, "GET", "/r", { "x-user": "u1" }))
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 429])
    expect(replies[3]!.body).toBe("rate limit exceeded")
    expect(replies.map((r) => limits(r).slice(0, 2))).toEqual([["3", "2"], ["3", "1"], ["3", "0"], ["3", "0"]])
    const reset = Number(replies[3]!.headers["x-ratelimit-reset"])
    expect(reset).toBeGreaterThan(3500)
    expect(reset).toBeLessThanOrEqual(3600)
    expect((await send(closedPort, "GET", "/r", { "x-user": "u2" })).status).toBe(200)
    const keys = await redis.command(["KEYS", "agentgateway:ratelimit:e2e|*"])
    expect(keys).toContain('agentgateway:ratelimit:e2e|[["user","u1"]]')
    // The bucket expires once it would be full again (within the hour).
    const ttl = Number((await redis.command(["PTTL", 'agentgateway:ratelimit:e2e|[["user","u1"]]'])).slice(1))
    expect(ttl).toBeGreaterThan(3_500_000)
    expect(ttl).toBeLessThanOrEqual(3_600_000)
  })

  it("the most constrained of several buckets is reported; a rejection takes from none", async () => {
    // `open` has the user bucket (3/h) and a shared tier bucket (100/h, from limitOverride).
    const a = await send(openPort, "GET", "/r", { "x-user": "multi" })
    expect(limits(a).slice(0, 2)).toEqual(["3", "2"])
    for (let i = 0; i < 3; i++) await send(openPort, "GET", "/r", { "x-user": "multi" })
    const tier = await redis.command(["HGET", 'agentgateway:ratelimit:e2e|[["tier","all"]]', "a"])
    // 4 attempts, 3 allowed: the tier bucket lost exactly 3.
    expect(tier).toContain("97")
  })

  it("EVALSHA falls back to EVAL after SCRIPT FLUSH", async () => {
    expect(await redis.command(["SCRIPT", "FLUSH"])).toBe("+OK\r\n")
    const reply = await send(closedPort, "GET", "/r", { "x-user": "after-flush" })
    expect([reply.status, ...limits(reply).slice(0, 2)]).toEqual([200, "3", "2"])
  })

  it("Redis down: failClosed answers 500, failOpen passes; back up: limits apply again", async () => {
    await redis.stop()
    const down = await send(closedPort, "GET", "/r", { "x-user": "u3" })
    expect([down.status, down.body]).toEqual([500, "rate limit failed"])
    expect((await send(openPort, "GET", "/r", { "x-user": "u3" })).status).toBe(200)
    await redis.restart()
    let status = 0
    for (let i = 0; i < 100 && status !== 200; i++) {
      status = (await send(closedPort, "GET", "/r", { "x-user": "u4" })).status
      if (status !== 200) await new Promise((r) => setTimeout(r, 50))
    }
    expect(status).toBe(200)
    for (let i = 0; i < 2; i++) expect((await send(closedPort, "GET", "/r", { "x-user": "u4" })).status).toBe(200)
    expect((await send(closedPort, "GET", "/r", { "x-user": "u4" })).status).toBe(429)
  })
})

/** Two Node processes load the whole gateway on a shared 2-core machine: allow for it. */
const REPLICA_TEST_TIMEOUT_MS = 60_000

describe("two gateway processes sharing one Redis", () => {
  const root = path.resolve(import.meta.dirname, "../..")
  // The built command, as users run it (`npm test` builds dist/ first); AGW_MAIN may point elsewhere.
  const main = process.env["AGW_MAIN"] ?? path.join(root, "dist/main.js")
  const children: Array<ChildProcess> = []
  let upstream: Upstream
  let redis: RedisServer

  /** `node dist/main.js -c <yaml>` in its own process; resolves once it serves. */
  const replica = (yaml: string) =>
    new Promise<ChildProcess>((resolve, reject) => {
      const env = { ...process.env, ADMIN_ADDR: "127.0.0.1:0", STATS_ADDR: "127.0.0.1:0", READINESS_ADDR: "127.0.0.1:0" }
      const child = spawn(process.execPath, [main, "-c", yaml], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] })
      children.push(child)
      let output = ""
      const onData = (chunk: Buffer) => {
        output += chunk.toString()
        if (output.includes("serving")) resolve(child)
      }
      child.stdout.on("data", onData)
      child.stderr.on("data", onData)
      child.on("exit", (code) => reject(new Error(`replica exited ${code}: ${output}`)))
    })

  beforeAll(async () => {
    upstream = await startUpstream()
    redis = await startRedis()
  })

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL")
    await redis?.stop()
    await upstream?.close()
  })

  it("requests split across both replicas draw from one bucket", async () => {
    const ports = [await freePort(), await freePort()]
    const yaml = (port: number) => redisConfig(redis.url, "failClosed").replace("$PORT", String(port)).replace("$UPSTREAM", String(upstream.port))
    await Promise.all(ports.map((p) => replica(yaml(p))))
    const statuses: Array<number> = []
    const remaining: Array<string | string[] | undefined> = []
    for (let i = 0; i < 6; i++) {
      const reply = await send(ports[i % 2]!, "GET", "/r", { "x-user": "shared" })
      statuses.push(reply.status)
      remaining.push(reply.headers["x-ratelimit-remaining"])
    }
    // Each replica alone would allow 3; together they allow 3 in total.
    expect(statuses).toEqual([200, 200, 200, 429, 429, 429])
    expect(remaining).toEqual(["2", "1", "0", "0", "0", "0"])
  }, REPLICA_TEST_TIMEOUT_MS)
})
