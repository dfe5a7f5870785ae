/**
 * The admin API (config dump and `/api/config` redaction, `/logging`, readiness mirror,
 * `/api/cel`, `/quitquitquit`) and the access log's `filter`/`add`/`remove` with secrets
 * redacted, against a running gateway.
 */
import { Effect } from "effect"
import * as crypto from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { send } from "../support/Client.ts"
import { rawRequest } from "../support/RawHttp.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"

const SESSION_KEY = crypto.randomBytes(32).toString("hex")
const API_KEY = "agw_sk_supersecret_0001"
const BACKEND_KEY = "sk-backend-secret-0002"
const PASSWORD = "hunter2-secret"
const HTPASSWD = `alice:{SHA}${crypto.createHash("sha1").update(PASSWORD).digest("base64")}`
const JWK = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ format: "jwk" })
const JWKS = JSON.stringify({ keys: [{ ...JWK, kid: "k1", alg: "ES256", use: "sig" }] })
const HEADER_KEY = "sk-header-secret-0007"
const AWS_ID = "AKIDEXAMPLESECRET0008"
const AWS_SECRET = "aws-secret-access-key-0009"
const SECRETS = [SESSION_KEY, API_KEY, BACKEND_KEY, HTPASSWD, JWK.x!, "otlp-header-secret", HEADER_KEY, AWS_ID, AWS_SECRET]

let gw: Running
let port: number

const admin = (path: string, init?: RequestInit) => fetch(`http://127.0.0.1:${gw.ports.admin}${path}`, init)

/** Waits past the access log's flush interval. */
const flushed = () => new Promise((r) => setTimeout(r, 60))

const linesFor = (running: Running, from: number, marker: string) => running.logs.slice(from).filter((l) => l.includes(marker))

beforeAll(async () => {
  port = await freePort()
  gw = await startGateway(
    `
config:
  session: {key: "${SESSION_KEY}"}
  sensitiveHeaders: [X-Secret-Token]
  tracing:
    otlpEndpoint: http://127.0.0.1:9
    otlpProtocol: http
    headers: {x-api-key: otlp-header-secret}
frontendPolicies:
  accessLog:
    filter: '!request.path.startsWith("/skip")'
    add:
      ua: 'request.headers["user-agent"]'
      auth: 'request.headers["authorization"]'
      headers: 'request.headers'
      http.host: '"overridden.example"'
      nothing: 'request.headers["absent"]'
    remove: [src.addr]
binds:
- port: $PORT
  listeners:
  - name: admin-test
    routes:
    - name: jwt
      matches: [{path: {pathPrefix: /jwt}}]
      policies:
        jwtAuth: {mode: strict, issuer: https://idp.example, jwks: '${JWKS}'}
        directResponse: {status: 200, body: "jwt"}
    - name: keys
      matches: [{path: {pathPrefix: /keys}}]
      policies:
        apiKey: {mode: strict, keys: [{key: ${API_KEY}, metadata: {owner: ml}}]}
        directResponse: {status: 200, body: "keys"}
    - name: basic
      matches: [{path: {pathPrefix: /basic}}]
      policies:
        basicAuth: {mode: strict, htpasswd: "${HTPASSWD}"}
        directResponse: {status: 200, body: "basic"}
    - name: backend
      matches: [{path: {pathPrefix: /backend}}]
      policies:
        backendAuth: {key: ${BACKEND_KEY}}
      backends:
      - host: 127.0.0.1:9
    - name: backend-header
      matches: [{path: {pathPrefix: /backend-header}}]
      policies:
        backendAuth: {key: {value: ${HEADER_KEY}, location: {header: {name: x-api-key}}}}
      backends:
      - host: 127.0.0.1:9
    - name: backend-aws
      matches: [{path: {pathPrefix: /backend-aws}}]
      policies:
        backendAuth: {aws: {accessKeyId: ${AWS_ID}, secretAccessKey: ${AWS_SECRET}, region: us-east-1, serviceName: s3}}
      backends:
      - host: 127.0.0.1:9
    - name: open
      policies:
        directResponse: {status: 200, body: "open"}
`,
    { vars: { PORT: port } }
  )
})
afterAll(() => gw.stop())

describe("config dump", () => {
  it("dumps the serving snapshot with every secret redacted, and the reload status", async () => {
    const res = await admin("/config_dump")
    expect(res.status).toBe(200)
    expect(res.headers.get("content-type")).toBe("application/json")
    const text = await res.text()
    for (const secret of SECRETS) expect(text).not.toContain(secret)
    const dump = JSON.parse(text) as {
      binds: Array<{ listeners: Array<{ routes: Array<{ name: string; policies: Record<string, unknown> }> }> }>
      settings: { sessionKey: string }
      reload: { current: { generation: number; version: string }; lastError: unknown; successes: number; failures: number }
    }
    const routes = dump.binds[0]!.listeners[0]!.routes
    expect(routes.map((r) => r.name)).toEqual(["jwt", "keys", "basic", "backend", "backend-header", "backend-aws", "open"])
    expect(routes[1]!.policies["apiKey"]).toEqual({ mode: "strict", keys: "<redacted>" })
    expect(routes[2]!.policies["basicAuth"]).toEqual({ mode: "strict", htpasswd: "<redacted>" })
    expect(routes[0]!.policies["jwtAuth"]).toMatchObject({ jwks: "<redacted>", issuer: "https://idp.example" })
    expect(dump.settings.sessionKey).toBe("<redacted>")
    expect(dump.reload.current.generation).toBe(1)
    expect(dump.reload.current.version).toMatch(/^[0-9a-f]{12}$/)
    expect(dump.reload).toMatchObject({ lastError: null, successes: 1, failures: 0 })
    expect((await admin("/config_dump", { method: "POST" })).status).toBe(405)
  })

  it("GET /api/config: the loaded config in the file's shape, redacted, with the reload status", async () => {
    const res = await admin("/api/config")
    expect(res.status).toBe(200)
    const text = await res.text()
    for (const secret of SECRETS) expect(text).not.toContain(secret)
    const body = JSON.parse(text) as { config: { config: { session: { key: string } }; binds: Array<{ port: number }> }; status: { current: { generation: number } } }
    expect(body.config.binds[0]!.port).toBe(port)
    expect(body.config.config.session.key).toBe("<redacted>")
    expect(body.status.current.generation).toBe(1)
  })

  it("counts a reload in the status", async () => {
    await Effect.runPromise(gw.gateway.reload)
    const body = (await (await admin("/api/config")).json()) as { status: { current: { generation: number; loadedAt: string }; successes: number } }
    expect(body.status.current.generation).toBe(2)
    expect(body.status.successes).toBe(2)
    expect(Date.parse(body.status.current.loadedAt)).toBeGreaterThan(Date.now() - 60_000)
  })
})

describe("readiness on the admin port", () => {
  it("mirrors /healthz/ready", async () => {
    const res = await admin("/healthz/ready")
    expect(res.status).toBe(200)
    expect(await res.text()).toBe("ready\n")
  })
})

describe("/logging", () => {
  it("lists, changes and resets the level; refuses an invalid one", async () => {
    expect(await (await admin("/logging")).text()).toBe("current log level is info\n")
    const debug = await admin("/logging?level=debug", { method: "POST" })
    expect(debug.status).toBe(200)
    expect(await debug.text()).toBe("current log level is debug\n")
    const bad = await admin("/logging?level=loud", { method: "POST" })
    expect(bad.status).toBe(400)
    expect(await bad.text()).toMatch(/^Invalid level provided: loud\n/)
    expect(await (await admin("/logging", { method: "POST" })).text()).toBe("current log level is debug\n")
    expect(await (await admin("/logging?reset", { method: "POST" })).text()).toBe("current log level is info\n")
    expect((await admin("/logging", { method: "PUT" })).status).toBe(405)
  })

  it("above info, request events are not logged", async () => {
    await admin("/logging?level=warn", { method: "POST" })
    const before = gw.logs.length
    await fetch(gw.url(port, "/quiet"))
    await flushed()
    expect(linesFor(gw, before, "http.path=/quiet")).toHaveLength(0)
    await admin("/logging?level=info", { method: "POST" })
    await fetch(gw.url(port, "/loud"))
    await flushed()
    expect(linesFor(gw, before, "http.path=/loud")).toHaveLength(1)
  })
})

describe("access log", () => {
  it("adds CEL fields, replaces and removes defaults, and never logs a credential", async () => {
    const before = gw.logs.length
    const res = await fetch(gw.url(port, "/open?token=q"), {
      headers: {
        authorization: "Bearer tok-secret-0003",
        cookie: "sid=cookie-secret-0004",
        "x-api-key": "key-secret-0005",
        "x-secret-token": "custom-secret-0006",
        "user-agent": "ua-test"
      }
    })
    expect(await res.text()).toBe("open")
    await flushed()
    const lines = linesFor(gw, before, "route=default/open")
    expect(lines).toHaveLength(1)
    const line = lines[0]!
    for (const secret of ["tok-secret-0003", "cookie-secret-0004", "key-secret-0005", "custom-secret-0006"]) expect(line).not.toContain(secret)
    expect(line).toContain(" ua=ua-test")
    expect(line).toContain(" auth=<redacted>")
    expect(line).toMatch(/ headers="\{[^ ]*\\"cookie\\":\\"<redacted>\\"/)
    expect(line).toContain('\\"x-secret-token\\":\\"<redacted>\\"')
    expect(line).toContain('\\"user-agent\\":\\"ua-test\\"')
    // `add` replaces the default field of the same name; `remove` drops one; null adds nothing.
    expect(line.match(/http\.host=/g)).toHaveLength(1)
    expect(line).toContain(" http.host=overridden.example")
    expect(line).not.toContain("src.addr=")
    expect(line).not.toContain("nothing=")
    expect(line).toContain(" http.path=/open ")
    expect(line).toContain(" reason=DirectResponse ")
  })

  it("logs only what the filter selects", async () => {
    const before = gw.logs.length
    await fetch(gw.url(port, "/skip/me"))
    await fetch(gw.url(port, "/kept"))
    await flushed()
    expect(linesFor(gw, before, "http.path=/skip")).toHaveLength(0)
    expect(linesFor(gw, before, "http.path=/kept")).toHaveLength(1)
  })

  it("JSON format: added fields are JSON values, secrets redacted", async () => {
    const p = await freePort()
    const json = await startGateway(
      `
config:
  logging: {format: json}
  sensitiveHeaders: [mcp-session-id]
frontendPolicies:
  accessLog:
    add: {headers: 'request.headers', status: 'response.code', big: 'response.code > 100'}
binds:
- port: $PORT
  listeners:
  - routes:
    - policies: {directResponse: {status: 202, body: "j"}}
`,
      { vars: { PORT: p } }
    )
    try {
      await fetch(json.url(p, "/j"), { headers: { authorization: "Basic c2VjcmV0OnNlY3JldA==", "x-plain": "v" } })
      await flushed()
      const line = json.logs.at(-1)!
      expect(line).not.toContain("c2VjcmV0OnNlY3JldA==")
      const record = JSON.parse(line) as Record<string, unknown>
      expect(record["http.status"]).toBe(202)
      expect(record["status"]).toBe(202)
      expect(record["big"]).toBe(true)
      expect(record["headers"]).toMatchObject({ authorization: "<redacted>", "x-plain": "v" })
    } finally {
      await json.stop()
    }
  })
})

describe("/api/cel", () => {
  const cel = async (body: unknown, path = "/api/cel") => {
    const res = await admin(path, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body) })
    return { status: res.status, type: res.headers.get("content-type"), body: (await res.json()) as Record<string, unknown> }
  }

  it("evaluates an expression against a sample request", async () => {
    expect(await cel({ expression: 'request.method + " " + request.path + " " + request.headers["x-a"]', data: { request: { method: "post", path: "/x", headers: { "X-A": "1" } } } })).toEqual({
      status: 200,
      type: "application/json",
      body: { result: "POST /x 1" }
    })
    expect((await cel({ expression: "jwt.sub", data: { jwt: { sub: "alice" } } })).body).toEqual({ result: "alice" })
    expect((await cel({ expression: "response.code == 503 && source.address == '10.0.0.1'", data: { response: { code: 503 }, source: { address: "10.0.0.1" } } })).body).toEqual({ result: true })
    expect((await cel({ expression: "request.host" })).body).toEqual({ result: "localhost" })
    expect((await cel({ expression: "[1, 2].map(x, x * 2)" }, "/cel")).body).toEqual({ result: [2, 4] })
  })

  it("answers errors as 400 JSON", async () => {
    const compile = await cel({ expression: "request.method ==" })
    expect(compile.status).toBe(400)
    expect(String(compile.body["error"])).toMatch(/^Failed to compile expression: /)
    const evaluation = await cel({ expression: 'request.headers["missing"]' })
    expect(evaluation.status).toBe(400)
    expect(String(evaluation.body["error"])).toMatch(/^Evaluation error: /)
    const json = await cel("{not json")
    expect(json.status).toBe(400)
    expect(String(json.body["error"])).toMatch(/^Failed to parse JSON/)
    expect((await cel({ data: {} })).status).toBe(400)
    const big = await cel({ expression: "1", data: { pad: "x".repeat(70 * 1024) } })
    expect(big.status).toBe(413)
    expect((await admin("/api/cel")).status).toBe(405)
  })
})

describe("/quitquitquit", () => {
  it("refuses GET, then on POST answers and starts the graceful drain", async () => {
    const p = await freePort()
    const quitting = await startGateway(
      `
binds:
- port: $PORT
  listeners:
  - routes:
    - policies: {directResponse: {status: 200, body: "up"}}
`,
      { vars: { PORT: p } }
    )
    try {
      const url = `http://127.0.0.1:${quitting.ports.admin}/quitquitquit`
      expect((await fetch(url)).status).toBe(405)
      expect((await fetch(`http://127.0.0.1:${quitting.ports.readiness}/healthz/ready`)).status).toBe(200)
      const res = await fetch(url, { method: "POST" })
      expect(res.status).toBe(200)
      expect(await res.text()).toBe("shutdown now\n")
      await Effect.runPromise(quitting.gateway.awaitShutdown)
      const ready = await fetch(`http://127.0.0.1:${quitting.ports.readiness}/healthz/ready`)
      expect(ready.status).toBe(503)
      expect(await ready.text()).toBe("not ready\n")
    } finally {
      await quitting.stop()
    }
  })
})

describe("reload failures", () => {
  it("keep the last good version and report the error with its time", async () => {
    const fs = await import("node:fs/promises")
    const os = await import("node:os")
    const path = await import("node:path")
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "agw-admin-"))
    const file = path.join(dir, "config.yaml")
    const p = await freePort()
    await fs.writeFile(file, `binds:\n- port: ${p}\n  listeners:\n  - routes:\n    - policies: {directResponse: {status: 200, body: "v1"}}\n`)
    const running = await startGateway("", { file })
    try {
      const before = (await (await fetch(`http://127.0.0.1:${running.ports.admin}/api/config`)).json()) as { status: { current: { version: string } } }
      await fs.writeFile(file, `binds:\n- port: ${p}\n  listeners:\n  - routes:\n    - policies: {directResponse: {status: 200, bodyy: "v2"}}\n`)
      const exit = await Effect.runPromiseExit(running.gateway.reload)
      expect(exit._tag).toBe("Failure")
      const after = (await (await fetch(`http://127.0.0.1:${running.ports.admin}/api/config`)).json()) as {
        status: { current: { version: string; generation: number }; lastError: { message: string; at: string }; failures: number }
      }
      expect(after.status.current).toEqual(expect.objectContaining({ version: before.status.current.version, generation: 1 }))
      expect(after.status.failures).toBe(1)
      expect(after.status.lastError.message).toContain('unknown field "bodyy"')
      expect(Date.parse(after.status.lastError.at)).toBeGreaterThan(Date.now() - 60_000)
      expect(await (await fetch(running.url(p, "/"))).text()).toBe("v1")
    } finally {
      await running.stop()
      await fs.rm(dir, { recursive: true, force: true })
    }
  })
})

describe("requests a web page could make", () => {
  /** `Host`, `Origin` and `Sec-Fetch-Site` exactly as a browser would send them (fetch would not let us set Host). */
  const raw = async (method: string, path: string, headers: Record<string, string>) => {
    const { status, body } = await send(gw.ports.admin!, method, path, headers)
    return { status, body }
  }
  const own = () => `127.0.0.1:${gw.ports.admin}`

  it("a Host that is not loopback (DNS rebinding) is refused, even for a GET", async () => {
    const rebound = await raw("GET", "/config_dump", { host: `attacker.example:${gw.ports.admin}` })
    expect(rebound).toEqual({ status: 403, body: "forbidden: host not allowed\n" })
    expect((await raw("GET", "/config_dump", { host: `localhost:${gw.ports.admin}` })).status).toBe(200)
    expect((await raw("GET", "/config_dump", { host: `[::1]:${gw.ports.admin}` })).status).toBe(200)
    expect((await raw("GET", "/config_dump", { host: own() })).status).toBe(200)
  })

  it("a cross-origin POST is refused and changes nothing; a same-origin one works", async () => {
    const fromPage = await raw("POST", "/logging?level=debug", { host: own(), origin: "https://attacker.example" })
    expect(fromPage).toEqual({ status: 403, body: "forbidden: cross-origin request\n" })
    const fetchMetadata = await raw("POST", "/quitquitquit", { host: own(), "sec-fetch-site": "cross-site" })
    expect(fetchMetadata.status).toBe(403)
    const otherPort = await raw("POST", "/logging?level=debug", { host: own(), origin: `http://127.0.0.1:${gw.ports.admin! + 1}` })
    expect(otherPort.status).toBe(403)
    expect(await (await admin("/logging")).text()).toBe("current log level is info\n")
    expect((await raw("POST", "/logging?level=debug", { host: own(), origin: "null" })).status).toBe(403)
    expect((await raw("HEAD", "/config_dump", { host: own(), origin: "https://attacker.example" })).status).toBe(200)
    const sameOrigin = await raw("POST", "/logging?level=debug", { host: own(), origin: `http://${own()}`, "sec-fetch-site": "same-origin" })
    expect(sameOrigin).toEqual({ status: 200, body: "current log level is debug\n" })
    expect((await raw("POST", "/logging?reset", { host: own() })).body).toBe("current log level is info\n")
    // The gateway is still serving (the refused /quitquitquit did nothing).
    expect((await fetch(gw.url(port, "/open"))).status).toBe(200)
  })
})

/** This machine's first non-loopback IPv4 address, if it has one. */
const externalAddress = async (): Promise<string | undefined> => {
  const os = await import("node:os")
  return Object.values(os.networkInterfaces()).flat().find((i) => i !== undefined && !i.internal && i.family === "IPv4")?.address
}

describe("an admin address exposed on purpose (adminAddr 0.0.0.0)", async () => {
  const external = await externalAddress()
  // Needs an interface other than loopback to be a peer that is not loopback (build and CI machines have eth0).
  it.runIf(external !== undefined)("serves reads to other peers, but changes to the process only to loopback ones", async () => {
    const running = await startGateway("binds: []\n", { vars: { ADMIN_ADDR: "0.0.0.0:0" } })
    try {
      const adminPort = running.ports.admin!
      const read = await send(adminPort, "GET", "/config_dump", {}, { host: external! })
      expect(read.status).toBe(200)
      const quit = await send(adminPort, "POST", "/quitquitquit", {}, { host: external! })
      expect(quit).toEqual(expect.objectContaining({ status: 403, body: "forbidden: loopback only\n" }))
      const level = await send(adminPort, "POST", "/logging?level=debug", {}, { host: external! })
      expect(level.status).toBe(403)
      const local = await send(adminPort, "POST", "/logging?level=debug", {})
      expect(local.body).toBe("current log level is debug\n")
      // DNS rebinding still arrives over loopback, naming the attacker's host: refused on this bind too.
      const rebound = await send(adminPort, "POST", "/quitquitquit", { host: `attacker.example:${adminPort}`, origin: `http://attacker.example:${adminPort}` })
      expect(rebound).toEqual(expect.objectContaining({ status: 403, body: "forbidden: host not allowed\n" }))
      expect((await send(adminPort, "GET", "/config_dump", { host: `attacker.example:${adminPort}` })).status).toBe(403)
      // Over the interface address, any Host (the operator's names).
      expect((await send(adminPort, "GET", "/config_dump", { host: `gateway.internal:${adminPort}` }, { host: external! })).status).toBe(200)
      // No Host at all (HTTP/1.0): not a browser.
      expect((await rawRequest(adminPort, "GET /healthz/ready HTTP/1.0\r\n\r\n")).status).toBe(200)
      // The refused /quitquitquit did nothing: the admin server still answers.
      expect((await send(adminPort, "GET", "/healthz/ready", {})).status).toBe(200)
    } finally {
      await running.stop()
    }
  })
})
