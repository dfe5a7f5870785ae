/**
 * `jwtAuth`, `basicAuth` and `apiKey` through real sockets: the real gateway from YAML, a real
 * upstream (which must never see the credential), requests sent with `node:http`. Covers the
 * route phase (modes, claims in an authorization rule, exact 401 bodies, the basic challenge)
 * and the gateway phase (a listener-level policy before route selection), and a JWKS URL.
 */
import bcrypt from "bcryptjs"
import { exportJWK, generateKeyPair, SignJWT } from "jose"
import * as http from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Reply, send } from "../support/Client.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"

const ISSUER = "https://idp.example"

const keys = await generateKeyPair("RS256")
const jwk = { ...(await exportJWK(keys.publicKey)), kid: "k1", alg: "RS256" }
const JWKS = JSON.stringify({ keys: [jwk] })

const token = (sub: string, extra: Record<string, unknown> = {}) =>
  new SignJWT({ iss: ISSUER, sub, aud: "api", exp: Math.floor(Date.now() / 1000) + 600, ...extra })
    .setProtectedHeader({ alg: "RS256", kid: "k1" })
    .sign(keys.privateKey)

const BCRYPT = bcrypt.hashSync("s3cret", 4)

const expect401 = (reply: Reply, body: string) => {
  expect(reply.status).toBe(401)
  expect(reply.headers["content-type"]).toBe("text/plain")
  expect(reply.body).toBe(body)
}

describe("authentication policies", () => {
  let upstream: Upstream
  let jwksServer: http.Server
  let jwksFetches = 0
  let gw: Running
  let port: number
  let gatewayPort: number

  beforeAll(async () => {
    upstream = await startUpstream()
    jwksServer = http.createServer((_req, res) => {
      jwksFetches++
      res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=300" })
      res.end(JWKS)
    })
    await new Promise<void>((resolve) => jwksServer.listen(0, "127.0.0.1", () => resolve()))
    const address = jwksServer.address()
    const jwksPort = typeof address === "object" && address !== null ? address.port : 0
    port = await freePort()
    gatewayPort = await freePort()
    gw = await startGateway(
      `
binds:
- port: $PORT
  listeners:
  - name: web
    routes:
    - name: jwt-strict
      matches: [{path: {pathPrefix: /jwt-strict}}]
      policies:
        jwtAuth:
          mode: strict
          issuer: ${ISSUER}
          audiences: [api]
          jwks: '$JWKS'
        authorization:
          rules: ['jwt.sub == "alice"']
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: jwt-optional
      matches: [{path: {pathPrefix: /jwt-optional}}]
      policies:
        jwtAuth: {issuer: ${ISSUER}, jwks: {url: "http://127.0.0.1:$JWKS_PORT/.well-known/jwks.json"}}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: jwt-permissive
      matches: [{path: {pathPrefix: /jwt-permissive}}]
      policies:
        jwtAuth: {mode: permissive, issuer: ${ISSUER}, jwks: '$JWKS'}
        transformations:
          request:
            set: {x-caller: 'default(jwt.sub, "anonymous")'}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: basic
      matches: [{path: {pathPrefix: /basic}}]
      policies:
        basicAuth:
          mode: strict
          realm: internal
          htpasswd: |
            # the ops team
            ann:$BCRYPT
            sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=
        authorization:
          rules: ['basicAuth.username == "ann"']
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: key
      matches: [{path: {pathPrefix: /key}}]
      policies:
        apiKey:
          mode: strict
          location: {header: {name: x-api-key}}
          keys:
          - key: agw_sk_example
            metadata: {owner: platform}
        transformations:
          request:
            set: {x-owner: 'apiKey.owner'}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
- port: $GATEWAY_PORT
  listeners:
  - name: guarded
    policies:
      jwtAuth: {mode: strict, issuer: ${ISSUER}, jwks: '$JWKS'}
    routes:
    - name: any
      backends: [{host: 127.0.0.1:$UPSTREAM}]
`,
      { vars: { PORT: port, GATEWAY_PORT: gatewayPort, UPSTREAM: upstream.port, JWKS, JWKS_PORT: jwksPort, BCRYPT } }
    )
  })
  afterAll(async () => {
    await gw.stop()
    await upstream.close()
    jwksServer.closeAllConnections()
    await new Promise<void>((resolve) => jwksServer.close(() => resolve()))
  })

  it("jwtAuth strict: a valid token for alice passes the CEL rule, the upstream never sees it, jwt.sub is logged", async () => {
    const before = upstream.received.length
    const res = await send(port, "GET", "/jwt-strict/x", { authorization: `Bearer ${await token("alice")}` })
    expect(res.status).toBe(200)
    expect(upstream.received.length).toBe(before + 1)
    expect(upstream.received.at(-1)?.headers.authorization).toBeUndefined()
    // The access log is flushed in batches: wait (bounded) for this request's line.
    let line: string | undefined
    for (let attempt = 0; attempt < 100 && line === undefined; attempt++) {
      line = gw.logs.findLast((l) => l.includes("route=default/jwt-strict"))
      if (line === undefined) await new Promise((r) => setTimeout(r, 10))
    }
    expect(line).toContain("jwt.sub=alice")
    expect(line).not.toContain("authorization")
  })

  it("jwtAuth strict: exact 401 bodies, and a valid token for bob is denied by the rule", async () => {
    const before = upstream.received.length
    expect401(await send(port, "GET", "/jwt-strict/x"), "authentication failure: no bearer token found")
    expect401(await send(port, "GET", "/jwt-strict/x", { authorization: "Bearer abc.def.ghi" }), "authentication failure: the token header is malformed")
    expect401(
      await send(port, "GET", "/jwt-strict/x", { authorization: `Bearer ${await token("alice", { aud: "web" })}` }),
      "authentication failure: the token is invalid: audience not accepted"
    )
    expect401(
      await send(port, "GET", "/jwt-strict/x", { authorization: `Bearer ${await token("alice", { exp: Math.floor(Date.now() / 1000) - 3600 })}` }),
      "authentication failure: the token is invalid: expired"
    )
    const bob = await send(port, "GET", "/jwt-strict/x", { authorization: `Bearer ${await token("bob")}` })
    expect(bob.status).toBe(403)
    expect(bob.body).toBe("authorization failed")
    expect(upstream.received.length).toBe(before)
  })

  it("jwtAuth optional with a JWKS URL: no token passes, a valid one is verified with the fetched keys", async () => {
    expect(jwksFetches).toBe(1)
    expect((await send(port, "GET", "/jwt-optional/x")).status).toBe(200)
    const res = await send(port, "GET", "/jwt-optional/x", { authorization: `Bearer ${await token("carol")}` })
    expect(res.status).toBe(200)
    expect(upstream.received.at(-1)?.headers.authorization).toBeUndefined()
    expect401(
      await send(port, "GET", "/jwt-optional/x", { authorization: `Bearer ${await token("carol", { iss: "https://evil.example" })}` }),
      "authentication failure: the token is invalid: issuer not accepted"
    )
  })

  it("jwtAuth permissive: an invalid token is forwarded as is, a valid one is stripped and its claims used", async () => {
    const bad = await send(port, "GET", "/jwt-permissive/x", { authorization: "Bearer garbage" })
    expect(bad.status).toBe(200)
    expect(upstream.received.at(-1)?.headers.authorization).toBe("Bearer garbage")
    expect(upstream.received.at(-1)?.headers["x-caller"]).toBe("anonymous")
    const good = await send(port, "GET", "/jwt-permissive/x", { authorization: `Bearer ${await token("dave")}` })
    expect(good.status).toBe(200)
    expect(upstream.received.at(-1)?.headers.authorization).toBeUndefined()
    expect(upstream.received.at(-1)?.headers["x-caller"]).toBe("dave")
  })

  it("basicAuth: 401 with the realm challenge; valid bcrypt credentials pass and are stripped", async () => {
    const missing = await send(port, "GET", "/basic/x")
    expect401(missing, "basic authentication failure: no basic authentication credentials found")
    expect(missing.headers["www-authenticate"]).toBe("Basic realm=\"internal\"")
    const wrong = await send(port, "GET", "/basic/x", { authorization: `Basic ${Buffer.from("ann:nope").toString("base64")}` })
    expect401(wrong, "basic authentication failure: invalid credentials")
    expect(wrong.headers["www-authenticate"]).toBe("Basic realm=\"internal\"")
    const ok = await send(port, "GET", "/basic/x", { authorization: `Basic ${Buffer.from("ann:s3cret").toString("base64")}` })
    expect(ok.status).toBe(200)
    expect(upstream.received.at(-1)?.headers.authorization).toBeUndefined()
    // Authenticated, but the rule only admits ann.
    const sha = await send(port, "GET", "/basic/x", { authorization: `Basic ${Buffer.from("sha:secret").toString("base64")}` })
    expect(sha.status).toBe(403)
  })

  it("apiKey in a header: missing and unknown keys get 401, a valid one exposes its metadata and is stripped", async () => {
    expect401(await send(port, "GET", "/key/x"), "api key authentication failure: no API Key found")
    expect401(await send(port, "GET", "/key/x", { "x-api-key": "agw_sk_wrong" }), "api key authentication failure: invalid credentials")
    const ok = await send(port, "GET", "/key/x", { "x-api-key": "agw_sk_example" })
    expect(ok.status).toBe(200)
    expect(upstream.received.at(-1)?.headers["x-api-key"]).toBeUndefined()
    expect(upstream.received.at(-1)?.headers["x-owner"]).toBe("platform")
  })

  it("a listener-level jwtAuth runs before route selection", async () => {
    expect401(await send(gatewayPort, "GET", "/anything"), "authentication failure: no bearer token found")
    const ok = await send(gatewayPort, "GET", "/anything", { authorization: `Bearer ${await token("erin")}` })
    expect(ok.status).toBe(200)
    expect(upstream.received.at(-1)?.headers.authorization).toBeUndefined()
  })
})
