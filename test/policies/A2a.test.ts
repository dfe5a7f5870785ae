/**
 * `a2a` without sockets: request classification, agent-card rewriting (v0.3 `url`, v1.0
 * `supportedInterfaces`, hybrid cards, a prefix `urlRewrite` in front, `publicUrl`,
 * `X-Forwarded-*` only when trusted, stale signatures), the 503 `processing failed` cases, the
 * JSON-RPC `method` read from a body that still goes upstream byte for byte, and the telemetry
 * read from JSON answers while SSE answers stay untouched.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Logger, Scope } from "effect"
import { formatIssue } from "../../src/config/ConfigError.ts"
import { validate } from "../../src/Gateway.ts"
import * as Protocol from "../../src/a2a/Protocol.ts"
import * as Telemetry from "../../src/a2a/Telemetry.ts"
import * as AgentCard from "../../src/a2a/AgentCard.ts"
import type { Handler, Middleware } from "../../src/pipeline/Policy.ts"
import * as ProxyErrors from "../../src/pipeline/ProxyError.ts"
import { type BodySink, ProxyResponse, type StreamBody } from "../../src/pipeline/ProxyResponse.ts"
import { type ProxyRequest, RequestContext } from "../../src/pipeline/RequestContext.ts"
import * as A2a from "../../src/policies/A2a.ts"
import * as UrlRewrite from "../../src/policies/UrlRewrite.ts"
import * as Headers from "../../src/shared/headers.ts"
import { buildEnv } from "../support/Policies.ts"
import { request, requestForUrl } from "../support/Requests.ts"

// ---------------------------------------------------------------------------------------------
// Helpers

/** A streamed upstream body delivering `chunks` when piped; records whether it was aborted. */
const streamed = (chunks: ReadonlyArray<string | Uint8Array>) => {
  const state = { piped: false, aborted: false }
  const body: StreamBody = {
    _tag: "StreamBody",
    pipeTo: (sink) => {
      state.piped = true
      for (const c of chunks) sink.write(typeof c === "string" ? Buffer.from(c) : c)
      sink.end()
    },
    abort: () => {
      state.aborted = true
    }
  }
  return { body, state }
}

class Collect implements BodySink {
  chunks: Array<Uint8Array> = []
  ended = false
  writableFinished = false
  write(chunk: Uint8Array): boolean {
    this.chunks.push(chunk)
    return true
  }
  end(): void {
    this.ended = true
    this.writableFinished = true
  }
  destroy(): void {}
  once(): unknown {
    return this
  }
  text(): string {
    return Buffer.concat(this.chunks).toString("utf8")
  }
}

const headers = (h: Record<string, string>) => {
  const out = Headers.empty()
  for (const [k, v] of Object.entries(h)) out[k] = v
  return out
}

/** A backend answering `status` with `body` and headers, recording the requests it saw. */
const backend = (status: number, body: ProxyResponse["body"] | (() => ProxyResponse["body"]), h: Record<string, string> = { "content-type": "application/json" }) => {
  const seen: Array<{ path: string; headers: Headers.HeaderMap; body: ProxyRequest["body"] }> = []
  const handler: Handler = Effect.map(Effect.service(RequestContext), (ctx) => {
    seen.push({ path: ctx.path, headers: { ...ctx.headers }, body: ctx.body })
    const b = typeof body === "function" ? body() : body
    if (b !== undefined && typeof b !== "string" && !(b instanceof Uint8Array)) (ctx.openBodies ??= []).push(b)
    return new ProxyResponse(status, headers(h), b)
  })
  return { handler, seen }
}

const build = (config: A2a.Config, limit?: number) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const env = limit === undefined ? buildEnv() : { ...buildEnv(), maxBufferSize: limit }
    return yield* Effect.orDie(Scope.provide(A2a.policy.make(config, env, "policies.a2a"), scope))
  })

/** Runs one request; failures come back as the client would see them. */
const exchange = (middleware: Middleware, next: Handler, ctx: ProxyRequest) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(Effect.provideService(middleware(next), RequestContext, ctx))
    if (Exit.isSuccess(exit)) return exit.value
    const failure = exit.cause.reasons[0]
    return ProxyErrors.toResponse(failure?._tag === "Fail" ? failure.error : ProxyErrors.make({ _tag: "Internal", cause: exit.cause }))
  })

const bodyText = (res: ProxyResponse): string => {
  const b = res.body
  if (typeof b === "string") return b
  if (b instanceof Uint8Array) return Buffer.from(b).toString("utf8")
  return "<stream>"
}

const json = (res: ProxyResponse): unknown => JSON.parse(bodyText(res))

const getCard = (url: string, extra: Record<string, string> = {}, matchedPrefix: string | undefined = "") => {
  const req = requestForUrl(url, matchedPrefix)
  for (const [k, v] of Object.entries(extra)) req.headers[k] = v
  return req
}

const post = (body: string, contentType = "application/json", path = "/") => {
  const req = request({ method: "POST", path, host: "gw.example", headers: { "content-type": contentType } })
  req.hasBody = true
  req.body = { _tag: "Buffered", bytes: Buffer.from(body) }
  return req
}

const V03_CARD = {
  name: "echo",
  version: "1.0.0",
  url: "http://127.0.0.1:9999/a2a/jsonrpc",
  preferredTransport: "JSONRPC",
  additionalInterfaces: [{ url: "http://127.0.0.1:9999/a2a/rest", transport: "HTTP+JSON" }],
  protocolVersion: "0.3.0",
  skills: [{ id: "echo", name: "Echo" }]
}

const V10_CARD = {
  name: "echo",
  supportedInterfaces: [
    { url: "http://backend.internal/a2a/jsonrpc/", protocolBinding: "JSONRPC", protocolVersion: "1.0" },
    { url: "backend.internal:50051", protocolBinding: "GRPC", protocolVersion: "1.0" }
  ],
  version: "1.0.0"
}

// ---------------------------------------------------------------------------------------------
// Agent cards

describe("a2a agent cards", () => {
  it.effect("v0.3: url and additionalInterfaces are re-anchored at the gateway URL the client used", () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      const up = backend(200, JSON.stringify(V03_CARD), { "content-type": "application/json", "content-length": "999", etag: '"abc"' })
      const ctx = getCard("http://gw.example:8080/.well-known/agent-card.json", { "accept-encoding": "gzip", "if-none-match": '"abc"' })
      const res = yield* exchange(mw, up.handler, ctx)
      assert.strictEqual(res.status, 200)
      assert.deepStrictEqual(json(res), {
        ...V03_CARD,
        url: "http://gw.example:8080/a2a/jsonrpc",
        additionalInterfaces: [{ url: "http://gw.example:8080/a2a/rest", transport: "HTTP+JSON" }]
      })
      // Validators of the agent's bytes are gone; the listener computes the new length.
      assert.strictEqual(res.headers["content-length"], undefined)
      assert.strictEqual(res.headers["etag"], undefined)
      assert.strictEqual(res.headers["content-type"], "application/json")
      // The card is asked for uncompressed and unconditionally, so it can be rewritten.
      assert.strictEqual(up.seen[0]!.headers["accept-encoding"], undefined)
      assert.strictEqual(up.seen[0]!.headers["if-none-match"], undefined)
      assert.strictEqual(ctx.a2a?.method, undefined)
      assert.strictEqual(ctx.celExtensions?.backendProtocol, "a2a")
    }))

  it.effect("the legacy agent.json path is a card too; an agent URL without path stays without one", () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      const up = backend(200, JSON.stringify({ name: "old", url: "http://10.0.0.7:9999" }))
      const res = yield* exchange(mw, up.handler, getCard("https://gw.example/agents/old/.well-known/agent.json"))
      assert.deepStrictEqual(json(res), { name: "old", url: "https://gw.example/agents/old" })
    }))

  it.effect("v1.0 behind a prefix urlRewrite: the route prefix comes back; a gRPC host:port is left alone", () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      const rewrite = yield* Effect.orDie(Effect.scoped(UrlRewrite.policy.make({ path: { prefix: "/" } }, buildEnv(), "policies.urlRewrite")))
      const up = backend(200, JSON.stringify(V10_CARD))
      const ctx = getCard("https://gw.example/api/.well-known/agent-card.json", {}, "/api")
      const res = yield* exchange((next) => rewrite(mw(next)), up.handler, ctx)
      assert.strictEqual(up.seen[0]!.path, "/.well-known/agent-card.json")
      assert.deepStrictEqual(json(res), {
        name: "echo",
        supportedInterfaces: [
          { url: "https://gw.example/api/a2a/jsonrpc/", protocolBinding: "JSONRPC", protocolVersion: "1.0" },
          { url: "backend.internal:50051", protocolBinding: "GRPC", protocolVersion: "1.0" }
        ],
        version: "1.0.0"
      })
    }))

  it.effect("an agent served under a path: URLs relative to its base keep their rest, others get the base", () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      const card = {
        supportedInterfaces: [
          { url: "http://agent/agents/a/rpc?x=1", protocolBinding: "JSONRPC" },
          { url: "http://agent/agents/ab/rpc", protocolBinding: "JSONRPC" },
          { url: "https://elsewhere.example/other", protocolBinding: "HTTP+JSON" }
        ]
      }
      const up = backend(200, JSON.stringify(card))
      const res = yield* exchange(mw, up.handler, getCard("http://gw.example/agents/a/.well-known/agent-card.json"))
      assert.deepStrictEqual(json(res), {
        supportedInterfaces: [
          { url: "http://gw.example/agents/a/rpc?x=1", protocolBinding: "JSONRPC" },
          // `/agents/ab` is not under `/agents/a` (segment boundary).
          { url: "http://gw.example/agents/a", protocolBinding: "JSONRPC" },
          { url: "http://gw.example/agents/a", protocolBinding: "HTTP+JSON" }
        ]
      })
    }))

  it.effect("a hybrid card (v0.3 fields and v1.0 interfaces) gets both rewritten", () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      const up = backend(200, JSON.stringify({ ...V03_CARD, supportedInterfaces: V10_CARD.supportedInterfaces }))
      const res = yield* exchange(mw, up.handler, getCard("http://gw.example/.well-known/agent-card.json"))
      const card = json(res)
      assert.deepStrictEqual(card, {
        ...V03_CARD,
        url: "http://gw.example/a2a/jsonrpc",
        additionalInterfaces: [{ url: "http://gw.example/a2a/rest", transport: "HTTP+JSON" }],
        supportedInterfaces: [
          { url: "http://gw.example/a2a/jsonrpc/", protocolBinding: "JSONRPC", protocolVersion: "1.0" },
          { url: "backend.internal:50051", protocolBinding: "GRPC", protocolVersion: "1.0" }
        ]
      })
    }))

  it.effect("publicUrl replaces the request's scheme and Host (a forged Host cannot poison the card)", () =>
    Effect.gen(function*() {
      const mw = yield* build({ publicUrl: "https://agents.example.com/edge/" })
      const up = backend(200, JSON.stringify(V03_CARD))
      const res = yield* exchange(mw, up.handler, getCard("http://evil.example/.well-known/agent-card.json"))
      const card = json(res)
      assert.deepStrictEqual(card, {
        ...V03_CARD,
        url: "https://agents.example.com/edge/a2a/jsonrpc",
        additionalInterfaces: [{ url: "https://agents.example.com/edge/a2a/rest", transport: "HTTP+JSON" }]
      })
    }))

  it.effect("X-Forwarded-Proto/-Host are ignored unless trustForwardedHeaders is set", () =>
    Effect.gen(function*() {
      const forwarded = { "x-forwarded-proto": "https", "x-forwarded-host": "public.example, inner.example" }
      const untrusted = yield* build({})
      const up = backend(200, JSON.stringify({ url: "http://agent:1/" }))
      const plain = yield* exchange(untrusted, up.handler, getCard("http://gw.example/.well-known/agent-card.json", forwarded))
      assert.deepStrictEqual(json(plain), { url: "http://gw.example/" })
      const trusted = yield* build({ trustForwardedHeaders: true })
      const res = yield* exchange(trusted, up.handler, getCard("http://gw.example/.well-known/agent-card.json", forwarded))
      assert.deepStrictEqual(json(res), { url: "https://public.example/" })
      // Only http/https are taken from X-Forwarded-Proto.
      const odd = yield* exchange(trusted, up.handler, getCard("http://gw.example/.well-known/agent-card.json", { "x-forwarded-proto": "javascript" }))
      assert.deepStrictEqual(json(odd), { url: "http://gw.example/" })
    }))

  it.effect("a Host that is not an authority cannot become a card URL: 400", () =>
    Effect.gen(function*() {
      const mw = yield* build({ trustForwardedHeaders: true })
      const up = backend(200, JSON.stringify(V03_CARD))
      const res = yield* exchange(mw, up.handler, getCard("http://gw.example/.well-known/agent-card.json", { "x-forwarded-host": 'a.example/"><script>' }))
      assert.strictEqual(res.status, 400)
      assert.strictEqual(bodyText(res), "invalid request")
      assert.strictEqual(up.seen.length, 0)
    }))

  it.effect("stale signatures are removed and that is logged; a card already at the gateway URL keeps them", () =>
    Effect.gen(function*() {
      const messages: Array<string> = []
      const logger = Logger.make((options) => void messages.push(`${options.logLevel} ${String(options.message)}`))
      const mw = yield* build({})
      const signed = { url: "http://agent:9999/rpc", signatures: [{ protected: "eyJ", signature: "sig" }] }
      const up = backend(200, JSON.stringify(signed))
      const res = yield* exchange(mw, up.handler, getCard("http://gw.example/.well-known/agent-card.json")).pipe(Effect.provide(Logger.layer([logger])))
      assert.deepStrictEqual(json(res), { url: "http://gw.example/rpc" })
      assert.strictEqual(messages.length, 1)
      assert.match(messages[0]!, /^Warn a2a at policies\.a2a: removed 1 signature\(s\) from the agent card/)
      const already = { url: "http://gw.example/rpc", signatures: [{ protected: "eyJ", signature: "sig" }] }
      const kept = yield* exchange(mw, backend(200, JSON.stringify(already)).handler, getCard("http://gw.example/.well-known/agent-card.json"))
      assert.deepStrictEqual(json(kept), already)
    }))

  it.effect("a card that cannot be rewritten is 503 `processing failed`", () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      const cases: Array<ProxyResponse["body"]> = ["{not json", "[1,2]", JSON.stringify({ name: "no endpoints" }), JSON.stringify({ url: 7 })]
      for (const body of cases) {
        const res = yield* exchange(mw, backend(200, body).handler, getCard("http://gw.example/.well-known/agent-card.json"))
        assert.strictEqual(res.status, 503)
        assert.strictEqual(bodyText(res), "processing failed")
        assert.strictEqual(res.headers["content-type"], "text/plain")
      }
      const gz = yield* exchange(
        mw,
        backend(200, "\x1f\x8b", { "content-type": "application/json", "content-encoding": "gzip" }).handler,
        getCard("http://gw.example/.well-known/agent-card.json")
      )
      assert.strictEqual(gz.status, 503)
    }))

  it.effect(`a card larger than MAX_CARD_BYTES (${AgentCard.MAX_CARD_BYTES}) is not buffered whole: 503`, () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      const big = Buffer.alloc(AgentCard.MAX_CARD_BYTES + 1, 0x20)
      const up = streamed([`{"url":"http://agent/","pad":"`, big, `"}`])
      const ctx = getCard("http://gw.example/.well-known/agent-card.json")
      const res = yield* exchange(mw, backend(200, () => up.body).handler, ctx)
      assert.strictEqual(res.status, 503)
      assert.strictEqual(bodyText(res), "processing failed")
    }))

  it.effect("the agent's errors pass through untouched; other GETs are not A2A", () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      const notFound = yield* exchange(mw, backend(404, "no card", { "content-type": "text/plain" }).handler, getCard("http://gw.example/.well-known/agent-card.json"))
      assert.strictEqual(notFound.status, 404)
      assert.strictEqual(bodyText(notFound), "no card")
      const ctx = getCard("http://gw.example/.well-known/agent-card.json.bak")
      const other = yield* exchange(mw, backend(200, "{").handler, ctx)
      assert.strictEqual(other.status, 200)
      assert.strictEqual(bodyText(other), "{")
      assert.strictEqual(ctx.a2a, undefined)
      assert.strictEqual(ctx.celExtensions?.backendProtocol, undefined)
    }))
})

// ---------------------------------------------------------------------------------------------
// JSON-RPC calls

describe("a2a JSON-RPC calls", () => {
  it.effect("the method is read and the body goes upstream byte for byte", () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      const body = `{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"kind":"message","role":"user","parts":[{"kind":"text","text":"hi ✓"}],"messageId":"m1"}}}`
      const up = backend(200, `{"jsonrpc":"2.0","id":1,"result":{"kind":"task","id":"t1","contextId":"ctx-1","status":{"state":"working"}}}`)
      const ctx = post(body, "application/json; charset=utf-8")
      const res = yield* exchange(mw, up.handler, ctx)
      const sent = up.seen[0]!.body
      assert.strictEqual(sent._tag, "Buffered")
      assert.strictEqual(sent._tag === "Buffered" ? Buffer.from(sent.bytes).toString("utf8") : "", body)
      assert.strictEqual(res.status, 200)
      assert.deepStrictEqual(ctx.a2a, {
        method: "message/send",
        outcome: "success",
        errorCode: undefined,
        resultKind: "task",
        taskState: "working",
        contextId: "ctx-1"
      })
      assert.strictEqual(ctx.celExtensions?.backendProtocol, "a2a")
    }))

  it.effect("JSON answers are inspected while they stream, without delaying or changing them", () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      const answer = `{"jsonrpc":"2.0","id":"a","result":{"task":{"id":"t1","contextId":"c-9","status":{"state":"TASK_STATE_COMPLETED"}}}}`
      const up = streamed([answer.slice(0, 20), answer.slice(20)])
      const ctx = post(`{"jsonrpc":"2.0","id":"a","method":"SendMessage","params":{}}`)
      const res = yield* exchange(mw, backend(200, () => up.body).handler, ctx)
      // Nothing was read before the response went to the listener.
      assert.isFalse(up.state.piped)
      assert.strictEqual(ctx.a2a?.outcome, undefined)
      const body = res.body
      assert.isTrue(body !== undefined && typeof body !== "string" && !(body instanceof Uint8Array))
      // The listener writes (or aborts) the inspecting body, not the one it wraps.
      assert.deepStrictEqual(ctx.openBodies, [body])
      const sink = new Collect()
      if (body !== undefined && typeof body !== "string" && !(body instanceof Uint8Array)) body.pipeTo(sink)
      assert.strictEqual(sink.text(), answer)
      assert.isTrue(sink.ended)
      assert.deepStrictEqual(ctx.a2a, {
        method: "SendMessage",
        outcome: "success",
        errorCode: undefined,
        resultKind: "task",
        taskState: "TASK_STATE_COMPLETED",
        contextId: "c-9"
      })
    }))

  it.effect("errors, v1.0 bare tasks and messages", () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      const cases: Array<[string, string, Partial<Telemetry.A2aLogFields>]> = [
        ["tasks/get", `{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"Task not found"}}`, { outcome: "error", errorCode: -32001 }],
        ["GetTask", `{"jsonrpc":"2.0","id":1,"result":{"id":"t","contextId":"c","status":{"state":"TASK_STATE_WORKING"}}}`, {
          outcome: "success",
          resultKind: "task",
          taskState: "TASK_STATE_WORKING",
          contextId: "c"
        }],
        ["SendMessage", `{"jsonrpc":"2.0","id":1,"result":{"message":{"messageId":"m","contextId":"c2","role":"ROLE_AGENT"}}}`, {
          outcome: "success",
          resultKind: "message",
          contextId: "c2"
        }],
        ["message/send", `{"jsonrpc":"2.0","id":1,"result":{"kind":"message","messageId":"m","contextId":"c3"}}`, {
          outcome: "success",
          resultKind: "message",
          contextId: "c3"
        }],
        ["message/send", `not json`, { outcome: "unknown" }],
        ["tasks/cancel", `{"jsonrpc":"2.0","id":1}`, { outcome: "unknown" }]
      ]
      for (const [method, answer, expected] of cases) {
        const ctx = post(`{"jsonrpc":"2.0","id":1,"method":"${method}"}`)
        yield* exchange(mw, backend(200, answer).handler, ctx)
        assert.deepStrictEqual(ctx.a2a, { ...Telemetry.fields(method), ...expected }, method)
      }
    }))

  it.effect("SSE answers (message/stream) are passed on as the very same stream", () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      const up = streamed(["data: {}\n\n"])
      const ctx = post(`{"jsonrpc":"2.0","id":1,"method":"message/stream","params":{}}`)
      const res = yield* exchange(mw, backend(200, () => up.body, { "content-type": "text/event-stream" }).handler, ctx)
      assert.strictEqual(res.body, up.body)
      assert.isFalse(up.state.piped)
      assert.deepStrictEqual(ctx.a2a, Telemetry.fields("message/stream"))
    }))

  it.effect(`a JSON answer over MAX_INSPECTED_BYTES streams whole and is logged as outcome unknown`, () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      const pad = "x".repeat(Telemetry.MAX_INSPECTED_BYTES)
      const answer = `{"jsonrpc":"2.0","id":1,"result":{"kind":"task","pad":"${pad}"}}`
      const up = streamed([answer.slice(0, 1000), answer.slice(1000)])
      const ctx = post(`{"jsonrpc":"2.0","id":1,"method":"tasks/get"}`)
      const res = yield* exchange(mw, backend(200, () => up.body).handler, ctx)
      const sink = new Collect()
      const body = res.body
      if (body !== undefined && typeof body !== "string" && !(body instanceof Uint8Array)) body.pipeTo(sink)
      assert.strictEqual(sink.text(), answer)
      assert.strictEqual(ctx.a2a?.outcome, "unknown")
      assert.strictEqual(ctx.a2a?.resultKind, undefined)
    }))

  it.effect("unreadable methods are `unknown`; a body over maxBufferSize is not buffered", () =>
    Effect.gen(function*() {
      const mw = yield* build({}, 16)
      for (const body of ["{oops", `[{"method":"message/send"}]`, `{"method":42}`, `{"method":"${"m".repeat(Protocol.MAX_METHOD_LENGTH + 1)}"}`]) {
        const ctx = post(body)
        yield* exchange(mw, backend(200, "{}").handler, ctx)
        assert.strictEqual(ctx.a2a?.method, "unknown", body)
      }
      // Declared larger than the limit: the stream is left alone (not read) and forwarded.
      const ctx = request({ method: "POST", path: "/", host: "gw.example", headers: { "content-type": "application/json" } })
      ctx.hasBody = true
      Object.defineProperty(ctx.raw, "headers", { value: { "content-length": "100" } })
      const up = backend(200, "{}")
      yield* exchange(mw, up.handler, ctx)
      assert.strictEqual(up.seen[0]!.body._tag, "Stream")
      assert.strictEqual(ctx.a2a?.method, "unknown")
    }))

  it.effect("non-JSON posts and other methods are untouched and not A2A", () =>
    Effect.gen(function*() {
      const mw = yield* build({})
      for (const ctx of [post("hello", "text/plain"), request({ method: "PUT", path: "/", headers: { "content-type": "application/json" } }), request({ method: "DELETE" })]) {
        const up = backend(200, "ok", { "content-type": "text/plain" })
        const res = yield* exchange(mw, up.handler, ctx)
        assert.strictEqual(bodyText(res), "ok")
        assert.strictEqual(ctx.a2a, undefined)
      }
    }))
})

describe("a2a protocol vocabulary", () => {
  it("knows every v0.3 method the SDK speaks and every v1.0 method", async () => {
    const legacy = await import("@a2a-js/sdk/compat/v0_3")
    const v03 = Object.entries(legacy).filter(([name]) => name.startsWith("LEGACY_METHOD_")).map(([, value]) => value)
    assert.isAtLeast(v03.length, 10)
    for (const m of v03) {
      assert.isString(m)
      assert.strictEqual(typeof m === "string" ? Protocol.METHODS.get(m)?.version : undefined, "0.3", String(m))
    }
    for (const m of ["SendMessage", "SendStreamingMessage", "GetTask", "ListTasks", "CancelTask", "SubscribeToTask", "CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig", "ListTaskPushNotificationConfigs", "DeleteTaskPushNotificationConfig", "GetExtendedAgentCard"]) {
      assert.strictEqual(Protocol.METHODS.get(m)?.version, "1.0", m)
      assert.isTrue(legacy.isV1JsonRpcMethod(m), m)
    }
    assert.deepStrictEqual([...Protocol.METHODS].filter(([, i]) => i.streaming).map(([m]) => m).sort(), [
      "SendStreamingMessage",
      "SubscribeToTask",
      "message/stream",
      "tasks/resubscribe",
      "tasks/sendSubscribe"
    ])
  })

  it("JSON media types", () => {
    assert.isTrue(Protocol.isJsonMediaType("application/json"))
    assert.isTrue(Protocol.isJsonMediaType("Application/JSON; charset=utf-8"))
    assert.isTrue(Protocol.isJsonMediaType("application/a2a+json"))
    assert.isFalse(Protocol.isJsonMediaType("text/json"))
    assert.isFalse(Protocol.isJsonMediaType("application/jsonl"))
    assert.isFalse(Protocol.isJsonMediaType(undefined))
  })
})

describe("a2a config", () => {
  const errors = async (policy: string): Promise<ReadonlyArray<string>> => {
    const yaml = `
binds:
- port: 3000
  listeners:
  - routes:
    - policies: {a2a: ${policy}}
      backends: [{host: 127.0.0.1:9999, policies: {a2a: ${policy}}}]
`
    const exit = await Effect.runPromiseExit(validate({ _tag: "Inline", text: yaml }))
    if (Exit.isSuccess(exit)) return []
    const error = Cause.squash(exit.cause)
    if (typeof error === "object" && error !== null && "issues" in error && Array.isArray(error.issues)) return error.issues.map(formatIssue)
    throw new Error(String(error))
  }

  it("a2a: {} is accepted on routes and backends, as upstream", async () => {
    assert.deepStrictEqual(await errors("{}"), [])
    assert.deepStrictEqual(await errors(`{publicUrl: "https://agents.example.com/base", trustForwardedHeaders: true}`), [])
  })

  it("a bad publicUrl or an unknown field is an error naming the field", async () => {
    const bad = await errors(`{publicUrl: "ftp://x"}`)
    assert.strictEqual(bad.length, 2)
    assert.match(bad[0]!, /binds\[0\]\.listeners\[0\]\.routes\[0\]\.policies\.a2a\.publicUrl: invalid publicUrl "ftp:\/\/x" \(expected an absolute http or https URL\)/)
    assert.match(bad[1]!, /routes\[0\]\.backends\[0\]\.policies\.a2a\.publicUrl: invalid publicUrl/)
    const query = await errors(`{publicUrl: "https://a.example/?x=1"}`)
    assert.match(query[0]!, /no query or fragment/)
    const unknown = await errors(`{url: "https://a.example"}`)
    assert.match(unknown[0]!, /routes\[0\]\.policies\.a2a: unknown field "url"$/)
  })
})
