import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Schema, Scope } from "effect"
import { IncomingMessage } from "node:http"
import { Socket } from "node:net"
import type { BuildEnv, Handler } from "../../src/pipeline/Policy.ts"
import type * as ProxyError from "../../src/pipeline/ProxyError.ts"
import { type BodySink, ProxyResponse, type StreamBody } from "../../src/pipeline/ProxyResponse.ts"
import { ProxyRequest, RequestContext } from "../../src/pipeline/RequestContext.ts"
import * as Transformations from "../../src/policies/Transformations.ts"
import * as Headers from "../../src/shared/headers.ts"
import { buildEnv } from "../support/Policies.ts"
import { request } from "../support/Requests.ts"

const decode = Schema.decodeUnknownSync(Transformations.Config)

/** A `next` answering `status` with `headers` and `body`, recording the request it saw. */
const answer = (status: number, headers: Record<string, string>, body: ProxyResponse["body"]) => {
  const seen: Array<{ method: string; path: string; query: string; authority: string; host: string; headers: Headers.HeaderMap; body: string | undefined }> = []
  const handler: Handler = Effect.map(Effect.service(RequestContext), (ctx) => {
    seen.push({
      method: ctx.method,
      path: ctx.path,
      query: ctx.query,
      authority: ctx.authority,
      host: ctx.host,
      headers: { ...ctx.headers },
      body: ctx.body._tag === "Buffered" ? Buffer.from(ctx.body.bytes).toString() : undefined
    })
    const h = Headers.empty()
    for (const [k, v] of Object.entries(headers)) h[k] = v
    return new ProxyResponse(status, h, body)
  })
  return { handler, seen }
}

const apply = (
  config: unknown,
  next: Handler,
  req: ProxyRequest = request(),
  env: BuildEnv = buildEnv()
): Effect.Effect<Exit.Exit<ProxyResponse, ProxyError.ProxyError>> =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const middleware = yield* Effect.orDie(Scope.provide(Transformations.policy.make(decode(config), env, "policies.transformations"), scope))
    return yield* Effect.exit(Effect.provideService(middleware(next), RequestContext, req))
  })

const ok = (exit: Exit.Exit<ProxyResponse, ProxyError.ProxyError>): ProxyResponse => {
  assert.isTrue(Exit.isSuccess(exit))
  if (!Exit.isSuccess(exit)) throw new Error("failed")
  return exit.value
}

const text = (body: ProxyResponse["body"]): string =>
  typeof body === "string" ? body : body instanceof Uint8Array ? Buffer.from(body).toString() : "<stream>"

/** A fake upstream body that delivers `chunks` (ignoring backpressure, the worst case) and records aborts. */
const streamed = (chunks: ReadonlyArray<string>) => {
  const state = { aborted: false, piped: 0 }
  const body: StreamBody = {
    _tag: "StreamBody",
    pipeTo: (sink: BodySink) => {
      state.piped++
      for (const c of chunks) sink.write(Buffer.from(c))
      sink.end()
    },
    abort: () => void (state.aborted = true)
  }
  return { body, state }
}

/** A sink collecting what the listener would write downstream. */
const collector = () => {
  const out = { data: "", ended: false }
  const sink: BodySink = {
    write: (chunk) => {
      out.data += Buffer.from(chunk).toString()
      return true
    },
    end: () => void (out.ended = true),
    destroy: () => {},
    once: () => sink,
    writableFinished: false
  }
  return { sink, out }
}

const withBody = (body: string): ProxyRequest => {
  const raw = new IncomingMessage(new Socket())
  raw.headers = { "content-length": String(body.length) }
  raw.push(Buffer.from(body))
  raw.push(null)
  const headers = Headers.empty()
  headers["host"] = "example.com"
  headers["content-length"] = String(body.length)
  const req = new ProxyRequest(raw, "POST", "/", "", "example.com", "example.com", "http", "HTTP/1.1", headers, "127.0.0.1", 1, 0)
  req.hasBody = true
  return req
}

describe("transformations: request", () => {
  it.effect("metadata, replace, add, set, remove, body run in that order, each seeing the ones before", () =>
    Effect.gen(function*() {
      const next = answer(200, {}, "ok")
      const req = request({ headers: { "x-keep": "k", "x-drop": "d", "x-old": "o" } })
      ok(yield* apply({
        request: {
          metadata: { tenant: '"acme"' },
          replace: '{"x-keep": request.headers["x-keep"], "x-multi": ["a", "b"], "x-num": 7, ":path": "/ignored"}',
          add: { "x-multi": '"c"', "x-tenant": "metadata.tenant" },
          set: { "x-keep": 'request.headers["x-keep"] + "!"', "x-count": 'string(size(request.headers["x-multi"]))' },
          remove: ["x-num"],
          body: '"tenant=" + metadata.tenant + ";" + request.headers["x-keep"]'
        }
      }, next.handler, req))
      const seen = next.seen[0]!
      assert.deepStrictEqual(seen.headers["x-multi"], ["a", "b", "c"])
      assert.strictEqual(seen.headers["x-tenant"], "acme")
      assert.strictEqual(seen.headers["x-keep"], "k!")
      assert.strictEqual(seen.headers["x-count"], "3")
      assert.strictEqual(seen.headers["x-num"], undefined)
      assert.strictEqual(seen.headers["x-drop"], undefined)
      assert.strictEqual(seen.headers["x-old"], undefined)
      // Host follows the authority through a replace that did not name it.
      assert.strictEqual(seen.headers["host"], "example.com")
      assert.strictEqual(seen.path, "/")
      assert.strictEqual(seen.body, "tenant=acme;k!")
      assert.strictEqual(seen.headers["content-length"], "14")
    }))

  it.effect("a header whose expression errors, is not a string, or carries CR/LF is removed, never passed through", () =>
    Effect.gen(function*() {
      const next = answer(200, {}, "ok")
      const req = request({ headers: { "x-user": "forged", "x-num": "forged", "x-crlf": "forged" } })
      ok(yield* apply({
        request: {
          set: {
            "x-user": 'request.headers["x-missing"]',
            "x-num": "1 + 1",
            "x-crlf": '"a\\r\\nx-injected: 1"',
            "x-utf8": '"é"'
          }
        }
      }, next.handler, req))
      const seen = next.seen[0]!
      assert.strictEqual(seen.headers["x-user"], undefined)
      assert.strictEqual(seen.headers["x-num"], undefined)
      assert.strictEqual(seen.headers["x-crlf"], undefined)
      assert.strictEqual(seen.headers["x-injected"], undefined)
      // UTF-8 bytes carried as latin-1, as Node writes them on the wire.
      assert.strictEqual(seen.headers["x-utf8"], "\u00c3\u00a9")
    }))

  it.effect(":path goes through the path normaliser; :method and :authority set the request line and Host", () =>
    Effect.gen(function*() {
      const next = answer(200, {}, "ok")
      const req = request({ path: "/old", query: "?a=1" })
      ok(yield* apply({
        request: {
          set: {
            ":path": '"/v2/./x/../items%7e?" + "b=2"',
            ":method": '"PUT"',
            ":authority": '"API.internal:8443"'
          }
        }
      }, next.handler, req))
      const seen = next.seen[0]!
      assert.strictEqual(seen.path, "/v2/items~")
      assert.strictEqual(seen.query, "?b=2")
      assert.strictEqual(seen.method, "PUT")
      assert.strictEqual(seen.authority, "API.internal:8443")
      assert.strictEqual(seen.host, "api.internal")
      assert.strictEqual(seen.headers["host"], "API.internal:8443")
      assert.isTrue(req.authorityRewritten)
      assert.deepStrictEqual(req.originalUrl, { authority: "example.com", host: "example.com", path: "/old", query: "?a=1" })
    }))

  it.effect("an invalid :path (encoded slash, no leading slash) or :authority is ignored", () =>
    Effect.gen(function*() {
      const next = answer(200, {}, "ok")
      const req = request({ path: "/keep" })
      ok(yield* apply({ request: { set: { ":path": '"/a%2fb"', ":authority": '"bad host"' }, add: { ":path": '"relative"' } } }, next.handler, req))
      assert.strictEqual(next.seen[0]!.path, "/keep")
      assert.strictEqual(next.seen[0]!.authority, "example.com")
      assert.isFalse(req.authorityRewritten)
    }))

  it.effect("request.body is buffered only when read, and a failing body expression empties the body", () =>
    Effect.gen(function*() {
      const next = answer(200, {}, "ok")
      ok(yield* apply({ request: { body: 'string(request.body).upperAscii()' } }, next.handler, withBody("hello")))
      assert.strictEqual(next.seen[0]!.body, "HELLO")
      ok(yield* apply({ request: { body: 'json(request.body).missing' } }, next.handler, withBody("{}")))
      assert.strictEqual(next.seen[1]!.body, "")
      assert.strictEqual(next.seen[1]!.headers["content-length"], "0")
      // A map result is sent as JSON; null keeps the body.
      ok(yield* apply({ request: { body: '{"n": 1}' } }, next.handler, withBody("x")))
      assert.strictEqual(next.seen[2]!.body, '{"n":1}')
      const untouched = withBody("orig")
      ok(yield* apply({ request: { body: "null" } }, next.handler, untouched))
      assert.strictEqual(untouched.body._tag, "Stream")
    }))
})

describe("transformations: response", () => {
  it.effect("edits headers and :status of the response; response CEL sees request metadata", () =>
    Effect.gen(function*() {
      const next = answer(200, { server: "upstream", "x-a": "1" }, "ok")
      const res = ok(yield* apply({
        request: { metadata: { user: '"alice"' } },
        response: {
          add: { "x-a": '"2"' },
          set: { ":status": "response.code == 200 ? 201 : 500", "x-user": "metadata.user", "x-bad": "response.headers.nope" },
          remove: ["server"]
        }
      }, next.handler))
      assert.strictEqual(res.status, 201)
      assert.deepStrictEqual(res.headers["x-a"], ["1", "2"])
      assert.strictEqual(res.headers["x-user"], "alice")
      assert.strictEqual(res.headers["x-bad"], undefined)
      assert.strictEqual(res.headers["server"], undefined)
    }))

  it.effect("a streamed upstream body is read when response.body is used, and replaced", () =>
    Effect.gen(function*() {
      const upstreamBody = streamed(['{"items":', "[1,2,3]}"])
      const next = answer(200, { "content-length": "17" }, upstreamBody.body)
      const req = request()
      req.openBodies = [upstreamBody.body]
      const res = ok(yield* apply({ response: { body: 'string(size(json(response.body).items))', set: { "x-len": "string(size(response.body))" } } }, next.handler, req))
      assert.strictEqual(text(res.body), "3")
      assert.strictEqual(res.headers["x-len"], "17")
      assert.strictEqual(res.headers["content-length"], undefined)
      // Read to the end: nothing left for the listener to abort.
      assert.deepStrictEqual(req.openBodies, [])
      assert.isFalse(upstreamBody.state.aborted)
    }))

  it.effect("over maxBufferSize the upstream body streams on untouched and response.body is absent", () =>
    Effect.gen(function*() {
      const upstreamBody = streamed(["0123456789", "abcdefghij", "KLMNOP"])
      const next = answer(200, {}, upstreamBody.body)
      const req = request()
      req.openBodies = [upstreamBody.body]
      const env = { ...buildEnv(), maxBufferSize: 12 }
      const res = ok(yield* apply({ response: { body: "response.body + b\"!\"", set: { "x-has": "string(has(response.body))" } } }, next.handler, req, env))
      assert.strictEqual(res.headers["x-has"], "false")
      const body = res.body
      assert.isTrue(body !== undefined && typeof body === "object" && !(body instanceof Uint8Array))
      if (body === undefined || typeof body !== "object" || body instanceof Uint8Array) return
      // The listener writes what it finds in openBodies' place: the prefix, then the rest.
      assert.strictEqual(req.openBodies?.[0], body)
      const { sink, out } = collector()
      body.pipeTo(sink)
      assert.strictEqual(out.data, "0123456789abcdefghijKLMNOP")
      assert.isTrue(out.ended)
    }))

  it.effect("over the limit with an upstream that honours backpressure: it is released once piped on, and nothing is lost", () =>
    Effect.gen(function*() {
      // Like backends/HttpBackend.ts: on `false` it pauses and waits for "drain".
      const chunks = ["0123456789", "abcdefghij", "KLMNOP"]
      let sink: BodySink | undefined
      const pump = (): void => {
        while (sink !== undefined && chunks.length > 0) {
          if (!sink.write(Buffer.from(chunks.shift()!))) {
            sink.once("drain", pump)
            return
          }
        }
        if (chunks.length === 0) sink?.end()
      }
      const body: StreamBody = { _tag: "StreamBody", pipeTo: (s) => ((sink = s), pump()), abort: () => {} }
      const req = request()
      req.openBodies = [body]
      const res = ok(yield* apply({ response: { set: { "x-len": "string(size(response.body))" } } }, answer(200, {}, body).handler, req, { ...buildEnv(), maxBufferSize: 12 }))
      assert.strictEqual(res.headers["x-len"], undefined)
      const spilled = res.body
      if (spilled === undefined || typeof spilled !== "object" || spilled instanceof Uint8Array) return assert.fail("expected a stream")
      const { sink: downstream, out } = collector()
      spilled.pipeTo(downstream)
      assert.strictEqual(out.data, "0123456789abcdefghijKLMNOP")
      assert.isTrue(out.ended)
    }))

  it.effect("a body set without reading response.body replaces a direct response's body", () =>
    Effect.gen(function*() {
      const next = answer(404, {}, "not here")
      const res = ok(yield* apply({ response: { body: '"replaced: " + string(response.code)' } }, next.handler))
      assert.strictEqual(text(res.body), "replaced: 404")
    }))
})

describe("transformations: config", () => {
  it("rejects bad header names, :scheme, and conditional combined with request", () => {
    assert.throws(() => decode({ request: { set: { "bad name": '"x"' } } }), /invalid header name "bad name"/)
    assert.throws(() => decode({ request: { set: { ":scheme": '"https"' } } }), /:scheme is not supported yet/)
    assert.throws(() => decode({ request: {}, conditional: [] }), /conditional cannot be combined/)
  })

  it.effect("a bad CEL expression is a ConfigError at its field path", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const exit = yield* Effect.exit(Scope.provide(Transformations.policy.make(decode({ response: { set: { "x-a": "request.nope(" } } }), buildEnv(), "p.transformations"), scope))
      assert.isTrue(Exit.isFailure(exit))
      assert.include(String(exit), "p.transformations.response.set.x-a")
      const replace = yield* Effect.exit(Scope.provide(Transformations.policy.make(decode({ request: { replace: '"not a map"' } }), buildEnv(), "p.t"), scope))
      assert.include(String(replace), "p.t.request.replace")
      assert.include(String(replace), "must evaluate to a map")
    }))

  it.effect("conditional: the first matching entry transforms, both ways", () =>
    Effect.gen(function*() {
      const config = {
        conditional: [
          { condition: 'request.headers["x-env"] == "canary"', request: { set: { "x-branch": '"canary"' } }, response: { set: { "x-branch": '"canary"' } } },
          { request: { set: { "x-branch": '"fallback"' } } }
        ]
      }
      const next = answer(200, {}, "ok")
      const canary = ok(yield* apply(config, next.handler, request({ headers: { "x-env": "canary" } })))
      assert.strictEqual(next.seen[0]!.headers["x-branch"], "canary")
      assert.strictEqual(canary.headers["x-branch"], "canary")
      const other = ok(yield* apply(config, next.handler, request()))
      assert.strictEqual(next.seen[1]!.headers["x-branch"], "fallback")
      assert.strictEqual(other.headers["x-branch"], undefined)
    }))
})
