/**
 * `mcpAuthentication` over real sockets, on upstream's `examples/mcp-authentication` config
 * (read from the reference copy, pointed at local peers): a local IdP (JWKS, RFC 8414 metadata,
 * a Keycloak realm with client registration), `@modelcontextprotocol/server-everything` over
 * stdio, and a recording Streamable HTTP MCP server for the remote target. The 401 challenge,
 * the RFC 9728 document, authorization-server metadata passthrough and the Keycloak and Auth0
 * rewrites, an SDK client that initializes with a token, wrong audiences, and the token kept
 * from the upstream unless `backendAuth: {passthrough: {}}` (upstream's `examples/mcp-authorization`).
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import { Server } from "@modelcontextprotocol/sdk/server/index.js"
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js"
import { CallToolRequestSchema, isInitializeRequest, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js"
import { exportJWK, generateKeyPair, SignJWT } from "jose"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { send } from "../support/Client.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { everything } from "../support/mcp/Peers.ts"

const examples = path.resolve(import.meta.dirname, "../../../shared/reference/agentgateway/examples")
const BOTH = "application/json, text/event-stream"

const keys = await generateKeyPair("RS256")
const JWKS = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: "idp-1", alg: "RS256" }] })

const listen = (server: http.Server): Promise<number> =>
  new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      resolve(typeof address === "object" && address !== null ? address.port : 0)
    })
  )

const readBody = (req: http.IncomingMessage): Promise<string> =>
  new Promise((resolve) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
  })

/** A Streamable HTTP MCP server (official SDK) that records the Authorization header of every request. */
const startRecordingMcp = async () => {
  const authorizations: Array<string | undefined> = []
  const transports = new Map<string, StreamableHTTPServerTransport>()
  const makeServer = () => {
    const server = new Server({ name: "recording", version: "1.0.0" }, { capabilities: { tools: {} } })
    server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: [{ name: "echo", inputSchema: { type: "object" } }] }))
    server.setRequestHandler(CallToolRequestSchema, async (req) => ({ content: [{ type: "text", text: `echo: ${String(req.params.arguments?.["text"])}` }] }))
    return server
  }
  const server = http.createServer(async (req, res) => {
    authorizations.push(req.headers.authorization)
    const text = await readBody(req)
    const body: unknown = text === "" ? undefined : JSON.parse(text)
    const sid = req.headers["mcp-session-id"]
    let transport = typeof sid === "string" ? transports.get(sid) : undefined
    if (transport === undefined && body !== undefined && isInitializeRequest(body)) {
      const created = new StreamableHTTPServerTransport({ sessionIdGenerator: () => randomUUID(), onsessioninitialized: (id) => void transports.set(id, created) })
      transport = created
      await makeServer().connect(created)
    }
    if (transport === undefined) {
      res.writeHead(404).end("no session")
      return
    }
    await transport.handleRequest(req, res, body)
  })
  const port = await listen(server)
  return { port, authorizations, server }
}

const connect = async (url: string, token: string) => {
  const client = new Client({ name: "test", version: "1.0.0" })
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${token}` } } }))
  return client
}

const rewrite = (text: string, steps: ReadonlyArray<readonly [string, string]>): string => {
  let out = text
  for (const [from, to] of steps) {
    expect(out).toContain(from)
    out = out.split(from).join(to)
  }
  return out
}

describe("mcpAuthentication (upstream examples/mcp-authentication)", () => {
  let idp: http.Server
  let idpPort: number
  const registrations: Array<string> = []
  let recording: Awaited<ReturnType<typeof startRecordingMcp>>
  let gw: Running
  let passthroughGw: Running
  let auth0Gw: Running
  let port: number
  let passthroughPort: number
  let auth0Port: number
  let dir: string
  let base: string

  const token = (aud: string, extra: Record<string, unknown> = {}) =>
    new SignJWT({ iss: `http://127.0.0.1:${idpPort}`, sub: "alice", aud, exp: Math.floor(Date.now() / 1000) + 600, ...extra })
      .setProtectedHeader({ alg: "RS256", kid: "idp-1" })
      .sign(keys.privateKey)

  beforeAll(async () => {
    idp = http.createServer(async (req, res) => {
      const url = req.url ?? "/"
      const origin = `http://127.0.0.1:${idpPort}`
      const json = (status: number, doc: unknown) => {
        res.writeHead(status, { "content-type": "application/json" })
        res.end(JSON.stringify(doc))
      }
      if (url === "/.well-known/jwks.json" || url === "/realms/mcp/protocol/openid-connect/certs") return json(200, JSON.parse(JWKS))
      if (url === "/.well-known/oauth-authorization-server") {
        return json(200, { issuer: origin, authorization_endpoint: `${origin}/authorize`, token_endpoint: `${origin}/token`, registration_endpoint: `${origin}/register` })
      }
      if (url === "/realms/mcp/.well-known/openid-configuration") {
        const realm = `${origin}/realms/mcp`
        return json(200, { issuer: realm, authorization_endpoint: `${realm}/protocol/openid-connect/auth`, registration_endpoint: `${realm}/clients-registrations/openid-connect` })
      }
      if (url === "/realms/mcp/clients-registrations/openid-connect" && req.method === "POST") {
        registrations.push(await readBody(req))
        return json(201, { client_id: "registered-1" })
      }
      json(404, { error: "not_found" })
    })
    idpPort = await listen(idp)
    recording = await startRecordingMcp()
    port = await freePort()
    base = `http://127.0.0.1:${port}`
    const example = fs.readFileSync(path.join(examples, "mcp-authentication/config.yaml"), "utf8")
    const config = rewrite(example, [
      ["  port: 3000\n", "  port: $PORT\n"],
      ["http://localhost:3000", base],
      ["http://localhost:9000", `http://127.0.0.1:${idpPort}`],
      ["http://localhost:7080", `http://127.0.0.1:${idpPort}`],
      ["https://mcpbin.is.solo.io/remote/mcp", `http://127.0.0.1:${recording.port}/mcp`],
      [
        "            stdio:\n              args:\n              - '@modelcontextprotocol/server-everything'\n              cmd: npx\n",
        `            stdio:\n              args: ["${everything}", "stdio"]\n              cmd: "${process.execPath}"\n`
      ]
    ])
    gw = await startGateway(config, { vars: { PORT: port } })

    dir = fs.mkdtempSync(path.join(os.tmpdir(), "mcpauth-e2e-"))
    fs.writeFileSync(path.join(dir, "pub-key"), JWKS)
    passthroughPort = await freePort()
    const authorization = fs.readFileSync(path.join(examples, "mcp-authorization/config.yaml"), "utf8")
    passthroughGw = await startGateway(
      rewrite(authorization, [
        ["  port: 3000\n", "  port: $PORT\n"],
        ["issuer: agentgateway.dev", `issuer: http://127.0.0.1:${idpPort}`],
        ["file: ./manifests/jwt/pub-key", `file: ${path.join(dir, "pub-key")}`],
        ["host: http://localhost:3001/mcp", `host: http://127.0.0.1:${recording.port}/mcp`]
      ]),
      { vars: { PORT: passthroughPort } }
    )

    auth0Port = await freePort()
    auth0Gw = await startGateway(
      `
binds:
- port: $PORT
  listeners:
  - routes:
    - matches: [{path: {pathPrefix: /}}]
      policies:
        mcpAuthentication:
          issuer: http://127.0.0.1:${idpPort}/
          audiences: [urn:agent-gateway]
          provider: {auth0: {}}
          resourceMetadata: {resource: "http://127.0.0.1:$PORT/auth0/mcp"}
      backends: [{host: 127.0.0.1:${idpPort}}]
`,
      { vars: { PORT: auth0Port } }
    )
  })
  afterAll(async () => {
    await Promise.all([gw.stop(), passthroughGw.stop(), auth0Gw.stop()])
    for (const s of [idp, recording.server]) {
      s.closeAllConnections()
      await new Promise<void>((r) => s.close(() => r()))
    }
    fs.rmSync(dir, { recursive: true, force: true })
  })

  const initialize = (headers: Record<string, string> = {}) =>
    send(port, "POST", "/stdio/mcp", { accept: BOTH, "content-type": "application/json", ...headers }, {
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } } })
    })

  it("no token: 401 JSON with the RFC 9728 challenge naming this path's metadata", async () => {
    const res = await initialize()
    expect(res.status).toBe(401)
    expect(res.headers["content-type"]).toBe("application/json")
    expect(res.body).toBe(`{"error":"unauthorized","error_description":"JWT token required"}`)
    expect(res.headers["www-authenticate"]).toBe(`Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/stdio/mcp"`)
  })

  it("the protected-resource metadata document, with CORS for any origin", async () => {
    const res = await send(port, "GET", "/.well-known/oauth-protected-resource/stdio/mcp")
    expect(res.status).toBe(200)
    expect(res.headers["content-type"]).toBe("application/json")
    expect(res.headers["access-control-allow-origin"]).toBe("*")
    expect(JSON.parse(res.body)).toEqual({
      resource: `${base}/stdio/mcp`,
      authorization_servers: [`http://127.0.0.1:${idpPort}`],
      mcp_protocol_version: "2025-06-18",
      resource_type: "mcp-server",
      scopes_supported: ["read:all"],
      bearer_methods_supported: ["header", "body", "query"],
      resource_documentation: `${base}/stdio/docs`,
      resource_policy_uri: `${base}/stdio/policies`
    })
  })

  it("authorization-server metadata of a spec-compliant IdP is relayed unchanged", async () => {
    const res = await send(port, "GET", "/.well-known/oauth-authorization-server/stdio/mcp")
    expect(res.status).toBe(200)
    const origin = `http://127.0.0.1:${idpPort}`
    expect(JSON.parse(res.body)).toEqual({ issuer: origin, authorization_endpoint: `${origin}/authorize`, token_endpoint: `${origin}/token`, registration_endpoint: `${origin}/register` })
  })

  it("a valid token: the SDK client initializes and calls a tool on server-everything", async () => {
    const client = await connect(`${base}/stdio/mcp`, await token(`${base}/stdio/mcp`))
    expect(client.getServerVersion()?.name).toBeDefined()
    const tools = (await client.listTools()).tools.map((t) => t.name)
    expect(tools).toContain("echo")
    const result = await client.callTool({ name: "echo", arguments: { message: "hi" } })
    expect(JSON.stringify(result.content)).toContain("hi")
    await client.close()
  })

  it("a token for another audience, issuer or key: 401", async () => {
    for (const bad of [await token(`${base}/remote/mcp`), await token(`${base}/stdio/mcp`, { iss: "http://evil" }), "e30.e30.sig"]) {
      const res = await initialize({ authorization: `Bearer ${bad}` })
      expect(res.status).toBe(401)
      expect(res.headers["www-authenticate"]).toBe(`Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/stdio/mcp"`)
    }
  })

  it("remote target: the validated token is stripped before the upstream MCP server", async () => {
    recording.authorizations.length = 0
    const client = await connect(`${base}/remote/mcp`, await token(`${base}/remote/mcp`))
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(["echo"])
    await client.close()
    expect(recording.authorizations.length).toBeGreaterThan(0)
    expect(recording.authorizations.every((a) => a === undefined)).toBe(true)
  })

  it("keycloak: metadata from openid-configuration, issuer and registration endpoint pointed at the gateway", async () => {
    const prm = JSON.parse((await send(port, "GET", "/.well-known/oauth-protected-resource/keycloak/mcp")).body)
    expect(prm.authorization_servers).toEqual([`${base}/keycloak/mcp`])
    const res = await send(port, "GET", "/.well-known/oauth-authorization-server/keycloak/mcp")
    expect(res.status).toBe(200)
    const realm = `http://127.0.0.1:${idpPort}/realms/mcp`
    expect(JSON.parse(res.body)).toEqual({
      issuer: `${base}/keycloak/mcp`,
      authorization_endpoint: `${realm}/protocol/openid-connect/auth`,
      registration_endpoint: `${base}/.well-known/oauth-authorization-server/keycloak/mcp/client-registration`
    })
    const registration = await send(
      port,
      "POST",
      "/.well-known/oauth-authorization-server/keycloak/mcp/client-registration",
      { "content-type": "application/json", origin: "http://inspector.local" },
      { body: "{\"client_name\":\"inspector\"}" }
    )
    expect(registration.status).toBe(201)
    expect(JSON.parse(registration.body)).toEqual({ client_id: "registered-1" })
    expect(registrations.at(-1)).toBe("{\"client_name\":\"inspector\"}")
    // The route's cors policy (allowOrigins '*') already answered for this origin.
    expect(registration.headers["access-control-allow-origin"]).toBe("http://inspector.local")
    // Keycloak tokens are checked against the realm's certs URL and the `mcp_proxy` audience.
    const kc = await new SignJWT({ iss: realm, sub: "bob", aud: "mcp_proxy", exp: Math.floor(Date.now() / 1000) + 600 })
      .setProtectedHeader({ alg: "RS256", kid: "idp-1" })
      .sign(keys.privateKey)
    const client = await connect(`${base}/keycloak/mcp`, kc)
    expect((await client.listTools()).tools.length).toBeGreaterThan(0)
    await client.close()
  })

  it("auth0: the authorization endpoint gets the first audience", async () => {
    const res = await send(auth0Port, "GET", "/.well-known/oauth-authorization-server/auth0/mcp")
    expect(res.status).toBe(200)
    const origin = `http://127.0.0.1:${idpPort}`
    expect(JSON.parse(res.body)).toMatchObject({
      issuer: `http://127.0.0.1:${auth0Port}/auth0/mcp`,
      authorization_endpoint: `${origin}/authorize?audience=urn%3Aagent-gateway`
    })
  })

  it("examples/mcp-authorization: jwtAuth + backendAuth passthrough re-adds the token for the MCP target", async () => {
    recording.authorizations.length = 0
    const jwt = await token("test.agentgateway.dev", { sub: "test-user" })
    const client = await connect(`http://127.0.0.1:${passthroughPort}/mcp`, jwt)
    const result = await client.callTool({ name: "echo", arguments: { text: "x" } })
    expect(result.content).toEqual([{ type: "text", text: "echo: x" }])
    await client.close()
    expect(recording.authorizations.length).toBeGreaterThan(0)
    expect(recording.authorizations.every((a) => a === `Bearer ${jwt}`)).toBe(true)
  })
})
