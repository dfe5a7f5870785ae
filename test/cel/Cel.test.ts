import { assert, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import { IncomingMessage } from "node:http"
import { Socket } from "node:net"
import * as Cel from "../../src/cel/Cel.ts"
import * as CelContext from "../../src/cel/Context.ts"
import * as Functions from "../../src/cel/Functions.ts"
import { ProxyRequest } from "../../src/pipeline/RequestContext.ts"
import { ProxyResponse } from "../../src/pipeline/ProxyResponse.ts"
import * as Headers from "../../src/shared/headers.ts"
import { request } from "../support/Requests.ts"

const PATH = "binds[0].listeners[0].routes[0].policies.authorization.rules[0]"

const compileError = (source: string) =>
  Effect.gen(function*() {
    const result = yield* Effect.result(Cel.compile(source, PATH))
    assert.isTrue(Result.isFailure(result), `expected ${source} to be rejected`)
    return Result.isFailure(result) ? result.failure.issues : []
  })

/** A request whose Node side really carries `body`, for the body-reading path. */
const withBody = (body: string): ProxyRequest => {
  const raw = new IncomingMessage(new Socket())
  raw.headers["content-length"] = String(Buffer.byteLength(body))
  raw.push(body)
  raw.push(null)
  const headers = Headers.empty()
  headers["content-type"] = "application/json"
  const ctx = new ProxyRequest(raw, "POST", "/api", "", "example.com", "example.com", "http", "HTTP/1.1", headers, "127.0.0.1", 1234, 0)
  ctx.hasBody = true
  return ctx
}

describe("cel compile", () => {
  it.effect("a syntax error is a ConfigError at the field path with the parser's reason", () =>
    Effect.gen(function*() {
      const issues = yield* compileError("request.method ==")
      assert.strictEqual(issues.length, 1)
      assert.strictEqual(issues[0]!.path, PATH)
      assert.strictEqual(issues[0]!.message, `invalid CEL expression "request.method ==": Unexpected token: EOF (at offset 17)`)
    }))

  it.effect("unknown variables, fields and functions, and type errors are ConfigErrors", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* compileError("nope == 1"))[0]!.message, `invalid CEL expression "nope == 1": Unknown variable: nope (at offset 0)`)
      assert.strictEqual((yield* compileError("request.methd"))[0]!.message, `invalid CEL expression "request.methd": No such key: methd (at offset 8)`)
      assert.include((yield* compileError("nosuch(1)"))[0]!.message, "nosuch")
      assert.strictEqual(
        (yield* compileError(`request.method + 1`))[0]!.message,
        `invalid CEL expression "request.method + 1": no such overload: string + int (at offset 0)`
      )
    }))

  it.effect("compileBool rejects an expression that cannot be a boolean", () =>
    Effect.gen(function*() {
      const result = yield* Effect.result(Cel.compileBool(`request.path`, PATH))
      assert.isTrue(Result.isFailure(result))
      if (Result.isFailure(result)) {
        assert.strictEqual(result.failure.issues[0]!.message, `invalid CEL expression "request.path": must evaluate to bool, not string`)
      }
      const ok = yield* Cel.compileBool(`jwt.admin`, PATH)
      assert.strictEqual(ok.type, "dyn")
    }))

  it.effect("references name the roots and first fields an expression reads", () =>
    Effect.gen(function*() {
      const p = yield* Cel.compile(`request.headers["x-a"] == "1" && jwt.sub == "me" && source.address != ""`, PATH)
      assert.deepStrictEqual([...p.references.roots].sort(), ["jwt", "request", "source"])
      assert.deepStrictEqual([...p.references.paths].sort(), ["jwt.sub", "request.headers", "source.address"])
      assert.isFalse(p.references.requestBody)
      assert.isTrue((yield* Cel.compile(`json(request.body).model == "x"`, PATH)).references.requestBody)
      assert.isTrue((yield* Cel.compile(`toJson(request) != ""`, PATH)).references.requestBody)
      assert.isTrue((yield* Cel.compile(`json(response.body).ok`, PATH)).references.responseBody)
      // A macro's iteration variable is not a root.
      assert.deepStrictEqual([...(yield* Cel.compile(`[1].exists(request, request == 1)`, PATH)).references.roots], [])
    }))
})

describe("cel evaluation never throws", () => {
  it.effect("errors are values from eval and false from evalBool", () =>
    Effect.gen(function*() {
      const act = CelContext.forRequest(request())
      const missing = yield* Cel.compile(`request.headers["x-missing"] == "a"`, PATH)
      const r = missing.eval(act)
      assert.isTrue(Result.isFailure(r))
      if (Result.isFailure(r)) assert.strictEqual(r.failure.code, "no_such_key")
      assert.isFalse(missing.evalBool(act))
      // Negation of an error is still an error, so a deny rule can tell it apart from false.
      const negated = yield* Cel.compile(`!(request.headers["x-missing"] == "a")`, PATH)
      assert.isTrue(Result.isFailure(negated.eval(act)))
      assert.isFalse(negated.evalBool(act))
      const failing = yield* Cel.compile(`fail("no")`, PATH)
      assert.isFalse(failing.evalBool(act))
      assert.strictEqual(failing.evalString(act), undefined)
      assert.strictEqual(failing.evalValue(act), undefined)
      const notBool = yield* Cel.compile(`jwt`, PATH)
      assert.isFalse(notBool.evalBool(act))
      const absentJwt = notBool.eval(act)
      assert.isTrue(Result.isFailure(absentJwt))
      if (Result.isFailure(absentJwt)) assert.strictEqual(absentJwt.failure.code, "unknown_variable")
    }))

  it.effect("a bad runtime input (invalid regex, bad base64, bad JSON) is an error, not a throw", () =>
    Effect.gen(function*() {
      const act = CelContext.forRequest(request({ headers: { "x-re": "(", "x-b64": "!!", "x-json": "{" } }))
      for (const source of [`"a".regexReplace(request.headers["x-re"], "b")`, `base64.decode(request.headers["x-b64"])`, `json(request.headers["x-json"])`, `url.decode("%E0%A4%A")`, `cidr("nope")`]) {
        const p = yield* Cel.compile(source, PATH)
        assert.isTrue(Result.isFailure(p.eval(act)), source)
        assert.strictEqual(p.evalValue(act), undefined)
      }
    }))

  it.effect("evalString formats values as header values take them", () =>
    Effect.gen(function*() {
      const act = CelContext.forRequest(request())
      const text = (s: string) => Effect.map(Cel.compile(s, PATH), (p) => p.evalString(act))
      assert.strictEqual(yield* text(`"a"`), "a")
      assert.strictEqual(yield* text(`1 + 2`), "3")
      assert.strictEqual(yield* text(`true`), "true")
      assert.strictEqual(yield* text(`b"hi"`), "hi")
      assert.strictEqual(yield* text(`{"a": [1, 2.5]}`), `{"a":[1,2.5]}`)
    }))

  it.effect("the activation reads the live request: later policy changes are visible", () =>
    Effect.gen(function*() {
      const ctx = request({ path: "/old" })
      const p = yield* Cel.compile(`request.path == "/new" && request.headers["x-set"] == "1"`, PATH)
      assert.isFalse(p.evalBool(CelContext.forRequest(ctx)))
      ctx.path = "/new"
      ctx.headers["x-set"] = "1"
      assert.isTrue(p.evalBool(CelContext.forRequest(ctx)))
    }))

  it.effect("extensions attached by a policy become CEL roots", () =>
    Effect.gen(function*() {
      const ctx = request()
      const p = yield* Cel.compile(`jwt.sub == "alice" && jwt.n == 3 && jwt.groups.exists(g, g == "admin")`, PATH)
      assert.isFalse(p.evalBool(CelContext.forRequest(ctx)))
      CelContext.attach(ctx, "jwt", Functions.fromJson({ sub: "alice", n: 3, groups: ["dev", "admin"] }))
      assert.isTrue(p.evalBool(CelContext.forRequest(ctx)))
      CelContext.attach(ctx, "jwt", undefined)
      assert.isFalse(p.evalBool(CelContext.forRequest(ctx)))
    }))

  it.effect("response phase: response.code, headers and a buffered body", () =>
    Effect.gen(function*() {
      const headers = Headers.empty()
      headers["x-auth-request-user"] = "octocat"
      const res = new ProxyResponse(200, headers, `{"Node":{"Name":"n1"}}`)
      const act = CelContext.forResponse(request(), res)
      const p = yield* Cel.compile(`response.code == 200 && response.headers["X-Auth-Request-User"] == "octocat" && json(response.body).Node.Name == "n1"`, PATH)
      assert.isTrue(p.evalBool(act))
    }))
})

describe("cel request body", () => {
  it.effect("the body is read only when an expression references it, bounded by the limit", () =>
    Effect.gen(function*() {
      const uses = yield* Cel.compile(`json(request.body).model == "gpt"`, PATH)
      const ignores = yield* Cel.compile(`request.method == "POST"`, PATH)
      assert.isTrue(CelContext.needsBody(uses))
      assert.isFalse(CelContext.needsBody([ignores, undefined]))
      assert.isTrue(CelContext.needsBody([ignores, uses]))

      const untouched = withBody(`{"model":"gpt"}`)
      yield* CelContext.bodyReader([ignores], 1024)(untouched)
      assert.strictEqual(untouched.body._tag, "Stream")
      assert.isFalse(uses.evalBool(CelContext.forRequest(untouched)))

      const read = withBody(`{"model":"gpt"}`)
      yield* CelContext.bodyReader(uses, 1024)(read)
      assert.strictEqual(read.body._tag, "Buffered")
      assert.isTrue(uses.evalBool(CelContext.forRequest(read)))

      // Over the limit: not an error, the body is simply not available to CEL.
      const big = withBody(`{"model":"gpt","pad":"${"x".repeat(100)}"}`)
      yield* CelContext.bodyReader(uses, 16)(big)
      assert.notStrictEqual(big.body._tag, "Buffered")
      const r = uses.eval(CelContext.forRequest(big))
      assert.isTrue(Result.isFailure(r))
      if (Result.isFailure(r)) assert.strictEqual(r.failure.code, "no_such_key")
    }))
})
