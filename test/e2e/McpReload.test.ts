/**
 * MCP sessions across a hot reload, with the real gateway process (`node src/main.ts -f FILE`)
 * and the official SDK client: a session over Streamable HTTP targets is resumed by the next
 * snapshot from its sealed id (same upstream session, no new upstream initialize), with the
 * random per-process key as with a configured one, and stays bound to its caller; a changed key
 * makes old ids 404; a stdio session gets 404 and its child is gone; a call in flight during
 * the reload finishes on the old snapshot (its stdio child lives until it has). OpenAPI targets
 * (stateless) resume like Streamable HTTP ones.
 */
import * as crypto from "node:crypto"
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import { LoggingMessageNotificationSchema } from "@modelcontextprotocol/sdk/types.js"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs/promises"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { freePort } from "../support/Harness.ts"
import { alive, fixture, startFixture, waitFor } from "../support/mcp/Peers.ts"

const root = path.resolve(import.meta.dirname, "../..")
const main = path.join(root, "src/main.ts")
const KEY_ONE = crypto.randomBytes(32).toString("hex")
const KEY_TWO = crypto.randomBytes(32).toString("hex")
const BOTH = "application/json, text/event-stream"
const petstoreSchema = path.resolve(import.meta.dirname, "../fixtures/mcp/petstore-openapi.json")

interface Options {
  readonly generation: number
  readonly port: number
  readonly upstream: number
  readonly petstore: number
  readonly key?: string
}

/** Every generation differs only in `/generation`'s body (and the key when given): the MCP backends keep their names. */
const config = (o: Options) => `${o.key === undefined ? "" : `config:\n  session: {key: "${o.key}"}\n`}binds:
- port: ${o.port}
  listeners:
  - routes:
    - name: generation
      matches: [{path: {exact: /generation}}]
      policies:
        directResponse: {status: 200, body: "${o.generation}"}
    - name: http
      matches: [{path: {pathPrefix: /http}}]
      backends:
      - mcp:
          targets:
          - name: a
            mcp: {host: "http://127.0.0.1:${o.upstream}/mcp"}
    - name: keyed
      matches: [{path: {pathPrefix: /keyed}}]
      policies:
        apiKey:
          mode: strict
          keys: [{key: key-ann}, {key: key-bob}]
      backends:
      - mcp:
          targets:
          - name: a
            mcp: {host: "http://127.0.0.1:${o.upstream}/mcp"}
    - name: mixed
      matches: [{path: {pathPrefix: /mixed}}]
      backends:
      - mcp:
          targets:
          - name: a
            mcp: {host: "http://127.0.0.1:${o.upstream}/mcp"}
          - name: pets
            openapi:
              schema: {file: "${petstoreSchema}"}
              host: 127.0.0.1:${o.petstore}
    - name: stdio
      matches: [{path: {pathPrefix: /stdio}}]
      backends:
      - mcp:
          targets:
          - name: s
            stdio: {cmd: "${process.execPath}", args: ["${fixture}", "stdio"]}
`

interface Gateway {
  readonly child: ChildProcess
  readonly url: (p: string) => string
  /** Writes the next generation of the file and resolves once that snapshot serves. */
  readonly reload: (o?: { readonly key?: string }) => Promise<void>
  readonly output: () => string
}

const running: Array<{ child: ChildProcess; exited: Promise<unknown>; dir: string }> = []
let upstream: { port: number; child: ChildProcess }
/** A REST API for the OpenAPI target: `GET /api/v3/pet/<id>` answers the pet. */
let petstore: { port: number; server: http.Server }

beforeAll(async () => {
  upstream = await startFixture("http", "alpha")
  const server = http.createServer((req, res) => {
    const pet = /^\/api\/v3\/pet\/(\d+)$/.exec(req.url ?? "")
    res.writeHead(pet === null ? 404 : 200, { "content-type": "application/json" })
    res.end(JSON.stringify(pet === null ? { message: "not found" } : { id: Number(pet[1]), name: "rex" }))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const address = server.address()
  petstore = { port: typeof address === "object" && address !== null ? address.port : 0, server }
})
afterAll(async () => {
  upstream.child.kill()
  await new Promise((resolve) => petstore.server.close(resolve))
})
afterEach(async () => {
  for (const g of running.splice(0)) {
    // SIGTERM: the gateway closes its snapshot, so its stdio children go with it.
    if (g.child.exitCode === null) g.child.kill("SIGTERM")
    await g.exited
    await fs.rm(g.dir, { recursive: true, force: true })
  }
})

const startGateway = async (key?: string): Promise<Gateway> => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "agw-mcp-reload-"))
  const file = path.join(dir, "config.yaml")
  const port = await freePort()
  let generation = 1
  await fs.writeFile(file, config({ generation, port, upstream: upstream.port, petstore: petstore.port, ...(key === undefined ? {} : { key }) }))
  const env: Record<string, string | undefined> = { ...process.env, ADMIN_ADDR: "127.0.0.1:0", STATS_ADDR: "127.0.0.1:0", READINESS_ADDR: "127.0.0.1:0" }
  delete env["SESSION_KEY"]
  const child = spawn(process.execPath, [main, "-f", file], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] })
  const exited = new Promise((resolve) => child.once("exit", resolve))
  running.push({ child, exited, dir })
  let output = ""
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      if (output.includes("serving")) resolve()
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    void exited.then(() => reject(new Error(`gateway exited: ${output}`)))
  })
  const url = (p: string) => `http://127.0.0.1:${port}${p}`
  const serving = async (n: number) => {
    for (let i = 0; i < 200; i++) {
      const res = await fetch(url("/generation")).catch(() => undefined)
      if (res !== undefined && (await res.text()) === String(n)) return
      await new Promise((r) => setTimeout(r, 25))
    }
    throw new Error(`generation ${n} never served: ${output}`)
  }
  return {
    child,
    url,
    output: () => output,
    reload: async (o = {}) => {
      generation++
      const next = o.key ?? key
      await fs.writeFile(file, config({ generation, port, upstream: upstream.port, petstore: petstore.port, ...(next === undefined ? {} : { key: next }) }))
      await serving(generation)
    }
  }
}

const connect = async (url: string, headers: Record<string, string> = {}) => {
  const client = new Client({ name: "reload-test", version: "1.0.0" })
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } })
  await client.connect(transport)
  return { client, transport }
}

const text = (result: Awaited<ReturnType<Client["callTool"]>>): string => {
  const content = result.content
  const first = Array.isArray(content) ? content[0] : undefined
  return typeof first === "object" && first !== null && "text" in first ? String(first.text) : ""
}

/** The upstream's MCP session id for this gateway session, and how many sessions the upstream has started. */
const upstreamSession = async (client: Client): Promise<{ id: string | null; servers: number }> =>
  JSON.parse(text(await client.callTool({ name: "session", arguments: {} })))

/** One POST with a session id, outside the SDK: its status. */
const post = async (url: string, id: string, headers: Record<string, string> = {}) => {
  const res = await fetch(url, {
    method: "POST",
    headers: { accept: BOTH, "content-type": "application/json", "mcp-session-id": id, "mcp-protocol-version": "2025-11-25", ...headers },
    body: JSON.stringify({ jsonrpc: "2.0", id: 90, method: "tools/call", params: { name: "echo", arguments: { text: "raw" } } })
  })
  await res.text()
  return res.status
}

describe("MCP sessions across a config reload", () => {
  it("resumes a Streamable HTTP session with the random per-process key: same upstream session, no new initialize", async () => {
    const gw = await startGateway()
    const { client, transport } = await connect(gw.url("/http/mcp"))
    const id = transport.sessionId
    expect(text(await client.callTool({ name: "echo", arguments: { text: "before" } }))).toBe("alpha: before")
    const before = await upstreamSession(client)
    expect(before.id).not.toBeNull()
    await gw.reload()
    // The same client, the same gateway session id, no re-initialize.
    expect(text(await client.callTool({ name: "echo", arguments: { text: "after" } }))).toBe("alpha: after")
    expect(await upstreamSession(client)).toEqual(before)
    expect(transport.sessionId).toBe(id)
    // And after a second reload (the key is the process's, not the snapshot's).
    await gw.reload()
    expect(await upstreamSession(client)).toEqual(before)
    await client.close()
  })

  it("resumes a session federating a Streamable HTTP and an OpenAPI target", async () => {
    const gw = await startGateway()
    const { client, transport } = await connect(gw.url("/mixed/mcp"))
    const id = transport.sessionId
    const session = async () => JSON.parse(text(await client.callTool({ name: "a_session", arguments: {} })))
    const pet = async () => JSON.parse(text(await client.callTool({ name: "pets_getPetById", arguments: { path: { petId: 3 } } })))
    const before = await session()
    expect(await pet()).toEqual({ id: 3, name: "rex" })
    await gw.reload()
    expect(await pet()).toEqual({ id: 3, name: "rex" })
    expect(await session()).toEqual(before)
    expect(transport.sessionId).toBe(id)
    await client.close()
  })

  it("keeps a session over a reload with the same configured key; a changed key makes old ids 404, not 500", async () => {
    const gw = await startGateway(KEY_ONE)
    const { client, transport } = await connect(gw.url("/http/mcp"))
    const id = transport.sessionId!
    const before = await upstreamSession(client)
    await gw.reload()
    expect(await upstreamSession(client)).toEqual(before)
    await gw.reload({ key: KEY_TWO })
    expect(await post(gw.url("/http/mcp"), id)).toBe(404)
    await expect(client.callTool({ name: "echo", arguments: { text: "gone" } })).rejects.toThrow(/session not found/)
    // A new session under the new key works.
    const fresh = await connect(gw.url("/http/mcp"))
    expect(text(await fresh.client.callTool({ name: "echo", arguments: { text: "new" } }))).toBe("alpha: new")
    const after = await upstreamSession(fresh.client)
    expect(after.id).not.toBe(before.id)
    await fresh.client.close()
    await client.close().catch(() => undefined)
  })

  it("keeps a resumed session bound to its caller", async () => {
    const gw = await startGateway()
    const ann = { authorization: "Bearer key-ann" }
    const bob = { authorization: "Bearer key-bob" }
    const { client, transport } = await connect(gw.url("/keyed/mcp"), ann)
    const id = transport.sessionId!
    const before = await upstreamSession(client)
    await gw.reload()
    // Presented by someone else first: not resumed for them.
    expect(await post(gw.url("/keyed/mcp"), id, bob)).toBe(404)
    expect(await upstreamSession(client)).toEqual(before)
    // Nor once resumed for its owner.
    expect(await post(gw.url("/keyed/mcp"), id, bob)).toBe(404)
    expect(await post(gw.url("/keyed/mcp"), id, ann)).toBe(200)
    await client.close()
  })

  it("answers a stdio session 404 after a reload and leaves no child behind", async () => {
    const gw = await startGateway()
    const { client, transport } = await connect(gw.url("/stdio/mcp"))
    const id = transport.sessionId!
    const pid = Number(text(await client.callTool({ name: "pid", arguments: {} })))
    expect(alive(pid)).toBe(true)
    await gw.reload()
    expect(await waitFor(() => !alive(pid))).toBe(true)
    expect(await post(gw.url("/stdio/mcp"), id)).toBe(404)
    await expect(client.callTool({ name: "echo", arguments: { text: "gone" } })).rejects.toThrow(/session not found/)
    // The client re-initializes: a new session, a new child.
    const again = await connect(gw.url("/stdio/mcp"))
    const next = Number(text(await again.client.callTool({ name: "pid", arguments: {} })))
    expect(next).not.toBe(pid)
    await again.client.close()
    await client.close().catch(() => undefined)
  })

  it("finishes calls in flight during a reload on the old snapshot (HTTP and stdio targets)", async () => {
    const gw = await startGateway()
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "agw-mcp-wait-"))
    const release = path.join(dir, "release")
    const http = await connect(gw.url("/http/mcp"))
    const stdio = await connect(gw.url("/stdio/mcp"))
    const pid = Number(text(await stdio.client.callTool({ name: "pid", arguments: {} })))
    const started = (client: Client) =>
      new Promise<void>((resolve) =>
        client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
          if (n.params.data === "wait started") resolve()
        })
      )
    const httpStarted = started(http.client)
    const stdioStarted = started(stdio.client)
    const httpCall = http.client.callTool({ name: "wait", arguments: { file: release } })
    const stdioCall = stdio.client.callTool({ name: "wait", arguments: { file: release } })
    await Promise.all([httpStarted, stdioStarted])
    // Both calls are waiting upstream while the next snapshot takes over.
    await gw.reload()
    expect(alive(pid)).toBe(true)
    await fs.writeFile(release, "")
    expect(text(await httpCall)).toBe("released")
    expect(text(await stdioCall)).toBe("released")
    // Then the old snapshot ends the stdio session; the HTTP one lives on in the new snapshot.
    expect(await waitFor(() => !alive(pid))).toBe(true)
    expect(text(await http.client.callTool({ name: "echo", arguments: { text: "still" } }))).toBe("alpha: still")
    expect(await post(gw.url("/stdio/mcp"), stdio.transport.sessionId!)).toBe(404)
    await http.client.close()
    await stdio.client.close().catch(() => undefined)
    await fs.rm(dir, { recursive: true, force: true })
  })
})
