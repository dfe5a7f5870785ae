/**
 * Per-target MCP policies over real sockets: `backendAuth` (key, passthrough) and
 * `requestHeaderModifier` on one target's requests only (seen by a recording proxy in front of
 * each Streamable HTTP fixture), the upstream session's DELETE included (after the client's
 * DELETE, after idle expiry, which has no downstream request, and at the end of each stateless
 * request, with that request's headers and JWT), `backendAuth: {aws}` on
 * Streamable HTTP, SSE and OpenAPI targets (a proxy recomputes each SigV4 signature with aws4
 * from the request it received and refuses a wrong one), `backendTLS` per target, `{backend:
 * name}` targets taking the named backend's host and `backendTLS`, and target-level
 * `mcpAuthorization` (a top-level policy targeting the backend's `section: <target>`)
 * accumulating with the route's rules.
 */
import { exportJWK, generateKeyPair, SignJWT } from "jose"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import { connectClient } from "../support/McpClient.ts"
import { fixture, startFixture, tlsDir, waitFor } from "../support/mcp/Peers.ts"
import { type SigV4Check, verifySigV4 } from "../support/SigV4.ts"

const BOTH = "application/json, text/event-stream"

const AWS = { accessKeyId: "AKIDMCPTARGET", secretAccessKey: "mcp-target-secret", region: "eu-west-1", service: "execute-api" }


interface Seen {
  readonly method: string
  readonly url: string
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
  /** With `verifyAws`: the signature check (a request failing it got 403 and went no further). */
  readonly aws?: SigV4Check
}

/**
 * A plain HTTP proxy in front of a fixture that records every request it forwards; with
 * `verifyAws`, one whose SigV4 signature does not verify is answered 403 instead.
 */
const recordingProxy = async (upstreamPort: number, verifyAws = false): Promise<{ port: number; seen: Array<Seen>; close: () => Promise<void> }> => {
  const seen: Array<Seen> = []
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const body = Buffer.concat(chunks)
      const aws = verifyAws ? verifySigV4(req, body, AWS) : undefined
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: body.toString("utf8"), ...(aws === undefined ? {} : { aws }) })
      if (aws !== undefined && !aws.valid) {
        res.writeHead(403, { "content-type": "text/plain" })
        res.end("bad signature")
        return
      }
      const out = http.request({ host: "127.0.0.1", port: upstreamPort, method: req.method, path: req.url, headers: req.headers }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers)
        up.pipe(res)
      })
      out.on("error", () => res.destroy())
      out.end(body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  return {
    port,
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}

/** The recorded POSTs carrying a `tools/call`. */
const toolCalls = (seen: ReadonlyArray<Seen>) => seen.filter((s) => s.body.includes(`"method":"tools/call"`))

const connectWithToken = async (url: string, bearer: string) => {
  const client = new Client({ name: "test", version: "1.0.0" })
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${bearer}` } } })
  await client.connect(transport)
  return { client, transport }
}

/** The recorded DELETEs of upstream sessions. */
const deletes = (seen: ReadonlyArray<Seen>) => seen.filter((s) => s.method === "DELETE")

const AWS_AUTH = `{aws: {accessKeyId: ${AWS.accessKeyId}, secretAccessKey: ${AWS.secretAccessKey}, region: ${AWS.region}, serviceName: ${AWS.service}}}`

const keys = await generateKeyPair("RS256")
const JWKS = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: "k1", alg: "RS256" }] })
const token = await new SignJWT({ iss: "issuer.test", aud: "aud.test", sub: "alice", exp: Math.floor(Date.now() / 1000) + 600 })
  .setProtectedHeader({ alg: "RS256", kid: "k1" })
  .sign(keys.privateKey)

/** One operation, `whoami`, answered by the REST server with the headers it got. */
const OPENAPI = JSON.stringify(JSON.stringify({
  openapi: "3.0.0",
  info: { title: "rest", version: "1" },
  paths: { "/whoami": { get: { operationId: "whoami", responses: { "200": { description: "ok" } } } } }
}))

const config = (jwks: string) => `
backends:
- name: rest
  host: 127.0.0.1:$REST
  policies:
    requestHeaderModifier: {set: {x-via: rest}}
- name: secure
  host: localhost:$TLS
  policies:
    backendTLS: {root: ${path.join(tlsDir, "ca.pem")}}
- name: awsrest
  host: 127.0.0.1:$AREST
  policies:
    backendAuth: ${AWS_AUTH}
- name: keyed
  policies:
    # Set in the backend phase: reaches every target, although the client's own credential does not.
    backendAuth: {key: backend-secret}
  mcp:
    targets:
    - name: ka
      mcp: {host: "http://127.0.0.1:$BK/mcp"}
    - name: kb
      mcp: {host: "http://127.0.0.1:$BK/mcp"}
- name: signed
  policies:
    # On the MCP backend: aws signs each target's own requests, unless the target has a backendAuth of its own.
    backendAuth: ${AWS_AUTH}
  mcp:
    targets:
    - name: h
      mcp: {host: "http://127.0.0.1:$BH/mcp"}
    - name: k
      mcp: {host: "http://127.0.0.1:$BK/mcp"}
      policies: {backendAuth: {key: own-key}}
- name: fed
  mcp:
    targets:
    - name: a
      mcp: {host: "http://127.0.0.1:$PA/mcp"}
      policies:
        backendAuth: {key: secret-a}
        requestHeaderModifier: {set: {x-target: a}, remove: [x-drop]}
    - name: b
      mcp: {host: "http://127.0.0.1:$PB/mcp"}
    - name: local
      stdio: {cmd: "${process.execPath}", args: ["${fixture}", "stdio"], env: {FIXTURE_NAME: local}}
policies:
- name: {name: hide-b-echo, namespace: default}
  target: {backend: {backend: {name: fed, namespace: default, section: b}}}
  policy:
    mcpAuthorization: {rules: [{deny: 'mcp.tool.name == "echo"'}]}
- name: {name: hide-local-flood, namespace: default}
  target: {backend: {backend: {name: fed, namespace: default, section: local}}}
  policy:
    mcpAuthorization: {rules: [{deny: 'mcp.tool.name == "flood"'}]}
binds:
- port: $PORT
  listeners:
  - routes:
    - name: fed
      matches: [{path: {pathPrefix: /fed}}]
      policies:
        mcpAuthorization: {rules: [{deny: 'mcp.tool.name == "pid"'}]}
      backends: [{backend: fed}]
    - name: single
      matches: [{path: {pathPrefix: /single}}]
      backends:
      - mcp:
          targets:
          - name: only
            mcp: {host: "http://127.0.0.1:$PB/mcp"}
    - name: signed
      matches: [{path: {pathPrefix: /signed}}]
      backends: [{backend: signed}]
    - name: keyed
      matches: [{path: {pathPrefix: /keyed}}]
      backends: [{backend: keyed}]
    - name: tls
      matches: [{path: {pathPrefix: /tls}}]
      backends:
      - mcp:
          targets:
          - name: s
            mcp: {host: "https://localhost:$TLS/mcp"}
            policies:
              backendTLS: {root: ${path.join(tlsDir, "ca.pem")}}
          - name: p
            mcp: {host: "http://127.0.0.1:$PB/mcp"}
    - name: untrusted
      matches: [{path: {pathPrefix: /untrusted}}]
      backends:
      - mcp:
          targets:
          - name: s
            mcp: {host: "https://localhost:$TLS/mcp"}
    - name: named
      matches: [{path: {pathPrefix: /named}}]
      backends:
      - mcp:
          targets:
          - name: s
            mcp: {backend: secure, path: /mcp}
    - name: openapi
      matches: [{path: {pathPrefix: /openapi}}]
      backends:
      - mcp:
          targets:
          - name: api
            openapi: {schema: ${OPENAPI}, backend: rest}
    - name: jwt
      matches: [{path: {pathPrefix: /jwt}}]
      policies:
        jwtAuth: {issuer: issuer.test, audiences: [aud.test], jwks: {file: ${jwks}}}
      backends:
      - mcp:
          targets:
          - name: a
            mcp: {host: "http://127.0.0.1:$PA/mcp"}
            policies: {backendAuth: {passthrough: {}}}
          - name: b
            mcp: {host: "http://127.0.0.1:$PB/mcp"}
    - name: aws
      matches: [{path: {pathPrefix: /aws}}]
      backends:
      - mcp:
          targets:
          - name: h
            mcp: {host: "http://127.0.0.1:$AH/mcp"}
            policies:
              backendAuth: ${AWS_AUTH}
              # After backendAuth: the transport signs what it sends, so this header is signed too.
              requestHeaderModifier: {set: {x-amz-target: Mcp.Test}}
          - name: s
            sse: {host: "http://127.0.0.1:$AS/sse"}
            policies: {backendAuth: ${AWS_AUTH}}
          - name: api
            openapi: {schema: ${OPENAPI}, backend: awsrest}
`

describe("per-target MCP policies", () => {
  let alpha: { port: number; child: ChildProcess }
  let beta: { port: number; child: ChildProcess }
  let secure: { port: number; child: ChildProcess }
  let sierra: { port: number; child: ChildProcess }
  let pa: Awaited<ReturnType<typeof recordingProxy>>
  let pb: Awaited<ReturnType<typeof recordingProxy>>
  /** Verifying proxies in front of alpha (Streamable HTTP), sierra (SSE) and the REST server. */
  let awsHttp: Awaited<ReturnType<typeof recordingProxy>>
  let awsSse: Awaited<ReturnType<typeof recordingProxy>>
  let awsRest: Awaited<ReturnType<typeof recordingProxy>>
  /** In front of alpha (verifying) and beta (recording) for the backend-level aws of `signed`. */
  let backendAws: Awaited<ReturnType<typeof recordingProxy>>
  let ownKey: Awaited<ReturnType<typeof recordingProxy>>
  let gw: Running
  let port: number
  let dir: string
  let rest: http.Server
  beforeAll(async () => {
    rest = http.createServer((req, res) => {
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify({ path: req.url, via: req.headers["x-via"] ?? null }))
    })
    await new Promise<void>((resolve) => rest.listen(0, "127.0.0.1", resolve))
    const restAddress = rest.address()
    const restPort = typeof restAddress === "object" && restAddress !== null ? restAddress.port : 0
    ;[alpha, beta, secure, sierra] = await Promise.all([
      startFixture("http", "alpha"),
      startFixture("http", "beta"),
      startFixture("http", "secure", true),
      startFixture("sse", "sierra")
    ])
    pa = await recordingProxy(alpha.port)
    pb = await recordingProxy(beta.port)
    awsHttp = await recordingProxy(alpha.port, true)
    awsSse = await recordingProxy(sierra.port, true)
    awsRest = await recordingProxy(restPort, true)
    backendAws = await recordingProxy(alpha.port, true)
    ownKey = await recordingProxy(beta.port)
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "agw-mcp-target-"))
    const jwks = path.join(dir, "jwks.json")
    fs.writeFileSync(jwks, JWKS)
    port = await freePort()
    gw = await startGateway(config(jwks), {
      vars: { PORT: port, PA: pa.port, PB: pb.port, TLS: secure.port, REST: restPort, AH: awsHttp.port, AS: awsSse.port, AREST: awsRest.port, BH: backendAws.port, BK: ownKey.port }
    })
  })
  afterAll(async () => {
    await gw.stop()
    for (const p of [pa, pb, awsHttp, awsSse, awsRest, backendAws, ownKey]) await p.close()
    await new Promise<void>((resolve) => rest.close(() => resolve()))
    for (const p of [alpha, beta, secure, sierra]) p.child.kill()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it("backendAuth and requestHeaderModifier shape only their target's requests", async () => {
    const { client } = await connectClient(gw.url(port, "/fed/mcp"))
    pa.seen.length = 0
    pb.seen.length = 0
    expect((await client.callTool({ name: "a_echo", arguments: { text: "x" } })).content).toEqual([{ type: "text", text: "alpha: x" }])
    expect((await client.callTool({ name: "b_add-tool", arguments: { name: "n" } })).content).toEqual([{ type: "text", text: "added" }])
    const [toA] = toolCalls(pa.seen)
    const [toB] = toolCalls(pb.seen)
    expect(toA?.headers["authorization"]).toBe("Bearer secret-a")
    expect(toA?.headers["x-target"]).toBe("a")
    expect(toB?.headers["authorization"]).toBeUndefined()
    expect(toB?.headers["x-target"]).toBeUndefined()
    // Every request to the target carries them (initialize and notifications too), not only calls.
    expect(pa.seen.length).toBeGreaterThan(0)
    await client.close()
    const init = await fetch(gw.url(port, "/fed/mcp"), {
      method: "POST",
      headers: { accept: BOTH, "content-type": "application/json", "x-drop": "gone", authorization: "Bearer client" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } } })
    })
    expect(init.status).toBe(200)
    await init.text()
    const lastA = pa.seen.at(-1)!
    const lastB = pb.seen.at(-1)!
    expect(lastA.body).toContain(`"method":"initialize"`)
    expect(lastA.headers["authorization"]).toBe("Bearer secret-a")
    expect(lastA.headers["x-drop"]).toBeUndefined()
    // The other target gets the downstream headers as they are, but for the client's credential:
    // a federating backend never hands one server's token to the others.
    expect(lastB.headers["authorization"]).toBeUndefined()
    expect(lastB.headers["x-drop"]).toBe("gone")
  })

  it("the client's SEP-2243 mirror headers are checked, not forwarded: the target is sent another name", async () => {
    pa.seen.length = 0
    const { client, transport } = await connectClient(gw.url(port, "/fed/mcp"))
    const res = await fetch(gw.url(port, "/fed/mcp"), {
      method: "POST",
      headers: {
        accept: BOTH,
        "content-type": "application/json",
        "mcp-session-id": transport.sessionId!,
        "mcp-protocol-version": "2025-11-25",
        "mcp-method": "tools/call",
        "mcp-name": "a_echo",
        "mcp-param-text": "m"
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 5, method: "tools/call", params: { name: "a_echo", arguments: { text: "m" } } })
    })
    expect(res.status).toBe(200)
    await res.text()
    await client.close()
    const [call] = toolCalls(pa.seen)
    expect(call?.body).toContain(`"name":"echo"`)
    expect([call?.headers["mcp-method"], call?.headers["mcp-name"], call?.headers["mcp-param-text"]]).toEqual([undefined, undefined, undefined])
  })

  it("a federating backend's own backendAuth key reaches every target; the client's credential does not", async () => {
    ownKey.seen.length = 0
    const { client, transport } = await connectWithToken(gw.url(port, "/keyed/mcp"), "client-token")
    expect((await client.callTool({ name: "ka_echo", arguments: { text: "a" } })).content).toEqual([{ type: "text", text: "beta: a" }])
    expect((await client.callTool({ name: "kb_echo", arguments: { text: "b" } })).content).toEqual([{ type: "text", text: "beta: b" }])
    await transport.terminateSession()
    await client.close()
    expect(deletes(ownKey.seen)).toHaveLength(2)
    expect(new Set(ownKey.seen.map((s) => s.headers["authorization"]))).toEqual(new Set(["Bearer backend-secret"]))
  })

  it("one target: the gateway is transparent and the client's own credential reaches that server", async () => {
    pb.seen.length = 0
    const { client } = await connectWithToken(gw.url(port, "/single/mcp"), "for-the-server")
    expect((await client.callTool({ name: "echo", arguments: { text: "x" } })).content).toEqual([{ type: "text", text: "beta: x" }])
    await client.close()
    expect(toolCalls(pb.seen)[0]?.headers["authorization"]).toBe("Bearer for-the-server")
  })

  it("passthrough re-adds the validated JWT for its target only", async () => {
    const { client } = await connectWithToken(gw.url(port, "/jwt/mcp"), token)
    pa.seen.length = 0
    pb.seen.length = 0
    await client.callTool({ name: "a_echo", arguments: { text: "1" } })
    await client.callTool({ name: "b_echo", arguments: { text: "2" } })
    expect(toolCalls(pa.seen)[0]?.headers["authorization"]).toBe(`Bearer ${token}`)
    // jwtAuth consumed the credential: the target without passthrough does not get it.
    expect(toolCalls(pb.seen)[0]?.headers["authorization"]).toBeUndefined()
    await client.close()
  })

  it("target-level mcpAuthorization accumulates with the route's rules", async () => {
    const { client } = await connectClient(gw.url(port, "/fed/mcp"))
    const names = (await client.listTools()).tools.map((t) => t.name)
    // Route: no pid anywhere. Target b: no echo. Target local: no flood.
    expect(names.filter((n) => !n.endsWith("_n"))).toEqual(["a_echo", "a_add-tool", "a_flood", "b_add-tool", "b_flood", "local_echo", "local_add-tool"])
    await expect(client.callTool({ name: "b_echo", arguments: { text: "x" } })).rejects.toThrow("Unknown tool: b_echo")
    await expect(client.callTool({ name: "a_pid" })).rejects.toThrow("Unknown tool: a_pid")
    await expect(client.callTool({ name: "local_flood", arguments: { bytes: 1 } })).rejects.toThrow("Unknown tool: local_flood")
    expect((await client.callTool({ name: "local_echo", arguments: { text: "ok" } })).content).toEqual([{ type: "text", text: "local: ok" }])
    await client.close()
    // The raw answer to a denied call: HTTP 400, JSON-RPC -32602.
    const init = await fetch(gw.url(port, "/fed/mcp"), {
      method: "POST",
      headers: { accept: BOTH, "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } } })
    })
    const sid = init.headers.get("mcp-session-id")!
    await init.text()
    const denied = await fetch(gw.url(port, "/fed/mcp"), {
      method: "POST",
      headers: { accept: BOTH, "content-type": "application/json", "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "b_echo", arguments: { text: "x" } } })
    })
    expect(denied.status).toBe(400)
    expect(await denied.json()).toEqual({ jsonrpc: "2.0", id: 2, error: { code: -32602, message: "Unknown tool: b_echo" } })
  })

  it("backendTLS applies per target: its own root for the https target, plain HTTP for the other", async () => {
    const { client } = await connectClient(gw.url(port, "/tls/mcp"))
    expect((await client.callTool({ name: "s_echo", arguments: { text: "tls" } })).content).toEqual([{ type: "text", text: "secure: tls" }])
    expect((await client.callTool({ name: "p_echo", arguments: { text: "plain" } })).content).toEqual([{ type: "text", text: "beta: plain" }])
    await client.close()
  })

  it("an https target without a root that trusts it fails to initialize", async () => {
    const res = await fetch(gw.url(port, "/untrusted/mcp"), {
      method: "POST",
      headers: { accept: BOTH, "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } } })
    })
    expect(res.status).toBe(500)
    expect(await res.json()).toEqual({ jsonrpc: "2.0", id: 1, error: { code: -32603, message: "failed to send message: s: upstream connection failed" } })
  })

  it("a {backend: name} target uses the named backend's host and backendTLS", async () => {
    const { client } = await connectClient(gw.url(port, "/named/mcp"))
    expect(client.getServerVersion()?.name).toBe("secure")
    expect((await client.callTool({ name: "echo", arguments: { text: "via backend" } })).content).toEqual([{ type: "text", text: "secure: via backend" }])
    await client.close()
  })

  it("an OpenAPI target through a named backend calls its host with its policies", async () => {
    const { client } = await connectClient(gw.url(port, "/openapi/mcp"))
    const result = await client.callTool({ name: "whoami", arguments: {} })
    expect(result.structuredContent).toEqual({ path: "/whoami", via: "rest" })
    await client.close()
  })

  it("the client's DELETE: each upstream session's DELETE carries its target's policies and the forwarded headers", async () => {
    const client = new Client({ name: "test", version: "1.0.0" })
    const transport = new StreamableHTTPClientTransport(new URL(gw.url(port, "/fed/mcp")), { requestInit: { headers: { "x-drop": "gone", "x-client": "c1" } } })
    await client.connect(transport)
    pa.seen.length = 0
    pb.seen.length = 0
    await transport.terminateSession()
    // The gateway answers the client's DELETE once the upstream DELETEs are answered.
    const [toA] = deletes(pa.seen)
    const [toB] = deletes(pb.seen)
    expect(toA?.headers["mcp-session-id"]).toMatch(/^[0-9a-f-]{36}$/)
    expect(toA?.headers["authorization"]).toBe("Bearer secret-a")
    expect(toA?.headers["x-target"]).toBe("a")
    expect(toA?.headers["x-drop"]).toBeUndefined()
    expect(toA?.headers["x-client"]).toBe("c1")
    expect(toB?.headers["mcp-session-id"]).toMatch(/^[0-9a-f-]{36}$/)
    expect(toB?.headers["authorization"]).toBeUndefined()
    expect(toB?.headers["x-target"]).toBeUndefined()
    expect(toB?.headers["x-drop"]).toBe("gone")
    await client.close()
  })

  it("passthrough: the DELETE after the client's DELETE carries the JWT the DELETE presented", async () => {
    const { client, transport } = await connectWithToken(gw.url(port, "/jwt/mcp"), token)
    pa.seen.length = 0
    pb.seen.length = 0
    await transport.terminateSession()
    expect(deletes(pa.seen).map((d) => d.headers["authorization"])).toEqual([`Bearer ${token}`])
    expect(deletes(pb.seen).map((d) => d.headers["authorization"])).toEqual([undefined])
    await client.close()
  })

  it("aws: every request to a signing target carries a SigV4 signature its peer recomputes (GET and DELETE included)", async () => {
    for (const p of [awsHttp, awsSse, awsRest]) p.seen.length = 0
    const client = new Client({ name: "test", version: "1.0.0" })
    // The client's own credential is dropped: the signer owns Authorization.
    const transport = new StreamableHTTPClientTransport(new URL(gw.url(port, "/aws/mcp")), {
      requestInit: { headers: { authorization: "Bearer client", "x-client-tag": "from-client" } }
    })
    await client.connect(transport)
    expect((await client.callTool({ name: "h_echo", arguments: { text: "signed" } })).content).toEqual([{ type: "text", text: "alpha: signed" }])
    expect((await client.callTool({ name: "s_echo", arguments: { text: "signed" } })).content).toEqual([{ type: "text", text: "sierra: signed" }])
    expect((await client.callTool({ name: "api_whoami", arguments: {} })).structuredContent).toEqual({ path: "/whoami", via: null })
    // The upstream GET stream opens in the background after initialize.
    expect(await waitFor(() => awsHttp.seen.some((s) => s.method === "GET"))).toBe(true)
    await transport.terminateSession()
    await client.close()
    // A request whose signature did not verify would have been refused (and its call failed).
    for (const p of [awsHttp, awsSse, awsRest]) expect(p.seen.map((s) => [s.method, s.aws?.valid])).toEqual(p.seen.map((s) => [s.method, true]))
    expect(new Set(awsHttp.seen.map((s) => s.method))).toEqual(new Set(["POST", "GET", "DELETE"]))
    expect(new Set(awsSse.seen.map((s) => s.method))).toEqual(new Set(["GET", "POST"]))
    // The SSE target's GET opens while the client's initialize is served: it carries that request's forwarded headers.
    const sseGet = awsSse.seen.find((s) => s.method === "GET")
    expect(sseGet?.headers["x-client-tag"]).toBe("from-client")
    expect(sseGet?.headers["authorization"]).toMatch(/^AWS4-HMAC-SHA256 /)
    expect(awsRest.seen.map((s) => `${s.method} ${s.url}`)).toEqual(["GET /whoami"])
    const [httpCall] = toolCalls(awsHttp.seen)
    expect(httpCall?.body).toContain(`"text":"signed"`)
    expect(httpCall?.aws?.signedHeaders).toEqual(["content-type", "host", "x-amz-date", "x-amz-target"])
    expect(deletes(awsHttp.seen)[0]?.aws?.signedHeaders).toEqual(["host", "x-amz-date", "x-amz-target"])
    const [sseCall] = toolCalls(awsSse.seen)
    expect(sseCall?.url).toMatch(/^\/messages\?sessionId=/)
    expect(sseCall?.aws?.signedHeaders).toEqual(["content-type", "host", "x-amz-date"])
  })

  it("aws on the MCP backend signs each target's own requests; a target with its own backendAuth keeps it", async () => {
    backendAws.seen.length = 0
    ownKey.seen.length = 0
    const client = new Client({ name: "test", version: "1.0.0" })
    const transport = new StreamableHTTPClientTransport(new URL(gw.url(port, "/signed/mcp")), { requestInit: { headers: { authorization: "Bearer client" } } })
    await client.connect(transport)
    expect((await client.callTool({ name: "h_echo", arguments: { text: "by backend" } })).content).toEqual([{ type: "text", text: "alpha: by backend" }])
    expect((await client.callTool({ name: "k_echo", arguments: { text: "by key" } })).content).toEqual([{ type: "text", text: "beta: by key" }])
    await transport.terminateSession()
    await client.close()
    expect(backendAws.seen.length).toBeGreaterThan(0)
    for (const s of backendAws.seen) expect([s.method, s.aws?.valid]).toEqual([s.method, true])
    expect(new Set(backendAws.seen.map((s) => s.method))).toEqual(new Set(["POST", "GET", "DELETE"]))
    // Signed over the body each target was sent, not over the client's request.
    expect(toolCalls(backendAws.seen)[0]?.body).toContain(`"name":"echo"`)
    expect(ownKey.seen.length).toBeGreaterThan(0)
    for (const s of ownKey.seen) {
      expect(s.headers["authorization"]).toBe("Bearer own-key")
      expect(s.headers["x-amz-date"]).toBeUndefined()
    }
  })
})

/**
 * Two SDK fixtures (alpha, beta), each behind a recording proxy (`pa`, `pb`), and a gateway on
 * `config(jwks)` with `$PORT`, `$PA`, `$PB` filled in; `stop` undoes all of it.
 */
const recordedPair = async (name: string, config: (jwks: string) => string) => {
  const [alpha, beta] = await Promise.all([startFixture("http", "alpha"), startFixture("http", "beta")])
  const pa = await recordingProxy(alpha.port)
  const pb = await recordingProxy(beta.port)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `agw-mcp-${name}-`))
  const jwks = path.join(dir, "jwks.json")
  fs.writeFileSync(jwks, JWKS)
  const port = await freePort()
  const gw = await startGateway(config(jwks), { vars: { PORT: port, PA: pa.port, PB: pb.port } })
  const stop = async () => {
    await gw.stop()
    await pa.close()
    await pb.close()
    for (const p of [alpha, beta]) p.child.kill()
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return { pa, pb, gw, port, stop }
}

/**
 * The pair behind `jwtAuth`: target `a` with a key and header edits (`x-target` set, `x-drop`
 * removed), target `j` with passthrough; `settings` goes above `binds`, `mcp` into the backend.
 */
const jwtPairConfig = (jwks: string, o: { readonly settings: string; readonly mcp: string }) => `
${o.settings}
binds:
- port: $PORT
  listeners:
  - routes:
    - policies:
        jwtAuth: {issuer: issuer.test, audiences: [aud.test], jwks: {file: ${jwks}}}
      backends:
      - mcp:
          ${o.mcp}
          targets:
          - name: a
            mcp: {host: "http://127.0.0.1:$PA/mcp"}
            policies:
              backendAuth: {key: secret-a}
              requestHeaderModifier: {set: {x-target: a}, remove: [x-drop]}
          - name: j
            mcp: {host: "http://127.0.0.1:$PB/mcp"}
            policies: {backendAuth: {passthrough: {}}}
`

type RecordedPair = Awaited<ReturnType<typeof recordedPair>>

/** A recorded pair for the enclosing describe: started before its tests, stopped after them. */
const pairFor = (name: string, config: (jwks: string) => string): (() => RecordedPair) => {
  let pair: RecordedPair | undefined
  beforeAll(async () => {
    pair = await recordedPair(name, config)
  })
  afterAll(() => pair?.stop())
  return () => {
    if (pair === undefined) throw new Error(`the ${name} pair is not running`)
    return pair
  }
}

describe("the upstream session's DELETE after idle expiry (no downstream request)", () => {
  const pair = pairFor("idle", (jwks) => jwtPairConfig(jwks, { settings: "config:\n  mcp: {sessionTtl: 1s}", mcp: "" }))

  it("key and header edits are sent; passthrough has no request to take a JWT from and sends none", async () => {
    const { pa, pb, gw, port } = pair()
    // No GET stream from the client: the session idles out.
    const init = await fetch(gw.url(port, "/mcp"), {
      method: "POST",
      headers: { accept: BOTH, "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } } })
    })
    expect(init.status).toBe(200)
    await init.text()
    // While the session lived, passthrough sent the JWT.
    expect(pb.seen.find((s) => s.body.includes(`"method":"initialize"`))?.headers["authorization"]).toBe(`Bearer ${token}`)
    expect(await waitFor(() => deletes(pa.seen).length > 0 && deletes(pb.seen).length > 0)).toBe(true)
    const [toA] = deletes(pa.seen)
    const [toJ] = deletes(pb.seen)
    expect(toA?.headers["mcp-session-id"]).toMatch(/^[0-9a-f-]{36}$/)
    expect(toA?.headers["authorization"]).toBe("Bearer secret-a")
    expect(toA?.headers["x-target"]).toBe("a")
    expect(toJ?.headers["mcp-session-id"]).toMatch(/^[0-9a-f-]{36}$/)
    expect(toJ?.headers["authorization"]).toBeUndefined()
  })
})

describe("stateless mode: the DELETE ending each request's upstream session", () => {
  const pair = pairFor("stateless", (jwks) => jwtPairConfig(jwks, { settings: "", mcp: "statefulMode: stateless" }))

  /** One stateless `tools/call` of `a_echo`, with `bearer` as the client's credential. */
  const call = async (bearer: string, text: string) => {
    const { gw, port } = pair()
    const res = await fetch(gw.url(port, "/mcp"), {
      method: "POST",
      headers: {
        accept: BOTH,
        "content-type": "application/json",
        "mcp-protocol-version": "2025-06-18",
        authorization: `Bearer ${bearer}`,
        "x-drop": "gone",
        "x-client": text
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "a_echo", arguments: { text } } })
    })
    expect(res.status).toBe(200)
    expect(res.headers.get("mcp-session-id")).toBeNull()
    expect(await res.text()).toContain(`"text":"alpha: ${text}"`)
  }

  it("each request's upstream sessions end with a DELETE carrying the target's policies and that request's headers and JWT", async () => {
    const { pa, pb } = pair()
    // A second credential, so each DELETE is tied to the request it ends.
    const other = await new SignJWT({ iss: "issuer.test", aud: "aud.test", sub: "bob", exp: Math.floor(Date.now() / 1000) + 600 })
      .setProtectedHeader({ alg: "RS256", kid: "k1" })
      .sign(keys.privateKey)
    pa.seen.length = 0
    pb.seen.length = 0
    await call(token, "one")
    expect(await waitFor(() => deletes(pa.seen).length === 1 && deletes(pb.seen).length === 1)).toBe(true)
    await call(other, "two")
    expect(await waitFor(() => deletes(pa.seen).length === 2 && deletes(pb.seen).length === 2)).toBe(true)

    // Target a: per request, initialize (which the upstream answers with its session id), the call, the DELETE of that session.
    const calls = toolCalls(pa.seen)
    expect(calls.map((c) => c.headers["x-client"])).toEqual(["one", "two"])
    const sessions = calls.map((c) => c.headers["mcp-session-id"])
    expect(sessions[0]).toMatch(/^[0-9a-f-]{36}$/)
    expect(sessions[1]).toMatch(/^[0-9a-f-]{36}$/)
    expect(sessions[0]).not.toBe(sessions[1])
    const toA = deletes(pa.seen)
    expect(toA.map((d) => d.headers["mcp-session-id"])).toEqual(sessions)
    for (const [i, d] of toA.entries()) {
      expect(d.headers["authorization"]).toBe("Bearer secret-a")
      expect(d.headers["x-target"]).toBe("a")
      expect(d.headers["x-drop"]).toBeUndefined()
      expect(d.headers["x-client"]).toBe(["one", "two"][i])
    }

    // Target j got no call, but each request opened a session there too; passthrough re-adds that request's JWT.
    expect(toolCalls(pb.seen)).toEqual([])
    const opened = pb.seen.filter((s) => s.method === "POST" && s.headers["mcp-session-id"] !== undefined).map((s) => s.headers["mcp-session-id"])
    const toJ = deletes(pb.seen)
    expect(toJ.map((d) => d.headers["mcp-session-id"])).toEqual([...new Set(opened)])
    expect(toJ.map((d) => d.headers["authorization"])).toEqual([`Bearer ${token}`, `Bearer ${other}`])
    expect(toJ.map((d) => d.headers["x-client"])).toEqual(["one", "two"])
    expect(toJ.map((d) => d.headers["x-drop"])).toEqual(["gone", "gone"])
    expect(toJ.map((d) => d.headers["x-target"])).toEqual([undefined, undefined])
  })
})
