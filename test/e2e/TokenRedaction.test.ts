/**
 * Bearer tokens never reach the access log (security.md §4: "strip it before forwarding and
 * redact it in logs"): not from the Authorization header, not from a query parameter, not when
 * the token is rejected, and not through access-log CEL fields that dump the request headers,
 * the URI or the claims (`jwt.rawToken` is not exposed to CEL at all); API keys in the query too.
 */
import { exportJWK, generateKeyPair, SignJWT } from "jose"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { send } from "../support/Client.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"

type SigningKey = Awaited<ReturnType<typeof generateKeyPair>>["privateKey"]

const ISSUER = "https://idp.example"
const keys = await generateKeyPair("ES256")
const other = await generateKeyPair("ES256")
const JWKS = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: "k", alg: "ES256" }] })
const sign = (key: SigningKey, sub: string) =>
  new SignJWT({ iss: ISSUER, sub, exp: Math.floor(Date.now() / 1000) + 600 }).setProtectedHeader({ alg: "ES256", kid: "k" }).sign(key)

let upstream: Upstream
let gw: Running
let port: number

beforeAll(async () => {
  upstream = await startUpstream()
  port = await freePort()
  gw = await startGateway(
    `
frontendPolicies:
  accessLog:
    add:
      all.headers: 'toJson(request.headers)'
      all.uri: 'request.uri'
      all.claims: 'toJson(jwt)'
binds:
- port: $PORT
  listeners:
  - routes:
    - name: header
      matches: [{path: {pathPrefix: /header}}]
      policies:
        jwtAuth: {mode: strict, issuer: ${ISSUER}, jwks: '${JWKS}'}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: query
      matches: [{path: {pathPrefix: /query}}]
      policies:
        jwtAuth: {mode: strict, issuer: ${ISSUER}, jwks: '${JWKS}', location: {queryParameter: {name: access_token}}}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: apikey
      matches: [{path: {pathPrefix: /apikey}}]
      policies:
        apiKey: {mode: strict, keys: [{key: k-right-0123456789}], location: {queryParameter: {name: key}}}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
`,
    { vars: { PORT: port, UPSTREAM: upstream.port } }
  )
})

afterAll(async () => {
  await gw?.stop()
  await upstream?.close()
})

const linesFor = async (marker: string, count: number): Promise<Array<string>> => {
  for (let i = 0; i < 100; i++) {
    const lines = gw.logs.filter((l) => l.includes(marker))
    if (lines.length >= count) return lines
    await new Promise((r) => setTimeout(r, 10))
  }
  return gw.logs.filter((l) => l.includes(marker))
}

describe("bearer tokens are not logged", () => {
  it("header and query tokens, valid or rejected, appear in no log line; the claims do", async () => {
    const good = await sign(keys.privateKey, "alice")
    const forged = await sign(other.privateKey, "mallory")
    expect((await send(port, "GET", "/header/ok", { authorization: `Bearer ${good}` })).status).toBe(200)
    expect((await send(port, "GET", "/header/bad", { authorization: `Bearer ${forged}` })).status).toBe(401)
    expect((await send(port, "GET", `/query/ok?a=1&access_token=${good}`)).status).toBe(200)
    expect((await send(port, "GET", `/query/bad?access_token=${forged}`)).status).toBe(401)
    expect(upstream.received.at(-1)?.url).toBe("/query/ok?a=1")
    const header = await linesFor("/header/", 2)
    const query = await linesFor("/query/", 2)
    expect(header).toHaveLength(2)
    expect(query).toHaveLength(2)
    for (const line of [...header, ...query]) {
      expect(line).not.toContain(good)
      expect(line).not.toContain(forged)
      // Not even the signature part on its own.
      expect(line).not.toContain(good.split(".")[2]!)
    }
    expect(header.find((l) => l.includes("/header/ok"))).toContain("alice")
    expect(query.find((l) => l.includes("/query/ok"))).toContain("a=1")
  })

  it("an API key in the query, right or wrong, appears in no log line", async () => {
    expect((await send(port, "GET", "/apikey/ok?key=k-right-0123456789")).status).toBe(200)
    expect((await send(port, "GET", "/apikey/bad?key=k-wrong-0123456789")).status).toBe(401)
    const lines = await linesFor("/apikey/", 2)
    expect(lines).toHaveLength(2)
    for (const line of lines) expect(line).not.toMatch(/k-(right|wrong)-0123456789/)
  })
})
