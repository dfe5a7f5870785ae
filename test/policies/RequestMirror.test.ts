import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Random, Schema, Scope } from "effect"
import { TestClock } from "effect/testing"
import type { Handler, Middleware } from "../../src/pipeline/Policy.ts"
import * as ProxyError from "../../src/pipeline/ProxyError.ts"
import { type BodySink, ProxyResponse, type StreamBody } from "../../src/pipeline/ProxyResponse.ts"
import { type ProxyRequest, RequestContext } from "../../src/pipeline/RequestContext.ts"
import * as RequestMirror from "../../src/policies/RequestMirror.ts"
import * as Headers from "../../src/shared/headers.ts"
import { buildEnv, upstream } from "../support/Policies.ts"
import { request } from "../support/Requests.ts"

/** A mirror backend: records the copies it got and answers with `answer`. */
const mirrorBackend = (answer: (ctx: ProxyRequest) => Handler) => {
  const copies: Array<ProxyRequest> = []
  const handler: Handler = Effect.flatMap(Effect.service(RequestContext), (ctx) => {
    copies.push(ctx)
    return answer(ctx)
  })
  return { handler, copies }
}

/** An upstream body that ends when `end()` is called, recording whether it was aborted. */
const pendingBody = () => {
  const state: { sink: BodySink | undefined; aborted: boolean } = { sink: undefined, aborted: false }
  const body: StreamBody = {
    _tag: "StreamBody",
    pipeTo: (sink) => void (state.sink = sink),
    abort: () => void (state.aborted = true)
  }
  return { body, state }
}

const build = (config: RequestMirror.Config, backend: Handler) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const middleware: Middleware = yield* Effect.orDie(Scope.provide(RequestMirror.policy.make(config, buildEnv(backend), "policies.requestMirror"), scope))
    return { middleware, scope }
  })

const send = (middleware: Middleware, next: Handler, req: ProxyRequest) => Effect.provideService(middleware(next), RequestContext, req)

const config = (percentage: number): RequestMirror.Config => ({ backend: { host: "127.0.0.1:9" }, percentage })

describe("requestMirror", () => {
  it.effect("sends a body-less copy of the request, and the response is the real upstream's", () =>
    Effect.gen(function*() {
      const mirror = mirrorBackend(() => Effect.succeed(new ProxyResponse(500, Headers.empty(), "mirror says no")))
      const { middleware } = yield* build(config(1), mirror.handler)
      const next = upstream()
      const req = request({ method: "POST", path: "/orders", query: "?id=7", headers: { "content-length": "12", "x-trace": "abc" } })
      req.hasBody = true
      const response = yield* send(middleware, next.handler, req)
      yield* Effect.yieldNow
      assert.strictEqual(response.status, 200)
      assert.strictEqual(response.body, "upstream")
      assert.strictEqual(mirror.copies.length, 1)
      const copy = mirror.copies[0]!
      assert.notStrictEqual(copy, req)
      assert.strictEqual(copy.method, "POST")
      assert.strictEqual(copy.pathAndQuery, "/orders?id=7")
      assert.strictEqual(copy.headers["x-trace"], "abc")
      assert.isUndefined(copy.headers["content-length"])
      assert.isFalse(copy.hasBody)
      // The real request keeps its framing.
      assert.strictEqual(req.headers["content-length"], "12")
    }))

  it.effect("percentage 0 never mirrors; the draw comes from the Random service", () =>
    Effect.gen(function*() {
      const mirror = mirrorBackend(() => Effect.succeed(new ProxyResponse(200, Headers.empty(), undefined)))
      const none = yield* build(config(0), mirror.handler)
      yield* send(none.middleware, upstream().handler, request())
      const half = yield* build(config(0.5), mirror.handler)
      const draws = [0.7, 0.2, 0.5, 0.49]
      const fixed: Random.Random = { nextDoubleUnsafe: () => draws.shift()!, nextIntUnsafe: () => 0 }
      for (let i = 0; i < 4; i++) yield* Effect.provideService(send(half.middleware, upstream().handler, request({ path: `/${i}` })), Random.Random, fixed)
      yield* Effect.yieldNow
      assert.deepStrictEqual(mirror.copies.map((c) => c.path), ["/1", "/3"])
    }))

  it.effect("a failing mirror does not affect the response", () =>
    Effect.gen(function*() {
      const mirror = mirrorBackend(() => Effect.fail(ProxyError.make({ _tag: "UpstreamFailed", cause: new Error("ECONNREFUSED") })))
      const { middleware } = yield* build(config(1), mirror.handler)
      const response = yield* send(middleware, upstream().handler, request())
      yield* Effect.yieldNow
      assert.strictEqual(response.status, 200)
      assert.strictEqual(mirror.copies.length, 1)
    }))

  it.effect("a slow mirror does not delay the response; its body is drained, or aborted at MIRROR_TIMEOUT_MS", () =>
    Effect.gen(function*() {
      const bodies: Array<ReturnType<typeof pendingBody>> = []
      const mirror = mirrorBackend((ctx) => {
        const body = pendingBody()
        bodies.push(body)
        ;(ctx.openBodies ??= []).push(body.body)
        return Effect.succeed(new ProxyResponse(200, Headers.empty(), body.body))
      })
      const { middleware } = yield* build(config(1), mirror.handler)
      yield* send(middleware, upstream().handler, request())
      yield* send(middleware, upstream().handler, request())
      yield* Effect.yieldNow
      assert.strictEqual(bodies.length, 2)
      // The first mirror's body ends: drained, not aborted.
      bodies[0]!.state.sink!.write(new Uint8Array(3))
      bodies[0]!.state.sink!.end()
      // The second never ends: aborted at the deadline.
      yield* TestClock.adjust(RequestMirror.MIRROR_TIMEOUT_MS)
      assert.isFalse(bodies[0]!.state.aborted)
      assert.isTrue(bodies[1]!.state.aborted)
    }))

  it.effect("at most MAX_IN_FLIGHT copies run; more are dropped until one finishes", () =>
    Effect.gen(function*() {
      const mirror = mirrorBackend(() => Effect.never)
      const { middleware } = yield* build(config(1), mirror.handler)
      for (let i = 0; i < RequestMirror.MAX_IN_FLIGHT + 5; i++) {
        const response = yield* send(middleware, upstream().handler, request())
        assert.strictEqual(response.status, 200)
      }
      yield* Effect.yieldNow
      assert.strictEqual(mirror.copies.length, RequestMirror.MAX_IN_FLIGHT)
      // The stuck copies time out and free their slots.
      yield* TestClock.adjust(RequestMirror.MIRROR_TIMEOUT_MS)
      yield* send(middleware, upstream().handler, request())
      yield* Effect.yieldNow
      assert.strictEqual(mirror.copies.length, RequestMirror.MAX_IN_FLIGHT + 1)
    }))

  it.effect("closing the snapshot scope interrupts copies in flight", () =>
    Effect.gen(function*() {
      const state = { interrupted: 0 }
      const mirror = mirrorBackend(() => Effect.onInterrupt(Effect.never, () => Effect.sync(() => void state.interrupted++)))
      const { middleware, scope } = yield* build(config(1), mirror.handler)
      yield* send(middleware, upstream().handler, request())
      yield* Effect.yieldNow
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(state.interrupted, 1)
    }))

  it("decodes upstream's shape", () => {
    const decode = Schema.decodeUnknownExit(RequestMirror.Config)
    assert.strictEqual(decode({ backend: { host: "127.0.0.1:8081" }, percentage: 0.5 })._tag, "Success")
    assert.strictEqual(decode({ backend: { backend: "shadow" }, percentage: 1 })._tag, "Success")
    assert.strictEqual(decode({ backend: { host: "a:1" } })._tag, "Failure")
    assert.strictEqual(decode({ backend: { host: "a:1" }, percentage: 1.5 })._tag, "Failure")
    assert.strictEqual(decode({ backend: { host: "a:1", backend: "b" }, percentage: 1 })._tag, "Failure")
    assert.include(String(decode({ backend: { service: { name: "x", port: 80 } }, percentage: 1 })), "requestMirror.backend.service is not supported yet")
  })
})
