/**
 * `backendTLS` of every policy side-service, against real TLS peers with the test CA
 * (test/fixtures/tls): HTTP ext authz and gRPC remoteRateLimit (`<policy>.policies.backendTLS`),
 * and a JWKS URL (`jwks: {url, policies: {backendTLS}}`, our extension). gRPC ext authz over
 * TLS is in ExtAuthz.test.ts. Each side-service is also reached without the CA: the certificate
 * is then refused and the policy's failure behaviour shows.
 */
import * as grpc from "@grpc/grpc-js"
import { exportJWK, generateKeyPair, SignJWT } from "jose"
import * as fs from "node:fs"
import * as https from "node:https"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { send } from "../support/Client.ts"
import { type HttpPeer, startHttpPeer } from "../support/ExtAuthzPeers.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { type RateLimitService, startRateLimitService } from "../support/RateLimitService.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"

const dir = path.resolve(import.meta.dirname, "../fixtures/tls")
const serverCert = fs.readFileSync(path.join(dir, "server.pem"))
const serverKey = fs.readFileSync(path.join(dir, "server.key"))
const CA = path.join(dir, "ca.pem")

const ISSUER = "https://idp.example"
const keys = await generateKeyPair("ES256")
const JWKS = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: "tls-key", alg: "ES256" }] })
const token = () =>
  new SignJWT({ iss: ISSUER, sub: "alice", exp: Math.floor(Date.now() / 1000) + 600 })
    .setProtectedHeader({ alg: "ES256", kid: "tls-key" })
    .sign(keys.privateKey)

let upstream: Upstream
let authz: HttpPeer
let rls: RateLimitService
let jwks: https.Server
let jwksPort: number
let jwksFetches = 0
let gw: Running
let port: number

beforeAll(async () => {
  upstream = await startUpstream()
  authz = await startHttpPeer(
    (call) => (call.headers["authorization"] === "Bearer good" ? { status: 200, headers: { "x-user-id": "u-7" } } : { status: 401, body: "no" }),
    { cert: serverCert, key: serverKey }
  )
  rls = await startRateLimitService(
    [{ match: [{ key: "route", value: "tls" }], requestsPerUnit: 1, unit: "minute" }],
    grpc.ServerCredentials.createSsl(null, [{ cert_chain: serverCert, private_key: serverKey }])
  )
  jwks = https.createServer({ cert: serverCert, key: serverKey }, (_req, res) => {
    jwksFetches++
    res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=300" })
    res.end(JWKS)
  })
  await new Promise<void>((resolve) => jwks.listen(0, "127.0.0.1", () => resolve()))
  const address = jwks.address()
  jwksPort = typeof address === "object" && address !== null ? address.port : 0
  port = await freePort()
  const route = (name: string, policies: string) => `
    - name: ${name}
      matches: [{path: {pathPrefix: /${name}}}]
      policies:${policies}
      backends: [{host: 127.0.0.1:$UPSTREAM}]`
  const extAuthz = (tls: string) => `
        extAuthz:
          host: 127.0.0.1:$AUTHZ
          protocol: {http: {includeResponseHeaders: [x-user-id]}}${tls}`
  const rateLimit = (tls: string) => `
        remoteRateLimit:
          host: 127.0.0.1:$RLS
          domain: shop
          descriptors: [{entries: [{key: route, value: '"tls"'}]}]${tls}`
  const jwt = (tls: string) => `
        jwtAuth:
          mode: strict
          issuer: ${ISSUER}
          jwks:
            url: https://127.0.0.1:$JWKS_PORT/keys${tls}`
  gw = await startGateway(
    `
binds:
- port: $PORT
  listeners:
  - routes:${route("authz-tls", extAuthz(`\n          policies: {backendTLS: {root: ${CA}}}`))}${route("authz-untrusted", extAuthz(`\n          policies: {backendTLS: {}}`))}${
      route("authz-plain", extAuthz(""))
    }${route("rls-tls", rateLimit(`\n          policies: {backendTLS: {root: ${CA}, hostname: a.example.com}}`))}${route("rls-untrusted", rateLimit(`\n          policies: {backendTLS: {}}`))}${
      route("jwt-tls", jwt(`\n            policies: {backendTLS: {root: ${CA}}}`))
    }${route("jwt-untrusted", jwt(""))}
`,
    { vars: { PORT: port, UPSTREAM: upstream.port, AUTHZ: authz.port, RLS: rls.port, JWKS_PORT: jwksPort } }
  )
})

afterAll(async () => {
  await gw?.stop()
  await authz?.close()
  await rls?.close()
  await new Promise<void>((resolve) => {
    jwks?.closeAllConnections()
    jwks?.close(() => resolve())
  })
  await upstream?.close()
})

describe("extAuthz over HTTPS (policies.backendTLS)", () => {
  it("verifies the service with root: its decision applies", async () => {
    const ok = await send(port, "GET", "/authz-tls", { authorization: "Bearer good" })
    expect(ok.status).toBe(200)
    expect(JSON.parse(ok.body).headers["x-user-id"]).toBe("u-7")
    expect(await send(port, "GET", "/authz-tls", { authorization: "Bearer bad" })).toMatchObject({ status: 401, body: "no" })
  })

  it("an untrusted certificate or plain HTTP to the TLS port is no decision: 403, the service never asked", async () => {
    const before = authz.calls.length
    for (const name of ["authz-untrusted", "authz-plain"]) {
      expect(await send(port, "GET", `/${name}`, { authorization: "Bearer good" })).toMatchObject({ status: 403, body: "external authorization failed" })
    }
    expect(authz.calls.length).toBe(before)
  })
})

describe("remoteRateLimit over gRPC with TLS (policies.backendTLS)", () => {
  it("verifies the service (root + hostname) and enforces its decision", async () => {
    const statuses = [(await send(port, "GET", "/rls-tls")).status, (await send(port, "GET", "/rls-tls")).status]
    expect(statuses).toEqual([200, 429])
    expect(rls.requests.length).toBe(2)
  })

  it("an untrusted certificate: failClosed 500 `rate limit failed`, the service never asked", async () => {
    const before = rls.requests.length
    expect(await send(port, "GET", "/rls-untrusted")).toMatchObject({ status: 500, body: "rate limit failed" })
    expect(rls.requests.length).toBe(before)
  })
})

describe("jwtAuth with an https JWKS URL (jwks.policies.backendTLS)", () => {
  it("fetches the keys verified against root: a valid token passes", async () => {
    const reply = await send(port, "GET", "/jwt-tls", { authorization: `Bearer ${await token()}` })
    expect(reply.status).toBe(200)
    expect(JSON.parse(reply.body).headers["authorization"]).toBeUndefined()
    expect(jwksFetches).toBeGreaterThanOrEqual(1)
  })

  it("without the CA the fetch is refused (Node's CA store): no keys, 401", async () => {
    const reply = await send(port, "GET", "/jwt-untrusted", { authorization: `Bearer ${await token()}` })
    expect(reply).toMatchObject({ status: 401, body: "authentication failure: token uses an unknown key" })
  })

  it("backendTLS on an http JWKS URL is a config error naming the field", async () => {
    const p = await freePort()
    await expect(
      startGateway(`
binds:
- port: ${p}
  listeners:
  - routes:
    - policies:
        jwtAuth:
          issuer: ${ISSUER}
          jwks: {url: "http://127.0.0.1:1/keys", policies: {backendTLS: {root: ${CA}}}}
`)
    ).rejects.toThrow(/policies\.jwtAuth\.jwks\.policies\.backendTLS: backendTLS needs an https JWKS URL/)
  })
})
