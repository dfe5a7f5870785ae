/**
 * Listener mTLS end to end: client certificates verified against the listener's `root`, the
 * verified identity in CEL `source.*` (authorization allows/denies by it) and in the access log
 * (`src.identity`), refusals for a missing or foreign certificate, and a port whose listeners
 * have different client CAs (or none). Fixtures: test/fixtures/tls (gen-mtls-clients.sh).
 */
import * as fs from "node:fs"
import * as https from "node:https"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"

const dir = path.resolve(import.meta.dirname, "../fixtures/tls")
const pem = (name: string) => fs.readFileSync(path.join(dir, name))
const ca = pem("ca.pem")
const certs = {
  spiffe: { cert: pem("spiffe-client.pem"), key: pem("spiffe-client.key") },
  plain: { cert: pem("client.pem"), key: pem("client.key") },
  foreign: { cert: pem("other-client.pem"), key: pem("other-client.key") }
}

interface Got {
  readonly status: number
  readonly body: string
}

const get = (
  port: number,
  target: string,
  options: { readonly client?: { readonly cert: Buffer; readonly key: Buffer }; readonly servername?: string; readonly host?: string } = {}
) =>
  new Promise<Got>((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port,
        path: target,
        ca,
        servername: options.servername ?? "localhost",
        headers: { host: options.host ?? options.servername ?? "localhost" },
        ...(options.client ?? {}),
        agent: false
      },
      (res) => {
        let body = ""
        res.setEncoding("utf8")
        res.on("data", (c: string) => (body += c))
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
      }
    )
    req.on("error", reject)
    req.end()
  })

type Log = Record<string, unknown>

let upstream: Upstream
let gw: Running
let port: number
let mixedPort: number

beforeAll(async () => {
  upstream = await startUpstream()
  port = await freePort()
  mixedPort = await freePort()
  gw = await startGateway(
    `
config:
  logging: {format: json}
binds:
- port: $PORT
  listeners:
  - protocol: HTTPS
    tls: {cert: $DIR/server.pem, key: $DIR/server.key, root: $DIR/ca.pem}
    routes:
    - name: whoami
      matches: [{path: {exact: /whoami}}]
      policies:
        directResponse:
          status: 200
          bodyExpression: 'toJson({"identity": source.identity, "sans": source.subjectAltNames, "cn": source.subjectCn, "issuer": source.issuer, "subject": source.subject, "spiffe": source.spiffeId, "pem": source.certificate.startsWith("-----BEGIN CERTIFICATE-----")})'
    - name: planners
      matches: [{path: {pathPrefix: /planners}}]
      policies:
        authorization:
          rules:
          - 'source.identity.trustDomain == "example.org" && source.identity.serviceAccount == "planner"'
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: no-test-client
      matches: [{path: {pathPrefix: /guarded}}]
      policies:
        authorization:
          rules:
          - {deny: 'source.subjectCn == "test-client"'}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
- port: $MIXED
  listeners:
  - name: strict
    hostname: a.example.com
    protocol: HTTPS
    tls: {cert: $DIR/server.pem, key: $DIR/server.key, root: $DIR/ca.pem}
    routes:
    - policies: {directResponse: {status: 200, body: "strict"}}
  - name: other-ca
    hostname: localhost
    protocol: HTTPS
    tls: {cert: $DIR/server.pem, key: $DIR/server.key, root: $DIR/other-ca.pem}
    routes:
    - policies: {directResponse: {status: 200, body: "other-ca"}}
  - name: open
    protocol: HTTPS
    tls: {cert: $DIR/server.pem, key: $DIR/server.key}
    routes:
    - policies: {directResponse: {status: 200, body: "open"}}
`,
    { vars: { PORT: port, MIXED: mixedPort, DIR: dir, UPSTREAM: upstream.port } }
  )
})

afterAll(async () => {
  await gw?.stop()
  await upstream?.close()
})

describe("listener mTLS: identity", () => {
  it("a client certificate signed by root is accepted and its identity reaches CEL source.*", async () => {
    const got = await get(port, "/whoami", { client: certs.spiffe })
    expect(got.status).toBe(200)
    expect(JSON.parse(got.body)).toEqual({
      identity: { trustDomain: "example.org", namespace: "agents", serviceAccount: "planner" },
      sans: ["spiffe://example.org/ns/agents/sa/planner", "planner.internal"],
      cn: "planner",
      issuer: "CN=effect-agentgateway test CA",
      subject: "CN=planner,O=agents",
      spiffe: "spiffe://example.org/ns/agents/sa/planner",
      pem: true
    })
  })

  it("authorization on source.identity: the planner passes, a verified client without that identity is 403", async () => {
    expect(await get(port, "/planners/x", { client: certs.spiffe })).toMatchObject({ status: 200 })
    expect(await get(port, "/planners/x", { client: certs.plain })).toEqual({ status: 403, body: "authorization failed" })
  })

  it("a deny rule on source.subjectCn refuses that client only", async () => {
    expect(await get(port, "/guarded", { client: certs.plain })).toEqual({ status: 403, body: "authorization failed" })
    expect(await get(port, "/guarded", { client: certs.spiffe })).toMatchObject({ status: 200 })
  })

  it("the access log carries src.identity (the SPIFFE id), absent for a certificate without one", async () => {
    const from = gw.logs.length
    await get(port, "/planners/logged", { client: certs.spiffe })
    await get(port, "/planners/anonymous", { client: certs.plain })
    const find = (p: string): Log | undefined => gw.logs.slice(from).map((l): Log => JSON.parse(l)).find((l) => l["http.path"] === p)
    for (let i = 0; i < 100 && (find("/planners/logged") === undefined || find("/planners/anonymous") === undefined); i++) {
      await new Promise((r) => setTimeout(r, 20))
    }
    expect(find("/planners/logged")?.["src.identity"]).toBe("spiffe://example.org/ns/agents/sa/planner")
    expect(find("/planners/anonymous")).toBeDefined()
    expect(find("/planners/anonymous")?.["src.identity"]).toBeUndefined()
  })
})

describe("listener mTLS: refusals", () => {
  it("no client certificate: the handshake is refused", async () => {
    await expect(get(port, "/whoami")).rejects.toThrow()
  })

  it("a certificate from another CA: the handshake is refused", async () => {
    await expect(get(port, "/whoami", { client: certs.foreign })).rejects.toThrow()
  })
})

describe("listener mTLS: listeners with different client CAs on one port", () => {
  it("each listener verifies against its own root; the listener without one needs no certificate", async () => {
    expect(await get(mixedPort, "/", { servername: "a.example.com", client: certs.plain })).toEqual({ status: 200, body: "strict" })
    expect(await get(mixedPort, "/", { servername: "localhost", client: certs.foreign })).toEqual({ status: 200, body: "other-ca" })
    expect(await get(mixedPort, "/", { servername: "b.example.com" })).toEqual({ status: 200, body: "open" })
  })

  it("an mTLS listener without a valid certificate for it refuses the connection", async () => {
    await expect(get(mixedPort, "/", { servername: "a.example.com" })).rejects.toThrow()
    await expect(get(mixedPort, "/", { servername: "a.example.com", client: certs.foreign })).rejects.toThrow()
    await expect(get(mixedPort, "/", { servername: "localhost", client: certs.plain })).rejects.toThrow()
  })

  it("a certificate verified for one listener does not open another by Host: 404 listener not found", async () => {
    // Verified against other-ca (SNI localhost), then asks for the listener that trusts ca.pem.
    expect(await get(mixedPort, "/", { servername: "localhost", host: "a.example.com", client: certs.foreign })).toEqual({
      status: 404,
      body: "listener not found"
    })
    // SNI of the listener without mTLS, Host of one with it.
    expect(await get(mixedPort, "/", { servername: "b.example.com", host: "a.example.com", client: certs.plain })).toEqual({
      status: 404,
      body: "listener not found"
    })
  })
})
