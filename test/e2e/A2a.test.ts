/**
 * A2A through the real gateway with the real `@a2a-js/sdk` on both sides: the SDK agent server
 * (test/support/a2a/Agent.ts) behind the gateway, the SDK client resolving the agent card
 * THROUGH the gateway and then sending, streaming and getting tasks — v1.0 (`SendMessage`, …)
 * and v0.3 (`message/send`, …, the SDK's compat transport on a plain v0.3 card). Also: CORS,
 * jwtAuth and authorization on an A2A route, `publicUrl`, a broken card (503), the access-log
 * fields and the `protocol="a2a"` metric label, and upstream's `traffic-a2a` example run
 * against a local agent.
 */
import { type AgentCard, Role, type StreamResponse, TaskState } from "@a2a-js/sdk"
import { type Client, ClientFactory, ClientFactoryOptions, DefaultAgentCardResolver, JsonRpcTransportFactory } from "@a2a-js/sdk/client"
import { exportJWK, generateKeyPair, SignJWT } from "jose"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { send } from "../support/Client.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { type Agent, startAgent } from "../support/a2a/Agent.ts"
import { waitFor } from "../support/mcp/Peers.ts"

const ISSUER = "https://idp.example"
const keys = await generateKeyPair("ES256")
const JWKS = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: "k1", alg: "ES256" }] })
const token = (sub: string) =>
  new SignJWT({ iss: ISSUER, sub, aud: "agents", exp: Math.floor(Date.now() / 1000) + 600 }).setProtectedHeader({ alg: "ES256", kid: "k1" }).sign(keys.privateKey)

let seq = 0
const message = (text: string) => ({
  tenant: "",
  message: {
    messageId: `m-${++seq}`,
    contextId: "",
    taskId: "",
    role: Role.ROLE_USER,
    parts: [{ content: { $case: "text" as const, value: text }, metadata: undefined, filename: "", mediaType: "text/plain" }],
    metadata: undefined,
    extensions: [],
    referenceTaskIds: []
  },
  configuration: undefined,
  metadata: undefined
})

/** A fetch that adds headers to every request the SDK makes (card and calls). */
const fetchWith = (extra: Record<string, string>): typeof fetch => (input, init) => {
  const headers = new Headers(init?.headers)
  for (const [k, v] of Object.entries(extra)) headers.set(k, v)
  return fetch(input, { ...init, headers })
}

const factory = (options: { readonly legacy?: boolean; readonly fetchImpl?: typeof fetch } = {}) => {
  const legacyCompat = { enabled: options.legacy === true }
  const fetchImpl = options.fetchImpl
  return new ClientFactory(
    ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
      cardResolver: new DefaultAgentCardResolver(fetchImpl === undefined ? { legacyCompat } : { legacyCompat, fetchImpl }),
      transports: [new JsonRpcTransportFactory(fetchImpl === undefined ? { legacyCompat } : { legacyCompat, fetchImpl })]
    })
  )
}

const textOf = (task: { readonly artifacts: ReadonlyArray<{ readonly parts: ReadonlyArray<{ readonly content?: { readonly $case: string; readonly value?: unknown } | undefined }> }> }) =>
  task.artifacts.flatMap((a) => a.parts).map((p) => (p.content?.$case === "text" ? p.content.value : undefined))

const kinds = (events: ReadonlyArray<StreamResponse>) => events.map((e) => e.payload?.$case)

type Log = Record<string, unknown>

describe("A2A through the gateway (real @a2a-js/sdk client and server)", () => {
  let agent: Agent
  let gw: Running
  let port: number
  let base: string
  const logs = (): Array<Log> => gw.logs.map((l): Log => JSON.parse(l))
  /** Access-log lines written so far: a mark to pass to `logOf`. */
  const mark = (): number => gw.logs.length
  /** The first access-log event after `since` with this path (and `a2a.method`), waiting for the batch to be written. */
  const logOf = async (since: number, httpPath: string, a2aMethod?: string, status?: number): Promise<Log> => {
    const find = () =>
      logs().slice(since).find((l) =>
        l["http.path"] === httpPath && (a2aMethod === undefined || l["a2a.method"] === a2aMethod) && (status === undefined || l["http.status"] === status)
      )
    await waitFor(() => find() !== undefined)
    return find() ?? {}
  }

  beforeAll(async () => {
    agent = await startAgent()
    port = await freePort()
    base = `http://127.0.0.1:${port}`
    gw = await startGateway(
      `
config:
  logging: {format: json}
binds:
- port: $PORT
  listeners:
  - routes:
    - name: echo
      matches: [{path: {pathPrefix: /agents/echo}}]
      policies:
        urlRewrite: {path: {prefix: /}}
        a2a: {}
      backends: [{host: 127.0.0.1:$AGENT}]
    - name: secure
      matches: [{path: {pathPrefix: /secure}}]
      policies:
        cors: {allowOrigins: ["https://app.example"], allowMethods: [GET, POST], allowHeaders: [content-type, authorization, a2a-version]}
        jwtAuth: {mode: strict, issuer: ${ISSUER}, audiences: [agents], jwks: '$JWKS'}
        authorization: {rules: ['jwt.sub == "alice"']}
        urlRewrite: {path: {prefix: /}}
        a2a: {}
      backends: [{host: 127.0.0.1:$AGENT}]
    - name: public
      matches: [{path: {pathPrefix: /public}}]
      policies:
        urlRewrite: {path: {prefix: /}}
      backends:
      - host: 127.0.0.1:$AGENT
        policies:
          a2a: {publicUrl: "https://agents.example.com/"}
    - name: plain
      matches: [{path: {pathPrefix: /plain}}]
      policies:
        urlRewrite: {path: {prefix: /}}
      backends: [{host: 127.0.0.1:$AGENT}]
    - name: root
      policies: {a2a: {}}
      backends: [{host: 127.0.0.1:$AGENT}]
`,
      { vars: { PORT: port, AGENT: agent.port, JWKS } }
    )
  })

  afterAll(async () => {
    agent.release()
    await gw.stop()
    await agent.close()
  })

  describe("v1.0 (the SDK's native JSON-RPC)", () => {
    let client: Client
    beforeAll(async () => {
      client = await factory().createFromUrl(`${base}/agents/echo/`)
    })

    it("the card resolved through the gateway points at the gateway, under the route prefix", async () => {
      const since = mark()
      const res = await fetch(`${base}/agents/echo/.well-known/agent-card.json`, { headers: { "a2a-version": "1.0" } })
      expect(res.status).toBe(200)
      expect(res.headers.get("etag")).toBeNull()
      const card = (await res.json()) as AgentCard
      expect(card.name).toBe("echo agent")
      expect(card.supportedInterfaces.map((i) => [i.url, i.protocolVersion])).toEqual([
        [`${base}/agents/echo/a2a/jsonrpc`, "1.0"],
        [`${base}/agents/echo/a2a/jsonrpc`, "0.3"]
      ])
      const log = await logOf(since, "/agents/echo/.well-known/agent-card.json")
      expect(log["protocol"]).toBe("a2a")
      expect(log["http.status"]).toBe(200)
      expect(log["a2a.method"]).toBeUndefined()
    })

    it("SendMessage returns the finished task; the call went through the gateway", async () => {
      const since = mark()
      const result = await client.sendMessage(message("hello"))
      expect("id" in result && "status" in result).toBe(true)
      if (!("status" in result) || !("artifacts" in result)) throw new Error("expected a task")
      expect(result.status?.state).toBe(TaskState.TASK_STATE_COMPLETED)
      expect(textOf(result)).toEqual(["echo: hello"])
      const log = await logOf(since, "/agents/echo/a2a/jsonrpc", "SendMessage")
      expect(log).toMatchObject({
        protocol: "a2a",
        "http.method": "POST",
        "http.status": 200,
        "a2a.response.outcome": "success",
        "a2a.result.kind": "task",
        "a2a.task.state": "TASK_STATE_COMPLETED",
        "a2a.context.id": result.contextId
      })
      // The agent saw the rewritten path: the card's URL was the gateway's, not its own.
      expect(agent.received.some((r) => r.method === "POST" && r.path === "/a2a/jsonrpc")).toBe(true)
    })

    it("SendStreamingMessage streams every event; GetTask finds the task", async () => {
      const since = mark()
      const events: Array<StreamResponse> = []
      for await (const event of client.sendMessageStream(message("stream me"))) events.push(event)
      expect(kinds(events)).toEqual(["task", "statusUpdate", "artifactUpdate", "statusUpdate"])
      const first = events[0]?.payload
      const taskId = first?.$case === "task" ? first.value.id : ""
      const task = await client.getTask({ tenant: "", id: taskId })
      expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED)
      expect(textOf(task)).toEqual(["echo: stream me"])
      const streamLog = await logOf(since, "/agents/echo/a2a/jsonrpc", "SendStreamingMessage")
      expect(streamLog["protocol"]).toBe("a2a")
      // SSE is passed through untouched: no response inspection.
      expect(streamLog["a2a.response.outcome"]).toBeUndefined()
      const getLog = await logOf(since, "/agents/echo/a2a/jsonrpc", "GetTask")
      expect(getLog).toMatchObject({ "a2a.response.outcome": "success", "a2a.result.kind": "task", "a2a.task.state": "TASK_STATE_COMPLETED" })
    })

    it("the first SSE event reaches the client while the agent still holds the stream open", async () => {
      const since = mark()
      const stream = client.sendMessageStream(message("gated"))
      const first = await stream.next()
      const second = await stream.next()
      // The agent is parked after `working` until released: the gateway cannot have waited for the end.
      expect([first.value?.payload?.$case, second.value?.payload?.$case]).toEqual(["task", "statusUpdate"])
      agent.release()
      const rest: Array<StreamResponse> = []
      for await (const event of stream) rest.push(event)
      expect(kinds(rest)).toEqual(["artifactUpdate", "statusUpdate"])
    })

    it("an unknown task is a JSON-RPC error, logged with its code", async () => {
      const since = mark()
      await expect(client.getTask({ tenant: "", id: "no-such-task" })).rejects.toThrow()
      const log = await logOf(since, "/agents/echo/a2a/jsonrpc", "GetTask")
      expect(log["a2a.response.outcome"]).toBe("error")
      expect(log["a2a.response.error_code"]).toBe(-32001)
    })
  })

  describe("v0.3 (the SDK's compat transport on a plain v0.3 card)", () => {
    it("card url rewritten, stale signatures removed; message/send, message/stream and tasks/get work", async () => {
      const since = mark()
      const res = await fetch(`${base}/v03/.well-known/agent-card.json`)
      const raw = (await res.json()) as Record<string, unknown>
      expect(raw["url"]).toBe(`${base}/v03/a2a/jsonrpc`)
      expect(raw["protocolVersion"]).toBe("0.3.0")
      expect("signatures" in raw).toBe(false)

      const client = await factory({ legacy: true }).createFromUrl(`${base}/v03/`)
      expect(client.protocolVersion).toMatch(/^0\.3/)
      const result = await client.sendMessage(message("legacy"))
      if (!("status" in result) || !("artifacts" in result)) throw new Error("expected a task")
      expect(result.status?.state).toBe(TaskState.TASK_STATE_COMPLETED)
      expect(textOf(result)).toEqual(["echo: legacy"])
      expect(await logOf(since, "/v03/a2a/jsonrpc", "message/send")).toMatchObject({
        protocol: "a2a",
        "a2a.response.outcome": "success",
        "a2a.result.kind": "task",
        "a2a.task.state": "completed",
        "a2a.context.id": result.contextId
      })

      const events: Array<StreamResponse> = []
      for await (const event of client.sendMessageStream(message("legacy stream"))) events.push(event)
      expect(kinds(events)).toEqual(["task", "statusUpdate", "artifactUpdate", "statusUpdate"])
      expect((await logOf(since, "/v03/a2a/jsonrpc", "message/stream"))["protocol"]).toBe("a2a")

      const task = await client.getTask({ tenant: "", id: result.id })
      expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED)
      expect(await logOf(since, "/v03/a2a/jsonrpc", "tasks/get")).toMatchObject({ "a2a.result.kind": "task", "a2a.task.state": "completed" })
    })
  })

  describe("policies on A2A routes", () => {
    it("CORS: a preflight for the JSON-RPC endpoint is answered; the card carries CORS headers", async () => {
      const since = mark()
      const preflight = await send(port, "OPTIONS", "/secure/a2a/jsonrpc", {
        origin: "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,authorization"
      })
      expect(preflight.status).toBe(200)
      expect(preflight.headers["access-control-allow-origin"]).toBe("https://app.example")
      expect(preflight.headers["access-control-allow-methods"]).toBe("GET,POST")
      expect(preflight.headers["access-control-allow-headers"]).toBe("content-type,authorization,a2a-version")
      const card = await send(port, "GET", "/secure/.well-known/agent-card.json", { origin: "https://app.example", authorization: `Bearer ${await token("alice")}` })
      expect(card.status).toBe(200)
      expect(card.headers["access-control-allow-origin"]).toBe("https://app.example")
      // Rejections carry them too, so the browser can read the 401.
      const denied = await send(port, "GET", "/secure/.well-known/agent-card.json", { origin: "https://app.example" })
      expect(denied.status).toBe(401)
      expect(denied.headers["access-control-allow-origin"]).toBe("https://app.example")
    })

    it("jwtAuth: the SDK client with alice's token works and the agent never sees the token", async () => {
      const since = mark()
      const bearer = `Bearer ${await token("alice")}`
      const client = await factory({ fetchImpl: fetchWith({ authorization: bearer }) }).createFromUrl(`${base}/secure/`)
      const result = await client.sendMessage(message("secret"))
      if (!("artifacts" in result)) throw new Error("expected a task")
      expect(textOf(result)).toEqual(["echo: secret"])
      expect(agent.received.some((r) => r.headers.authorization !== undefined)).toBe(false)
      const log = await logOf(since, "/secure/a2a/jsonrpc", "SendMessage")
      expect(log["jwt.sub"]).toBe("alice")
    })

    it("jwtAuth and authorization reject before any A2A processing: 401 without a token, 403 for bob", async () => {
      const since = mark()
      await expect(factory().createFromUrl(`${base}/secure/`)).rejects.toThrow(/401/)
      const rpc = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "SendMessage", params: {} })
      const anonymous = await send(port, "POST", "/secure/a2a/jsonrpc", { "content-type": "application/json" }, { body: rpc })
      expect(anonymous.status).toBe(401)
      expect(anonymous.body).toBe("authentication failure: no bearer token found")
      const beforeBob = mark()
      const bob = await send(port, "POST", "/secure/a2a/jsonrpc", { "content-type": "application/json", authorization: `Bearer ${await token("bob")}` }, { body: rpc })
      expect(bob.status).toBe(403)
      expect(bob.body).toBe("authorization failed")
      const log = await logOf(beforeBob, "/secure/a2a/jsonrpc", undefined, 403)
      expect(log["http.status"]).toBe(403)
      expect(log["protocol"]).toBe("http")
      expect(log["a2a.method"]).toBeUndefined()
    })
  })

  describe("cards and telemetry", () => {
    it("publicUrl: the card names the configured public URL, whatever the Host", async () => {
      const since = mark()
      const res = await send(port, "GET", "/public/.well-known/agent-card.json", { host: "evil.example", "a2a-version": "1.0" })
      expect(res.status).toBe(200)
      const card = JSON.parse(res.body) as AgentCard
      expect(card.supportedInterfaces.map((i) => i.url)).toEqual(["https://agents.example.com/public/a2a/jsonrpc", "https://agents.example.com/public/a2a/jsonrpc"])
    })

    it("without the a2a policy the card is passed on as the agent wrote it", async () => {
      const since = mark()
      const res = await send(port, "GET", "/plain/.well-known/agent-card.json", { "a2a-version": "1.0" })
      const card = JSON.parse(res.body) as AgentCard
      expect(card.supportedInterfaces[0]?.url).toBe(`${agent.url}/a2a/jsonrpc`)
      expect((await logOf(since, "/plain/.well-known/agent-card.json"))["protocol"]).toBe("http")
    })

    it("a card that is not JSON is 503 `processing failed`; the reason is in the log only", async () => {
      const since = mark()
      const res = await send(port, "GET", "/broken/.well-known/agent-card.json")
      expect(res.status).toBe(503)
      expect(res.headers["content-type"]).toBe("text/plain")
      expect(res.body).toBe("processing failed")
      const log = await logOf(since, "/broken/.well-known/agent-card.json")
      expect(log["error"]).toBe("processing failed: agent card is not valid JSON")
      expect(log["protocol"]).toBe("a2a")
    })

    it("a POST that is not JSON-RPC (not JSON) is untouched and not A2A", async () => {
      const since = mark()
      const res = await send(port, "POST", "/a2a/jsonrpc", { "content-type": "text/plain" }, { body: "hello" })
      // The agent's own answer, passed on as it is.
      expect(res.status).toBe(200)
      expect((JSON.parse(res.body) as { error: { code: number } }).error.code).toBe(-32005)
      expect((await logOf(since, "/a2a/jsonrpc"))["protocol"]).toBe("http")
    })

    it("agentgateway_requests_total counts A2A requests under protocol=\"a2a\"", async () => {
      const since = mark()
      const text = await (await fetch(`http://127.0.0.1:${gw.ports.stats}/metrics`)).text()
      const a2a = text.split("\n").filter((l) => l.startsWith("agentgateway_requests_total{") && l.includes('protocol="a2a"'))
      expect(a2a.some((l) => l.includes('route="default/echo"') && l.includes('method="POST"') && l.includes('status="200"'))).toBe(true)
      expect(text.split("\n").some((l) => l.startsWith("agentgateway_requests_total{") && l.includes('route="default/plain"') && l.includes('protocol="http"'))).toBe(true)
    })
  })
})

describe("upstream example traffic-a2a against a local agent", () => {
  const file = path.resolve(import.meta.dirname, "../../../shared/reference/agentgateway/examples/traffic-a2a/config.yaml")
  let agent: Agent
  let gw: Running
  let port: number

  beforeAll(async () => {
    agent = await startAgent()
    port = await freePort()
    // The example unchanged but for its two ports (3000 and the agent's 9999).
    const yaml = fs.readFileSync(file, "utf8").replace("port: 3000", `port: ${port}`).replace("localhost:9999", `127.0.0.1:${agent.port}`)
    expect(yaml).toContain(`127.0.0.1:${agent.port}`)
    gw = await startGateway(yaml)
  })
  afterAll(async () => {
    await gw.stop()
    await agent.close()
  })

  it("the SDK client resolves the card through it and gets answers; CORS and the CEL log field apply", async () => {
    const base = `http://127.0.0.1:${port}`
    const client = await factory().createFromUrl(base)
    const result = await client.sendMessage(message("via example"))
    if (!("artifacts" in result)) throw new Error("expected a task")
    expect(textOf(result)).toEqual(["echo: via example"])
    const events: Array<StreamResponse> = []
    for await (const event of client.sendMessageStream(message("stream via example"))) events.push(event)
    expect(kinds(events)).toEqual(["task", "statusUpdate", "artifactUpdate", "statusUpdate"])
    const preflight = await send(port, "OPTIONS", "/", { origin: "https://anywhere.example", "access-control-request-method": "POST" })
    expect(preflight.status).toBe(200)
    expect(preflight.headers["access-control-allow-origin"]).toBe("https://anywhere.example")
    expect(preflight.headers["access-control-allow-headers"]).toBe("content-type,cache-control")
    const find = () => gw.logs.map((l): Log => JSON.parse(l)).find((l) => l["a2a.method"] === "SendMessage")
    await waitFor(() => find() !== undefined)
    const log = find()
    expect(log?.["protocol"]).toBe("a2a")
    // `add: {backend: backend}`: the CEL `backend` object, whose protocol is a2a.
    expect(log?.["backend"]).toMatchObject({ protocol: "a2a" })
  })
})
