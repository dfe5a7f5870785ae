/**
 * Admin, readiness, metrics and the access log, against a running gateway.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"

let gw: Running
let port: number

beforeAll(async () => {
  port = await freePort()
  gw = await startGateway(
    `
config:
  session:
    key: "0000000000000000000000000000000000000000000000000000000000000000"
binds:
- port: $PORT
  listeners:
  - name: ops-test
    routes:
    - name: hello
      ruleName: rule-a
      policies:
        directResponse: {status: 200, body: "hello"}
`,
    { vars: { PORT: port } }
  )
})
afterAll(() => gw.stop())

describe("readiness", () => {
  it("answers 200 ready once the config is serving; other paths 404", async () => {
    const res = await fetch(`http://127.0.0.1:${gw.ports.readiness}/healthz/ready`)
    expect(res.status).toBe(200)
    expect(await res.text()).toBe("ready\n")
    expect((await fetch(`http://127.0.0.1:${gw.ports.readiness}/other`)).status).toBe(404)
  })
})

describe("admin", () => {
  it("dumps the current snapshot as JSON", async () => {
    const res = await fetch(`http://127.0.0.1:${gw.ports.admin}/config_dump`)
    expect(res.status).toBe(200)
    expect(res.headers.get("content-type")).toBe("application/json")
    const dump = (await res.json()) as { binds: Array<{ port: number; listeners: Array<{ name: string; routes: Array<{ name: string }> }> }> }
    expect(dump.binds[0]!.port).toBe(port)
    expect(dump.binds[0]!.listeners[0]!.name).toBe("ops-test")
    expect(dump.binds[0]!.listeners[0]!.routes[0]!.name).toBe("hello")
  })

  it("redacts secrets", async () => {
    const { redact } = await import("../../src/admin/Ops.ts")
    expect(redact({ backendAuth: { key: "sk-123" }, nested: [{ clientSecret: "s", name: "n" }], apiKey: { mode: "strict", keys: [{ key: "k" }] } })).toEqual({
      backendAuth: { key: "<redacted>" },
      nested: [{ clientSecret: "<redacted>", name: "n" }],
      apiKey: { mode: "strict", keys: "<redacted>" }
    })
    const text = await (await fetch(`http://127.0.0.1:${gw.ports.admin}/config_dump`)).text()
    expect(text).not.toContain("0000000000000000000000000000000000000000000000000000000000000000")
  })
})

describe("metrics", () => {
  it("counts requests with agentgateway's labels and records their duration", async () => {
    await fetch(gw.url(port, "/x"))
    await fetch(gw.url(port, "/x"))
    const text = await (await fetch(`http://127.0.0.1:${gw.ports.stats}/metrics`)).text()
    const line = text.split("\n").find((l) => l.startsWith("agentgateway_requests_total{") && l.includes('route="default/hello"'))
    expect(line).toBeDefined()
    for (const label of ['protocol="http"', 'method="GET"', 'status="200"', 'reason="DirectResponse"', `bind="bind/${port}"`, `gateway="bind/${port}"`, 'listener="ops-test"', 'route_rule="rule-a"', 'backend="unknown"']) {
      expect(line).toContain(label)
    }
    expect(Number(line!.split(" ").at(-1))).toBeGreaterThanOrEqual(2)
    expect(text).toMatch(/agentgateway_request_duration_seconds_bucket\{[^}]*route="default\/hello"[^}]*le="\+Inf"\} \d+/)
    expect(text).toContain("agentgateway_build_info")
  })
})

describe("access log", () => {
  it("writes one line per request with the reference fields", async () => {
    const before = gw.logs.length
    await fetch(gw.url(port, "/logged?q=1"), { method: "POST", body: "x" })
    await new Promise((r) => setTimeout(r, 50))
    // Earlier tests' lines may still arrive in this batch: count this request's.
    const lines = gw.logs.slice(before).filter((l) => l.includes("http.path=/logged"))
    expect(lines).toHaveLength(1)
    const line = lines[0]!
    expect(line).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z\tinfo\trequest /)
    for (const field of [`gateway=bind/${port}`, "listener=ops-test", "route_rule=rule-a", "route=default/hello", "http.method=POST", "http.host=127.0.0.1", "http.path=/logged", "http.version=HTTP/1.1", "http.status=200", "protocol=http"]) {
      expect(line).toContain(field)
    }
    expect(line).toMatch(/src\.addr=\S+:\d+/)
    expect(line).toMatch(/duration=\d+ms$/)
  })
})

describe("json access log", () => {
  it("writes one JSON object per request when config.logging.format is json", async () => {
    const p = await freePort()
    const json = await startGateway(
      `
config:
  logging: {format: json}
frontendPolicies:
  accessLog:
    remove: [src.addr]
binds:
- port: $PORT
  listeners:
  - routes:
    - policies: {directResponse: {status: 404}}
`,
      { vars: { PORT: p } }
    )
    try {
      await fetch(json.url(p, "/j"))
      await new Promise((r) => setTimeout(r, 50))
      const record = JSON.parse(json.logs.at(-1)!) as Record<string, unknown>
      expect(record["level"]).toBe("info")
      expect(record["scope"]).toBe("request")
      expect(record["http.status"]).toBe(404)
      expect(record["http.path"]).toBe("/j")
      expect(record["route"]).toBe("default/route0")
      expect(record["listener"]).toBe("listener0")
      expect(record["src.addr"]).toBeUndefined()
    } finally {
      await json.stop()
    }
  })
})
