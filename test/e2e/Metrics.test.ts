/**
 * `/metrics` after known traffic, parsed with a real Prometheus text parser and asserted
 * exactly: request counts, durations, response bytes, retries, downstream connections,
 * upstream connect times, build info, config loads, custom CEL labels and `metrics.remove`.
 * One gateway per file: the metric registry is the process's.
 */
import { Effect } from "effect"
import * as http from "node:http"
import parse, { type Family, type Sample } from "parse-prometheus-text-format"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { VERSION } from "../../src/Version.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"

let gw: Running
let port: number
let upstream: http.Server
let upstreamPort: number
let flaky = 0

const HELLO = "hello from upstream"

/** One request on its own connection (no keep-alive), so connections are counted exactly. */
const request = (path: string, headers: Record<string, string> = {}, method = "GET"): Promise<{ status: number; body: string }> =>
  new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path, method, headers, agent: false }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }))
    })
    req.on("error", reject)
    req.end()
  })

const scrapeText = async (): Promise<string> => {
  const res = await fetch(`http://127.0.0.1:${gw.ports.stats}/metrics`)
  expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8")
  return res.text()
}

const scrape = async (): Promise<Array<Family>> => parse(await scrapeText())

/**
 * The parser keeps only unlabelled histograms (it merges every labelled series into one): read
 * each histogram's `_bucket`/`_count`/`_sum` lines as their own families, labels intact.
 */
const scrapeHistogramSeries = async (): Promise<Array<Family>> => {
  const text = await scrapeText()
  // Parsed as is first: the exposition itself must be valid with its histogram types.
  expect(parse(text).filter((f) => f.type === "HISTOGRAM").map((f) => f.name)).toContain("agentgateway_request_duration_seconds")
  return parse(text.replace(/^# TYPE (\S+) histogram$/gm, "# TYPE $1 untyped"))
}

/** `[le, cumulative count]` of one labelled histogram series, in exposition order. */
const buckets = (families: Array<Family>, name: string, labels: Record<string, string>): Array<readonly [string, string]> =>
  matching(family(families, `${name}_bucket`), labels).map((m) => [m.labels!["le"]!, m.value!] as const)

/** The family `name`; one that appears in several runs (the untyped histogram lines) is merged. */
const family = (families: Array<Family>, name: string): Family => {
  const found = families.filter((f) => f.name === name)
  if (found.length === 0) throw new Error(`no metric family ${name}`)
  return { ...found[0]!, metrics: found.flatMap((f) => f.metrics) }
}

const matching = (f: Family, labels: Record<string, string>): Array<Sample> =>
  f.metrics.filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))

const one = (f: Family, labels: Record<string, string>): Sample => {
  const found = matching(f, labels)
  expect(found, `${f.name} ${JSON.stringify(labels)}`).toHaveLength(1)
  return found[0]!
}

beforeAll(async () => {
  upstream = http.createServer((req, res) => {
    req.resume()
    if (req.url === "/flaky") {
      // Every other call fails: the first attempt gets 503, its retry 200.
      const fail = flaky++ % 2 === 0
      res.writeHead(fail ? 503 : 200, { "content-type": "text/plain" })
      res.end(fail ? "down" : "up")
      return
    }
    res.writeHead(200, { "content-type": "text/plain" })
    res.end(HELLO)
  })
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve))
  const address = upstream.address()
  upstreamPort = typeof address === "object" && address !== null ? address.port : 0
  port = await freePort()
  gw = await startGateway(
    `
config:
  metrics:
    remove: [config_synchronized]
    fields:
      add:
        tenant: 'request.headers["x-tenant"]'
        auth: 'request.headers["authorization"]'
binds:
- port: $PORT
  listeners:
  - name: metrics-test
    routes:
    - name: direct
      matches: [{path: {pathPrefix: /direct}}]
      policies:
        directResponse: {status: 201, body: "created!"}
    - name: flaky
      matches: [{path: {exact: /flaky}}]
      policies:
        retry: {attempts: 1, codes: [503]}
      backends:
      - host: 127.0.0.1:$UPSTREAM
    - name: proxied
      ruleName: main
      backends:
      - host: 127.0.0.1:$UPSTREAM
`,
    { vars: { PORT: port, UPSTREAM: upstreamPort } }
  )
  // Known traffic: 3 proxied GETs (two tenants), 2 direct responses, 1 proxied POST; the retried request comes last (below).
  expect((await request("/p", { "x-tenant": "acme", authorization: "Bearer secret-token-1" })).body).toBe(HELLO)
  expect((await request("/p", { "x-tenant": "acme" })).body).toBe(HELLO)
  expect((await request("/p", { "x-tenant": "globex" })).body).toBe(HELLO)
  expect((await request("/direct")).status).toBe(201)
  expect((await request("/direct")).status).toBe(201)
  expect((await request("/p", {}, "POST")).status).toBe(200)
  await Effect.runPromise(gw.gateway.reload)
})

afterAll(async () => {
  await gw.stop()
  await new Promise<void>((resolve) => upstream.close(() => resolve()))
})

describe("request metrics", () => {
  it("counts requests per label set, custom CEL labels included", async () => {
    const families = await scrape()
    const requests = family(families, "agentgateway_requests_total")
    expect(requests.type).toBe("COUNTER")
    const base = { bind: `bind/${port}`, gateway: `bind/${port}`, listener: "metrics-test" }
    const acme = one(requests, { ...base, route: "default/proxied", route_rule: "main", method: "GET", tenant: "acme", auth: "unknown" })
    expect(acme.value).toBe("1")
    expect(acme.labels).toEqual({
      ...base,
      backend: `/default/default/bind/${port}/metrics-test/default/proxied/backend0`,
      protocol: "http",
      method: "GET",
      status: "200",
      reason: "Upstream",
      route: "default/proxied",
      route_rule: "main",
      tenant: "acme",
      auth: "unknown"
    })
    expect(one(requests, { route: "default/proxied", method: "GET", tenant: "globex" }).value).toBe("1")
    expect(one(requests, { route: "default/proxied", method: "POST", tenant: "unknown" }).value).toBe("1")
    const direct = one(requests, { route: "default/direct" })
    expect(direct.value).toBe("2")
    expect(direct.labels).toMatchObject({ status: "201", reason: "DirectResponse", backend: "unknown", route_rule: "unknown" })
  })

  it("never puts a credential in a label: sensitive headers read as <redacted>", async () => {
    const requests = family(await scrape(), "agentgateway_requests_total")
    const withAuth = matching(requests, { tenant: "acme", auth: "<redacted>" })
    expect(withAuth).toHaveLength(1)
    expect(withAuth[0]!.value).toBe("1")
    expect(JSON.stringify(requests)).not.toContain("secret-token-1")
  })

  it("records one duration observation per request in upstream's buckets", async () => {
    const families = await scrapeHistogramSeries()
    const name = "agentgateway_request_duration_seconds"
    expect(one(family(families, `${name}_count`), { route: "default/proxied", tenant: "acme", auth: "unknown" }).value).toBe("1")
    const acme = buckets(families, name, { route: "default/proxied", tenant: "acme", auth: "unknown" })
    expect(acme.map(([le]) => le)).toEqual(["0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "80", "+Inf"])
    expect(acme.at(-1)).toEqual(["+Inf", "1"])
    expect(one(family(families, `${name}_count`), { route: "default/direct" }).value).toBe("2")
  })

  it("counts response body bytes", async () => {
    const bytes = family(await scrape(), "agentgateway_response_bytes_total")
    expect(one(bytes, { route: "default/proxied", tenant: "globex" }).value).toBe(String(HELLO.length))
    expect(one(bytes, { route: "default/direct" }).value).toBe(String("created!".length * 2))
  })
})

describe("connection metrics", () => {
  it("counts every downstream connection of the bind", async () => {
    const connections = family(await scrape(), "agentgateway_downstream_connections_total")
    expect(one(connections, { bind: `bind/${port}` }).labels).toEqual({ bind: `bind/${port}`, gateway: `bind/${port}`, listener: "metrics-test", protocol: "http" })
    expect(one(connections, { bind: `bind/${port}` }).value).toBe("6")
  })

  it("times each new upstream connection (pooled requests open none)", async () => {
    const families = await scrapeHistogramSeries()
    // Sequential requests on one kept-alive pool connection.
    expect(one(family(families, "agentgateway_upstream_connect_duration_seconds_count"), { transport: "tcp" }).value).toBe("1")
    expect(buckets(families, "agentgateway_upstream_connect_duration_seconds", { transport: "tcp" }).map(([le]) => le)).toEqual([
      "0.0005",
      "0.0015",
      "0.0043",
      "0.0126",
      "0.0368",
      "0.108",
      "0.316",
      "0.924",
      "2.71",
      "8",
      "+Inf"
    ])
  })
})

describe("process metrics", () => {
  it("exports build info, config loads and the last load time", async () => {
    const before = Date.now() / 1000
    const families = await scrape()
    expect(one(family(families, "agentgateway_build_info"), {}).labels).toEqual({ tag: VERSION })
    const reloads = family(families, "agentgateway_config_reloads_total")
    expect(one(reloads, { result: "success" }).value).toBe("2")
    expect(matching(reloads, { result: "failure" })).toHaveLength(0)
    const last = Number(one(family(families, "agentgateway_config_last_reload_success_timestamp_seconds"), {}).value)
    expect(last).toBeLessThanOrEqual(before)
    expect(last).toBeGreaterThan(before - 60)
  })

  it("leaves out the families config.metrics.remove names", async () => {
    const text = await (await fetch(`http://127.0.0.1:${gw.ports.stats}/metrics`)).text()
    expect(text).not.toContain("agentgateway_config_synchronized")
    expect(text).toContain("# TYPE agentgateway_requests_total counter")
  })
})

describe("retries", () => {
  // Last: the retried 503's body is discarded, which may cost its pooled connection.
  it("counts retries, labelled with the final response", async () => {
    expect(await request("/flaky")).toEqual({ status: 200, body: "up" })
    const families = await scrape()
    const retries = family(families, "agentgateway_retries_total")
    expect(retries.metrics).toHaveLength(1)
    expect(one(retries, { route: "default/flaky", status: "200", reason: "Upstream" }).value).toBe("1")
    expect(one(family(families, "agentgateway_requests_total"), { route: "default/flaky" }).value).toBe("1")
    expect(one(family(families, "agentgateway_response_bytes_total"), { route: "default/flaky" }).value).toBe(String("up".length))
  })
})
