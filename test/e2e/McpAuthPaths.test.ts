/**
 * Every MCP entry path behind the same authentication (security.md: "every tool entry path
 * behind the same auth"): Streamable HTTP POST/GET/DELETE `/mcp` and the legacy SSE frontend's
 * `GET /sse` + `POST /sse?sessionId=`, with a strict `jwtAuth` on the MCP route. A session
 * opened by one caller can be used neither without a token nor with another caller's token.
 */
import { exportJWK, generateKeyPair, SignJWT } from "jose"
import * as http from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { fixture } from "../support/mcp/Peers.ts"
import { INIT } from "../support/mcp/Raw.ts"

const ISSUER = "https://idp.example"
const keys = await generateKeyPair("ES256")
const JWKS = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: "k", alg: "ES256" }] })
const tokenFor = (sub: string) =>
  new SignJWT({ iss: ISSUER, sub, exp: Math.floor(Date.now() / 1000) + 600 }).setProtectedHeader({ alg: "ES256", kid: "k" }).sign(keys.privateKey)

const CALL = { jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "echo", arguments: { text: "hi" } } }
const NO_TOKEN = "authentication failure: no bearer token found"

interface Reply {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

/** One request; for an event stream only the head is awaited (the stream is then closed). */
const call = (port: number, method: string, target: string, headers: Record<string, string>, body?: unknown) =>
  new Promise<Reply>((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: target, method, headers: body === undefined ? headers : { "content-type": "application/json", ...headers } }, (res) => {
      if (res.headers["content-type"] === "text/event-stream" && method === "GET") {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: "" })
        req.destroy()
        return
      }
      let text = ""
      res.setEncoding("utf8")
      res.on("data", (c: string) => (text += c))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
    })
    req.on("error", reject)
    req.end(body === undefined ? undefined : JSON.stringify(body))
  })

/** `GET /sse`: the endpoint event's URL, and the open stream. */
const openSse = (port: number, headers: Record<string, string>) =>
  new Promise<{ readonly status: number; readonly body: string; readonly endpoint: string | undefined; readonly close: () => void }>((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/sse", headers: { accept: "text/event-stream", ...headers } }, (res) => {
      let text = ""
      res.setEncoding("utf8")
      if (res.statusCode !== 200) {
        res.on("data", (c: string) => (text += c))
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text, endpoint: undefined, close: () => req.destroy() }))
        return
      }
      res.on("data", (c: string) => {
        text += c
        const m = /event: endpoint\ndata: (.*)\n\n/.exec(text)
        if (m !== null) resolve({ status: 200, body: "", endpoint: m[1]!, close: () => req.destroy() })
      })
    })
    req.on("error", reject)
  })

let gw: Running
let port: number
let alice: Record<string, string>
let bob: Record<string, string>

beforeAll(async () => {
  port = await freePort()
  alice = { authorization: `Bearer ${await tokenFor("alice")}` }
  bob = { authorization: `Bearer ${await tokenFor("bob")}` }
  gw = await startGateway(
    `
binds:
- port: $PORT
  listeners:
  - routes:
    - policies:
        jwtAuth: {mode: strict, issuer: ${ISSUER}, jwks: '${JWKS}'}
      backends:
      - mcp:
          targets:
          - name: fx
            stdio: {cmd: "${process.execPath}", args: ["${fixture}", "stdio"]}
`,
    { vars: { PORT: port } }
  )
})

afterAll(async () => {
  await gw?.stop()
})

const ACCEPT = { accept: "application/json, text/event-stream" }

describe("MCP entry paths behind jwtAuth", () => {
  it("Streamable HTTP: initialize, calls, the GET stream and DELETE need the token; another caller's token cannot use or end the session", async () => {
    expect(await call(port, "POST", "/mcp", ACCEPT, INIT)).toMatchObject({ status: 401, body: NO_TOKEN })
    const init = await call(port, "POST", "/mcp", { ...ACCEPT, ...alice }, INIT)
    expect(init.status).toBe(200)
    const session = init.headers["mcp-session-id"]
    expect(typeof session).toBe("string")
    const withSession = { ...ACCEPT, "mcp-session-id": String(session), "mcp-protocol-version": "2025-06-18" }
    expect((await call(port, "POST", "/mcp", { ...withSession, ...alice }, { jsonrpc: "2.0", method: "notifications/initialized" })).status).toBe(202)

    expect(await call(port, "POST", "/mcp", withSession, CALL)).toMatchObject({ status: 401, body: NO_TOKEN })
    expect(await call(port, "GET", "/mcp", { ...withSession, accept: "text/event-stream" })).toMatchObject({ status: 401, body: NO_TOKEN })
    expect(await call(port, "DELETE", "/mcp", withSession)).toMatchObject({ status: 401, body: NO_TOKEN })
    expect((await call(port, "POST", "/mcp", { ...withSession, ...bob }, CALL)).status).toBe(404)
    // Another caller's DELETE is acknowledged without revealing or ending the session…
    expect((await call(port, "DELETE", "/mcp", { ...withSession, ...bob })).status).toBe(202)

    // …which still serves its owner.
    const ok = await call(port, "POST", "/mcp", { ...withSession, ...alice }, CALL)
    expect(ok.status).toBe(200)
    expect(ok.body).toContain("fixture: hi")
  })

  it("legacy SSE: the stream and its message endpoint need the token; another caller's token finds no session", async () => {
    expect(await openSse(port, {})).toMatchObject({ status: 401, body: NO_TOKEN })
    const stream = await openSse(port, alice)
    try {
      expect(stream.status).toBe(200)
      const endpoint = stream.endpoint!
      expect(endpoint).toMatch(/^\/sse\?sessionId=/)
      expect(await call(port, "POST", endpoint, {}, INIT)).toMatchObject({ status: 401, body: NO_TOKEN })
      expect((await call(port, "POST", endpoint, bob, INIT)).status).toBe(404)
      expect((await call(port, "POST", endpoint, alice, INIT)).status).toBe(202)
    } finally {
      stream.close()
    }
  })
})
