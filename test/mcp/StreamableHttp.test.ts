/**
 * The session–identity binding, without sockets: the MCP backend's handler run on
 * `ProxyRequest`s whose `identity` an authentication policy would have set.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as path from "node:path"
import { UpstreamPools } from "../../src/backends/Pools.ts"
import type * as Ir from "../../src/ir/Ir.ts"
import * as McpBackend from "../../src/mcp/McpBackend.ts"
import * as Naming from "../../src/mcp/Naming.ts"
import * as SessionSealer from "../../src/mcp/SessionSealer.ts"
import type { BodySink } from "../../src/pipeline/ProxyResponse.ts"
import * as RequestBody from "../../src/pipeline/RequestBody.ts"
import { RequestContext } from "../../src/pipeline/RequestContext.ts"
import { request } from "../support/Requests.ts"

const fixture = path.resolve(import.meta.dirname, "../support/mcp/FixtureServer.ts")

const backend: Ir.McpBackend = {
  _tag: "Mcp",
  targets: [{ name: "fx", path: "t", transport: { _tag: "Stdio", cmd: process.execPath, args: [fixture, "stdio"], env: {}, clearEnv: false } }],
  stateful: true,
  prefixMode: "conditional",
  failureMode: "failClosed",
  dnsRebindingProtection: false
}

const settings: McpBackend.McpSettings = {
  mcpSessionTtlMs: 60_000,
  sessionKey: "ab".repeat(32),
  connectTimeoutMs: 1000,
  poolIdleTimeoutMs: 1000,
  poolMaxSize: undefined,
  keepalive: true
}
const key = "ab".repeat(32)

/** Collects a streamed body. */
const collect = (body: unknown): Promise<string> =>
  new Promise((resolve) => {
    if (typeof body === "string" || body === undefined) return resolve(String(body ?? ""))
    const chunks: Array<Buffer> = []
    const sink: BodySink = {
      write: (c) => (chunks.push(Buffer.from(c)), true),
      end: () => resolve(Buffer.concat(chunks).toString("utf8")),
      destroy: () => resolve(Buffer.concat(chunks).toString("utf8")),
      once: () => sink,
      writableFinished: false
    }
    if (typeof body === "object" && body !== null && "pipeTo" in body && typeof body.pipeTo === "function") body.pipeTo(sink)
  })

const post = (message: unknown, identity: string | undefined, session?: string) => {
  const ctx = request({
    method: "POST",
    path: "/mcp",
    headers: { accept: "application/json, text/event-stream", "content-type": "application/json", ...(session === undefined ? {} : { "mcp-session-id": session }) }
  })
  ctx.identity = identity
  RequestBody.replace(ctx, Buffer.from(JSON.stringify(message)))
  return ctx
}

describe("MCP sessions", () => {
  it.live("a session presented by another identity is not found", () =>
    Effect.gen(function*() {
      const handler = yield* McpBackend.build("/b", backend, { settings, maxBodyBytes: 1 << 20 })
      const init = { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "c", version: "0" } } }
      const res = yield* Effect.provideService(handler, RequestContext, post(init, "iss|alice"))
      assert.strictEqual(res.status, 200)
      const id = String(res.headers["mcp-session-id"])
      yield* Effect.promise(() => collect(res.body))
      const ping = { jsonrpc: "2.0", id: 2, method: "ping" }
      const same = yield* Effect.provideService(handler, RequestContext, post(ping, "iss|alice", id))
      assert.strictEqual(same.status, 200)
      assert.include(yield* Effect.promise(() => collect(same.body)), `"result":{}`)
      const other = yield* Effect.provideService(handler, RequestContext, post(ping, "iss|mallory", id))
      assert.strictEqual(other.status, 404)
      const anonymous = yield* Effect.provideService(handler, RequestContext, post(ping, undefined, id))
      assert.strictEqual(anonymous.status, 404)
      // The binding is inside the sealed id: another replica refuses it too.
      const state = SessionSealer.make(Buffer.from(key, "hex")).open(id)
      assert.strictEqual(state === "invalid" ? "invalid" : state.identity, "iss|alice")
    }).pipe(Effect.scoped, Effect.provide(UpstreamPools.layer)))
})

describe("Naming", () => {
  it("prefixes only when multiplexing (conditional), splits on the first delimiter", () => {
    const one = Naming.make(["a"], "conditional")
    assert.strictEqual(Naming.exposeName(one, "a", "echo"), "echo")
    assert.strictEqual(Naming.exposeUri(one, "a", "memo://x"), "memo://x")
    const two = Naming.make(["a", "mcp"], "conditional")
    assert.deepStrictEqual(Naming.resolveName(two, "mcp_echo_http"), { target: "mcp", name: "echo_http" })
    assert.strictEqual(Naming.resolveName(two, "echo"), undefined)
    assert.strictEqual(Naming.resolveName(two, "zz_echo"), undefined)
    assert.strictEqual(Naming.exposeUri(two, "a", "memo://insights"), "a+memo://insights")
    assert.strictEqual(Naming.exposeUri(two, "a", "relative/path"), "relative/path")
    assert.strictEqual(Naming.exposeUri(two, "a", "ui://app/x"), "ui://a+app/x")
    assert.deepStrictEqual(Naming.resolveUri(two, "ui://a+app/x"), { target: "a", uri: "ui://app/x" })
    assert.deepStrictEqual(Naming.resolveUri(two, "a+str:////Users/x"), { target: "a", uri: "str:////Users/x" })
    assert.strictEqual(Naming.exposeName(Naming.make(["a"], "always"), "a", "echo"), "a_echo")
    assert.strictEqual(Naming.exposeName(Naming.make(["a", "b"], "never"), "a", "echo"), "echo")
  })
})
