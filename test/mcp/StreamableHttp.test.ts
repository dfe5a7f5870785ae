/**
 * The session–identity binding, without sockets: the MCP backend's handler run on
 * `ProxyRequest`s whose `identity` an authentication policy would have set.
 */
import * as crypto from "node:crypto"
import { assert, describe, it } from "@effect/vitest"
import { vi } from "vitest"
import { Effect, Exit, Scope } from "effect"
import { UpstreamPools } from "../../src/backends/Pools.ts"
import type * as Ir from "../../src/ir/Ir.ts"
import * as McpBackend from "../../src/mcp/McpBackend.ts"
import * as Naming from "../../src/mcp/Naming.ts"
import { SseBody } from "../../src/mcp/EventStream.ts"
import { BACKLOG_MAX_BYTES, BACKLOG_MAX_MESSAGES, logRef, memoryStore, Session } from "../../src/mcp/Session.ts"
import * as SessionSealer from "../../src/mcp/SessionSealer.ts"
import * as StreamableHttp from "../../src/mcp/StreamableHttp.ts"
import type { BodySink } from "../../src/pipeline/ProxyResponse.ts"
import * as RequestBody from "../../src/pipeline/RequestBody.ts"
import { RequestContext } from "../../src/pipeline/RequestContext.ts"
import { fixture, startFixture } from "../support/mcp/Peers.ts"
import { request } from "../support/Requests.ts"

const backend: Ir.McpBackend = {
  _tag: "Mcp",
  targets: [{ name: "fx", path: "t", transport: { _tag: "Stdio", cmd: process.execPath, args: [fixture, "stdio"], env: {}, clearEnv: false } }],
  stateful: true,
  prefixMode: "conditional",
  failureMode: "failClosed",
  dnsRebindingProtection: false
}

const key = crypto.randomBytes(32).toString("hex")

const settings: McpBackend.McpSettings = {
  mcpSessionTtlMs: 60_000,
  sessionKey: key,
  connectTimeoutMs: 1000,
  poolIdleTimeoutMs: 1000,
  poolMaxSize: undefined,
  keepalive: true
}

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

describe("MCP GET stream", () => {
  it("gets no keep-alive comment while its client is not taking bytes", () => {
    const frames: Array<string> = []
    let backedUp = true
    const stream = new SseBody()
    stream.pipeTo({
      write: (c) => (frames.push(Buffer.from(c).toString("utf8")), true),
      end: () => undefined,
      destroy: () => undefined,
      once: () => undefined,
      writableFinished: false,
      get writableNeedDrain() {
        return backedUp
      }
    })
    stream.comment()
    assert.deepStrictEqual(frames, [])
    backedUp = false
    stream.comment()
    assert.deepStrictEqual(frames, [":\n\n"])
  })

  it.live("gets a keep-alive comment every GET_HEARTBEAT_MS while open, and none once closed", () =>
    Effect.gen(function*() {
      vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] })
      try {
        const handler = yield* McpBackend.build("/b", backend, { settings, maxBodyBytes: 1 << 20 })
        const init = { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "c", version: "0" } } }
        const opened = yield* Effect.provideService(handler, RequestContext, post(init, undefined))
        const id = String(opened.headers["mcp-session-id"])
        yield* Effect.promise(() => collect(opened.body))
        const get = request({ method: "GET", path: "/mcp", headers: { accept: "text/event-stream", "mcp-session-id": id } })
        const res = yield* Effect.provideService(handler, RequestContext, get)
        assert.strictEqual(res.status, 200)
        const frames: Array<string> = []
        let onClose: (() => void) | undefined
        const body = res.body
        if (!(body instanceof SseBody)) return assert.fail("not an SSE body")
        body.pipeTo({
          write: (c) => (frames.push(Buffer.from(c).toString("utf8")), true),
          end: () => undefined,
          destroy: () => undefined,
          once: (event, listener) => void (event === "close" ? (onClose = listener) : undefined),
          writableFinished: false
        })
        assert.deepStrictEqual(frames, [":\n\n"])
        vi.advanceTimersByTime(StreamableHttp.GET_HEARTBEAT_MS * 2)
        assert.deepStrictEqual(frames, [":\n\n", ":\n\n", ":\n\n"])
        onClose?.()
        vi.advanceTimersByTime(StreamableHttp.GET_HEARTBEAT_MS * 2)
        assert.strictEqual(frames.length, 3)
      } finally {
        vi.useRealTimers()
      }
    }).pipe(Effect.scoped, Effect.provide(UpstreamPools.layer)))
})

describe("SessionSealer", () => {
  it("refuses a placeholder key (too few distinct bytes) and takes a random one", () => {
    for (const placeholder of ["0".repeat(64), "ab".repeat(32), "0123456789abcdef".repeat(4)]) {
      assert.strictEqual(SessionSealer.parseKey(placeholder), "session key looks like a placeholder, not a random key: generate one with `openssl rand -hex 32`")
    }
    assert.strictEqual(SessionSealer.parseKey("xyz"), "session key must be 64 hex characters (32 bytes)")
    assert.instanceOf(SessionSealer.parseKey(key), Buffer)
  })

  it("opens only the canonical spelling of an id (the unused low bits of the last character are not a second id)", () => {
    const sealer = SessionSealer.make(Buffer.from(key, "hex"))
    const state = { backend: "/b", identity: "", protocolVersion: "2025-06-18", upstreams: {}, resumable: true, nonce: "n", issuedAt: 1 }
    let checked = 0
    for (let i = 0; i < 64 && checked < 8; i++) {
      const id = sealer.seal({ ...state, nonce: "n".repeat(i + 1) })
      if (id.length % 4 === 0) continue // no unused bits
      assert.notStrictEqual(sealer.open(id), "invalid")
      const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
      const last = alphabet.indexOf(id[id.length - 1]!)
      const twin = id.slice(0, -1) + alphabet[last ^ 1]
      assert.deepStrictEqual(Buffer.from(twin, "base64url"), Buffer.from(id, "base64url"))
      assert.strictEqual(sealer.open(twin), "invalid")
      checked++
    }
    assert.isAtLeast(checked, 8)
  })
})

const init = { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "c", version: "0" } } }
const ping = { jsonrpc: "2.0", id: 2, method: "ping" }
const remove = (session: string) => request({ method: "DELETE", path: "/mcp", headers: { "mcp-session-id": session } })
/** A sealed id as another replica would have issued it for this backend (resumable, no upstream session ids). */
const foreignId = (issuedAt: number, nonce: string) =>
  SessionSealer.make(Buffer.from(key, "hex")).seal({
    backend: "/b",
    identity: "",
    protocolVersion: "2025-06-18",
    upstreams: { fx: null },
    resumable: true,
    nonce,
    issuedAt
  })

describe("MCP session limits", () => {
  it.live("a backend at its session cap answers 503 and opens nothing; an ended session frees its slot", () =>
    Effect.gen(function*() {
      const handler = yield* McpBackend.build("/b", backend, { settings, maxBodyBytes: 1 << 20, maxSessions: 1 })
      const first = yield* Effect.provideService(handler, RequestContext, post(init, undefined))
      assert.strictEqual(first.status, 200)
      yield* Effect.promise(() => collect(first.body))
      const refused = yield* Effect.provideService(handler, RequestContext, post(init, undefined))
      assert.strictEqual(refused.status, 503)
      assert.deepStrictEqual(JSON.parse(yield* Effect.promise(() => collect(refused.body))), {
        jsonrpc: "2.0",
        id: 1,
        error: { code: -32603, message: "too many MCP sessions" }
      })
      const ended = yield* Effect.provideService(handler, RequestContext, remove(String(first.headers["mcp-session-id"])))
      assert.strictEqual(ended.status, 202)
      const again = yield* Effect.provideService(handler, RequestContext, post(init, undefined))
      assert.strictEqual(again.status, 200)
      yield* Effect.promise(() => collect(again.body))
    }).pipe(Effect.scoped, Effect.provide(UpstreamPools.layer)))

  it.live("a sealed id reopens its session until it is deleted or too old", () =>
    Effect.gen(function*() {
      const handler = yield* McpBackend.build("/b", backend, { settings, maxBodyBytes: 1 << 20 })
      const id = foreignId(Date.now(), crypto.randomUUID())
      const resumed = yield* Effect.provideService(handler, RequestContext, post(ping, undefined, id))
      assert.strictEqual(resumed.status, 200)
      assert.include(yield* Effect.promise(() => collect(resumed.body)), `"result":{}`)
      assert.strictEqual((yield* Effect.provideService(handler, RequestContext, remove(id))).status, 202)
      // Deleted: the id no longer reopens anything on this process.
      assert.strictEqual((yield* Effect.provideService(handler, RequestContext, post(ping, undefined, id))).status, 404)
      // Deleted where it was never open (another replica's): refused from then on, too.
      const elsewhere = foreignId(Date.now(), crypto.randomUUID())
      assert.strictEqual((yield* Effect.provideService(handler, RequestContext, remove(elsewhere))).status, 202)
      assert.strictEqual((yield* Effect.provideService(handler, RequestContext, post(ping, undefined, elsewhere))).status, 404)
      const stale = foreignId(Date.now() - SessionSealer.MAX_RESUME_AGE_MS - 1000, crypto.randomUUID())
      assert.strictEqual((yield* Effect.provideService(handler, RequestContext, post(ping, undefined, stale))).status, 404)
    }).pipe(Effect.scoped, Effect.provide(UpstreamPools.layer)))

  it.live("concurrent requests resuming one id open one session", () =>
    Effect.gen(function*() {
      // An SSE target connects asynchronously (it waits for the `endpoint` event), so both requests are in flight at once.
      const sse = yield* Effect.acquireRelease(Effect.promise(() => startFixture("sse", "s")), (f) => Effect.sync(() => f.child.kill()))
      const viaSse: Ir.McpBackend = {
        ...backend,
        targets: [{ name: "fx", path: "t", transport: { _tag: "Sse", target: { _tag: "Host", host: "127.0.0.1", port: sse.port, isHostname: false }, path: "/sse", tls: false } }]
      }
      // With room for one session, a second opening would be refused with 503.
      const handler = yield* McpBackend.build("/b", viaSse, { settings, maxBodyBytes: 1 << 20, maxSessions: 1 })
      const id = foreignId(Date.now(), crypto.randomUUID())
      const both = yield* Effect.all([0, 1].map(() => Effect.provideService(handler, RequestContext, post(ping, undefined, id))), { concurrency: "unbounded" })
      assert.deepStrictEqual(both.map((r) => r.status), [200, 200])
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

describe("Session store and log reference", () => {
  const state = { backend: "/b", identity: "", protocolVersion: "2025-06-18", upstreams: {}, resumable: false, nonce: "", issuedAt: 0 }

  it.effect("finds each id exactly, also ids that share the prefix it hashes", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const store = memoryStore()
      const prefix = "p".repeat(40)
      const ids = [`${prefix}a`, `${prefix}b`, `${prefix}c`, "short"]
      const sessions = ids.map((id) => new Session(id, state, scope, Naming.make(["t"], "conditional"), 0))
      ids.forEach((id, i) => store.set(id, sessions[i]!))
      ids.forEach((id, i) => assert.strictEqual(store.get(id), sessions[i]))
      // Same prefix, another id: not found; a fresh string of a stored id: found.
      assert.strictEqual(store.get(`${prefix}d`), undefined)
      assert.strictEqual(store.get(Buffer.from(ids[1]!).toString("latin1")), sessions[1])
      assert.strictEqual([...store.values()].length, 4)
      // Deleting the id that holds the prefix leaves the others that share it.
      store.delete(ids[0]!)
      assert.strictEqual(store.get(ids[0]!), undefined)
      assert.strictEqual(store.get(ids[1]!), sessions[1])
      assert.strictEqual(store.get(ids[2]!), sessions[2])
      store.delete(ids[2]!)
      assert.strictEqual(store.get(ids[2]!), undefined)
      const held = () => [...store.values()].map((s) => s.id).sort()
      assert.deepStrictEqual(held(), [ids[1], ids[3]])
      // Set again after a delete: found again; an id set again while its prefix is free is held once.
      store.set(ids[0]!, sessions[0]!)
      assert.strictEqual(store.get(ids[0]!), sessions[0])
      store.delete(ids[0]!)
      store.set(ids[1]!, sessions[1]!)
      assert.deepStrictEqual(held(), [ids[1], ids[3]])
      store.delete(ids[1]!)
      assert.strictEqual(store.get(ids[1]!), undefined)
      assert.deepStrictEqual(held(), [ids[3]])
      yield* Scope.close(scope, Exit.void)
    }))

  it.effect("logs a session as the first 16 hex digits of its id's SHA-256, recomputed when the id is sealed", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const session = new Session("draft", state, scope, Naming.make(["t"], "conditional"), 0)
      assert.strictEqual(session.logRef, crypto.createHash("sha256").update("draft").digest("hex").slice(0, 16))
      session.seal("sealed-id", state)
      assert.strictEqual(session.logRef, logRef("sealed-id"))
      assert.match(session.logRef, /^[0-9a-f]{16}$/)
      yield* Scope.close(scope, Exit.void)
    }))
})

describe("Session backlog", () => {
  const state = { backend: "/b", identity: "", protocolVersion: "2025-06-18", upstreams: {}, resumable: false, nonce: "", issuedAt: 0 }
  const note = (n: number, bytes: number) => ({ jsonrpc: "2.0" as const, method: "notifications/message", params: { n, data: "x".repeat(bytes) } })
  /** The `n` of each message the next GET stream is sent first. */
  const replayed = (session: Session): Array<number> => {
    const frames: Array<string> = []
    const stream = new SseBody()
    stream.pipeTo({ write: (c) => (frames.push(Buffer.from(c).toString("utf8")), true), end: () => undefined, destroy: () => undefined, once: () => undefined, writableFinished: false })
    session.listen(stream)
    return frames.map((f) => JSON.parse(f.slice(f.indexOf("data: ") + 6)).params.n)
  }

  it.effect("keeps server messages for the next GET stream within a byte budget and a message count, oldest dropped first", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const big = new Session("s", state, scope, Naming.make(["t"], "conditional"), 0)
      // Too big for the budget on its own: not kept. Then ten of 200 KiB: the last five fit in 1 MiB.
      big.inbound("t").deliver(note(0, BACKLOG_MAX_BYTES + 1))
      for (let n = 1; n <= 10; n++) big.inbound("t").deliver(note(n, 200 * 1024))
      assert.deepStrictEqual(replayed(big), [6, 7, 8, 9, 10])
      const many = new Session("m", state, scope, Naming.make(["t"], "conditional"), 0)
      for (let n = 0; n < BACKLOG_MAX_MESSAGES + 10; n++) many.inbound("t").deliver(note(n, 1))
      assert.deepStrictEqual(replayed(many), Array.from({ length: BACKLOG_MAX_MESSAGES }, (_, i) => i + 10))
      yield* Scope.close(scope, Exit.void)
    }))

  it.effect("answers a server→client request it drops with an error, so its target does not wait", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const session = new Session("r", state, scope, Naming.make(["t"], "conditional"), 0)
      const sent: Array<unknown> = []
      session.upstreams.set("t", {
        target: "t",
        request: () => Effect.die("unused"),
        send: (message) => Effect.sync(() => void sent.push(message)),
        listen: () => Effect.void,
        serverMessages: true,
        resumeToken: () => null
      })
      session.inbound("t").deliver({ jsonrpc: "2.0", id: 41, method: "elicitation/create", params: { message: "?" } })
      for (let n = 0; n < BACKLOG_MAX_MESSAGES; n++) session.inbound("t").deliver(note(n, 1))
      // A request too big to keep at all is answered too.
      session.inbound("t").deliver({ jsonrpc: "2.0", id: "big", method: "sampling/createMessage", params: { data: "x".repeat(BACKLOG_MAX_BYTES) } })
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
      assert.deepStrictEqual(sent, [
        { jsonrpc: "2.0", id: 41, error: { code: -32603, message: "no client stream to relay this request to" } },
        { jsonrpc: "2.0", id: "big", error: { code: -32603, message: "no client stream to relay this request to" } }
      ])
      yield* Scope.close(scope, Exit.void)
    }))
})
