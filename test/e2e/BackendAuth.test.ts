/**
 * `backendAuth` over real sockets: the real gateway from YAML, real upstreams. A key in the
 * default and other locations, extra `credentials`, `passthrough` after `jwtAuth`; AWS SigV4
 * checked by a peer that recomputes the signature with aws4 from the request it received
 * (a header a backend policy set after backendAuth included); GCP access and ID tokens from a
 * local token endpoint that verifies the gateway's JWT assertion with the service account's
 * public key (cached, one fetch for concurrent requests); and failures that never show a
 * credential to the client.
 */
import { exportJWK, exportPKCS8, generateKeyPair, jwtVerify, SignJWT } from "jose"
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { send } from "../support/Client.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"
import { verifySigV4 } from "../support/SigV4.ts"

const ISSUER = "https://idp.example"
const userKeys = await generateKeyPair("RS256")
const JWKS = JSON.stringify({ keys: [{ ...(await exportJWK(userKeys.publicKey)), kid: "k1", alg: "RS256" }] })
const userToken = () =>
  new SignJWT({ iss: ISSUER, sub: "alice", exp: Math.floor(Date.now() / 1000) + 600 }).setProtectedHeader({ alg: "RS256", kid: "k1" }).sign(userKeys.privateKey)

const saKeys = await generateKeyPair("RS256", { extractable: true })
const idTokenKeys = await generateKeyPair("RS256")
const EMAIL = "gateway@project.iam.gserviceaccount.com"
const PRIVATE_KEY = await exportPKCS8(saKeys.privateKey)

const AWS = { accessKeyId: "AKIDGATEWAY", secretAccessKey: "aws-secret-do-not-leak", region: "eu-west-1", service: "execute-api" }

const listen = (server: http.Server | net.Server): Promise<number> =>
  new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      resolve(typeof address === "object" && address !== null ? address.port : 0)
    })
  )

const readBody = (req: http.IncomingMessage): Promise<Buffer> =>
  new Promise((resolve) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => resolve(Buffer.concat(chunks)))
  })

/** What the AWS peer concluded about each request. */
interface AwsCheck {
  readonly valid: boolean
  readonly signedHeaders: ReadonlyArray<string>
  readonly body: string
}

const verifyAws = (req: http.IncomingMessage, body: Buffer): AwsCheck => ({ ...verifySigV4(req, body, AWS), body: body.toString("utf8") })

describe("backendAuth", () => {
  let upstream: Upstream
  let awsPeer: http.Server
  const awsChecks: Array<AwsCheck> = []
  let tokenServer: http.Server
  let tokenUri = ""
  const assertions: Array<Record<string, unknown>> = []
  let failingTokens: http.Server
  let dropper: net.Server
  let gw: Running
  let port: number
  let dir: string

  beforeAll(async () => {
    upstream = await startUpstream()
    awsPeer = http.createServer(async (req, res) => {
      const check = verifyAws(req, await readBody(req))
      awsChecks.push(check)
      res.writeHead(check.valid ? 200 : 403, { "content-type": "text/plain" })
      res.end(check.valid ? "signature ok" : "bad signature")
    })
    const awsPort = await listen(awsPeer)
    // A Google-like token endpoint: verifies the assertion, answers slowly so concurrent callers overlap.
    tokenServer = http.createServer(async (req, res) => {
      const form = new URLSearchParams((await readBody(req)).toString("utf8"))
      try {
        if (form.get("grant_type") !== "urn:ietf:params:oauth:grant-type:jwt-bearer") throw new Error("grant")
        const { payload, protectedHeader } = await jwtVerify(form.get("assertion") ?? "", saKeys.publicKey, { issuer: EMAIL, audience: tokenUri, algorithms: ["RS256"] })
        assertions.push({ ...payload, kid: protectedHeader.kid })
        await new Promise((r) => setTimeout(r, 100))
        res.writeHead(200, { "content-type": "application/json" })
        if (typeof payload["target_audience"] === "string") {
          const idToken = await new SignJWT({ aud: payload["target_audience"], iss: "https://accounts.google.com" })
            .setProtectedHeader({ alg: "RS256" })
            .setExpirationTime("1h")
            .sign(idTokenKeys.privateKey)
          res.end(JSON.stringify({ id_token: idToken }))
        } else {
          res.end(JSON.stringify({ access_token: `ya29.access-${assertions.length}`, expires_in: 3599, token_type: "Bearer" }))
        }
      } catch {
        res.writeHead(400, { "content-type": "application/json" })
        res.end(JSON.stringify({ error: "invalid_grant" }))
      }
    })
    tokenUri = `http://127.0.0.1:${await listen(tokenServer)}/token`
    failingTokens = http.createServer((req, res) => {
      req.resume()
      res.writeHead(500, { "content-type": "application/json" })
      res.end(JSON.stringify({ error: "backend_error", echo: "ya29.must-not-leak" }))
    })
    const failingUri = `http://127.0.0.1:${await listen(failingTokens)}/token`
    dropper = net.createServer((socket) => socket.destroy())
    const dropPort = await listen(dropper)
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "backendauth-e2e-"))
    const credential = (uri: string) => JSON.stringify({ type: "service_account", client_email: EMAIL, private_key: PRIVATE_KEY, private_key_id: "sa-key-1", token_uri: uri })
    fs.writeFileSync(path.join(dir, "sa.json"), credential(tokenUri))
    fs.writeFileSync(path.join(dir, "sa-failing.json"), credential(failingUri))
    port = await freePort()
    gw = await startGateway(
      `
frontendPolicies:
  http: {maxBufferSize: 1024}
binds:
- port: $PORT
  listeners:
  - routes:
    - name: key
      matches: [{path: {pathPrefix: /key}}]
      policies:
        backendAuth: {key: sk-route-secret}
      backends: [{host: 127.0.0.1:$UP}]
    - name: located
      matches: [{path: {pathPrefix: /located}}]
      backends:
      - host: 127.0.0.1:$UP
        policies:
          backendAuth:
            key: {value: sk-header-secret, location: {header: {name: x-api-key}}}
            credentials:
            - {location: {queryParameter: {name: sig}}, key: q-secret}
            - {location: {cookie: {name: tenant}}, key: t-secret}
    - name: pass
      matches: [{path: {pathPrefix: /pass}}]
      policies:
        jwtAuth: {mode: strict, issuer: ${ISSUER}, jwks: '$JWKS'}
        backendAuth: {passthrough: {}}
      backends: [{host: 127.0.0.1:$UP}]
    - name: stripped
      matches: [{path: {pathPrefix: /stripped}}]
      policies:
        jwtAuth: {mode: strict, issuer: ${ISSUER}, jwks: '$JWKS'}
      backends: [{host: 127.0.0.1:$UP}]
    - name: aws
      matches: [{path: {pathPrefix: /aws}}]
      backends:
      - host: 127.0.0.1:$AWS_PORT
        policies:
          backendAuth:
            aws: {accessKeyId: ${AWS.accessKeyId}, secretAccessKey: $AWS_SECRET, region: ${AWS.region}, serviceName: ${AWS.service}}
          # Runs after backendAuth: signing happens at send time, so this header is signed too.
          requestHeaderModifier: {set: {x-amz-target: Gateway.Test}}
    - name: gcp
      matches: [{path: {pathPrefix: /gcp}}]
      policies:
        backendAuth: {gcp: {credential: {file: $DIR/sa.json}}}
      backends: [{host: 127.0.0.1:$UP}]
    - name: gcp-id
      matches: [{path: {pathPrefix: /id}}]
      policies:
        backendAuth: {gcp: {type: idToken, credential: {file: $DIR/sa.json}}}
      backends: [{host: 127.0.0.1:$UP}]
    - name: gcp-down
      matches: [{path: {pathPrefix: /down}}]
      policies:
        backendAuth: {gcp: {credential: {file: $DIR/sa-failing.json}}}
      backends: [{host: 127.0.0.1:$UP}]
    - name: unreachable
      matches: [{path: {pathPrefix: /unreachable}}]
      policies:
        backendAuth: {key: sk-unreachable-secret}
      backends: [{host: 127.0.0.1:$DROP}]
`,
      { vars: { PORT: port, UP: upstream.port, JWKS, AWS_PORT: awsPort, AWS_SECRET: AWS.secretAccessKey, DIR: dir, DROP: dropPort } }
    )
  })
  afterAll(async () => {
    await gw.stop()
    await upstream.close()
    for (const s of [awsPeer, tokenServer, failingTokens]) {
      s.closeAllConnections()
      await new Promise<void>((r) => s.close(() => r()))
    }
    await new Promise<void>((r) => dropper.close(() => r()))
    fs.rmSync(dir, { recursive: true, force: true })
  })

  const lastHeaders = () => upstream.received.at(-1)!.headers

  it("key: Authorization: Bearer <key> replaces the client's", async () => {
    const res = await send(port, "GET", "/key/x", { authorization: "Bearer from-client" })
    expect(res.status).toBe(200)
    expect(lastHeaders().authorization).toBe("Bearer sk-route-secret")
  })

  it("key in another header, credentials in the query and a cookie", async () => {
    const res = await send(port, "GET", "/located/x?sig=client&a=1", { cookie: "tenant=client; b=2" })
    expect(res.status).toBe(200)
    const got = upstream.received.at(-1)!
    expect(got.headers["x-api-key"]).toBe("sk-header-secret")
    expect(got.headers.authorization).toBeUndefined()
    expect(got.url).toBe("/located/x?a=1&sig=q-secret")
    expect(got.headers.cookie).toBe("b=2; tenant=t-secret")
  })

  it("passthrough: the token jwtAuth validated and stripped is re-added; without passthrough it stays stripped", async () => {
    const token = await userToken()
    expect((await send(port, "GET", "/pass/x", { authorization: `Bearer ${token}` })).status).toBe(200)
    expect(lastHeaders().authorization).toBe(`Bearer ${token}`)
    expect((await send(port, "GET", "/stripped/x", { authorization: `Bearer ${token}` })).status).toBe(200)
    expect(lastHeaders().authorization).toBeUndefined()
    const rejected = await send(port, "GET", "/pass/x", { authorization: "Bearer forged.token.here" })
    expect(rejected.status).toBe(401)
  })

  it("aws: the peer's own SigV4 computation matches, for a GET with a query and a POST with a body", async () => {
    awsChecks.length = 0
    const get = await send(port, "GET", "/aws/items?b=2&a=1", { "x-amz-security-token": "forged", authorization: "Bearer client" })
    expect({ status: get.status, body: get.body }).toEqual({ status: 200, body: "signature ok" })
    const post = await send(port, "POST", "/aws/items", { "content-type": "application/json" }, { body: "{\"n\":1}" })
    expect({ status: post.status, body: post.body }).toEqual({ status: 200, body: "signature ok" })
    expect(awsChecks.map((c) => c.valid)).toEqual([true, true])
    // The header the backend's requestHeaderModifier set after backendAuth is covered by the signature.
    expect(awsChecks[0]!.signedHeaders).toEqual(["host", "x-amz-date", "x-amz-target"])
    expect(awsChecks[1]!.signedHeaders).toEqual(["content-type", "host", "x-amz-date", "x-amz-target"])
    expect(awsChecks[1]!.body).toBe("{\"n\":1}")
  })

  it("aws: a body over maxBufferSize cannot be hashed for a non-S3 service: 413, nothing sent", async () => {
    awsChecks.length = 0
    const res = await send(port, "POST", "/aws/big", { "content-type": "application/octet-stream" }, { body: "x".repeat(4096) })
    expect({ status: res.status, body: res.body }).toEqual({ status: 413, body: "request body too large" })
    expect(awsChecks).toEqual([])
  })

  it("gcp access token: the assertion verifies with the account's key; one fetch for concurrent requests, then cached", async () => {
    const before = assertions.length
    const replies = await Promise.all([1, 2, 3, 4].map(() => send(port, "GET", "/gcp/x")))
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200])
    expect(assertions.length).toBe(before + 1)
    const assertion = assertions.at(-1)!
    expect(assertion["scope"]).toBe("https://www.googleapis.com/auth/cloud-platform")
    expect(assertion["kid"]).toBe("sa-key-1")
    const token = `Bearer ya29.access-${before + 1}`
    expect(upstream.received.slice(-4).map((r) => r.headers.authorization)).toEqual([token, token, token, token])
    expect((await send(port, "GET", "/gcp/y")).status).toBe(200)
    expect(assertions.length).toBe(before + 1)
    expect(lastHeaders().authorization).toBe(token)
  })

  it("gcp ID token: target_audience defaults to https://<destination host>", async () => {
    const res = await send(port, "GET", "/id/x")
    expect(res.status).toBe(200)
    const assertion = assertions.at(-1)!
    expect(assertion["target_audience"]).toBe("https://127.0.0.1")
    expect(assertion["sub"]).toBe(EMAIL)
    const bearer = String(lastHeaders().authorization)
    expect(bearer.startsWith("Bearer ey")).toBe(true)
    const { payload } = await jwtVerify(bearer.slice("Bearer ".length), idTokenKeys.publicKey)
    expect(payload.aud).toBe("https://127.0.0.1")
  })

  it("failures never show a credential: 500 `backend authentication failed`, 503 `upstream call failed`", async () => {
    const before = upstream.received.length
    const down = await send(port, "GET", "/down/x")
    expect({ status: down.status, body: down.body }).toEqual({ status: 500, body: "backend authentication failed" })
    expect(upstream.received.length).toBe(before)
    const unreachable = await send(port, "GET", "/unreachable/x")
    expect({ status: unreachable.status, body: unreachable.body }).toEqual({ status: 503, body: "upstream call failed" })
    const logged = gw.logs.join("\n")
    for (const secret of ["sk-route-secret", "sk-header-secret", "sk-unreachable-secret", "q-secret", AWS.secretAccessKey, "ya29.", "PRIVATE KEY"]) {
      expect(logged).not.toContain(secret)
    }
  })
})
