import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Schema, Scope } from "effect"
import { TestClock } from "effect/testing"
import { IncomingMessage } from "node:http"
import { Socket } from "node:net"
import type { Handler } from "../../src/pipeline/Policy.ts"
import * as ProxyError from "../../src/pipeline/ProxyError.ts"
import { ProxyResponse, type StreamBody } from "../../src/pipeline/ProxyResponse.ts"
import { ProxyRequest, RequestContext } from "../../src/pipeline/RequestContext.ts"
import * as Retry from "../../src/policies/Retry.ts"
import * as Headers from "../../src/shared/headers.ts"
import { buildEnv, run } from "../support/Policies.ts"
import { request } from "../support/Requests.ts"

type Outcome = number | ProxyError.ProxyErrorReason | { readonly status: number; readonly headers: Record<string, string> }

/** A fake upstream body that records whether it was aborted. */
const streamBody = () => {
  const state = { aborted: false }
  const body: StreamBody = { _tag: "StreamBody", pipeTo: () => {}, abort: () => void (state.aborted = true) }
  return { body, state }
}

/**
 * A `next` answering the given outcomes in turn (the last repeats); records the attempt header
 * each attempt saw and every response body handed out.
 */
const upstream = (...outcomes: ReadonlyArray<Outcome>) => {
  const attempts: Array<string | undefined> = []
  const bodies: Array<ReturnType<typeof streamBody>> = []
  const handler: Handler = Effect.flatMap(Effect.service(RequestContext), (ctx) => {
    const outcome = outcomes[Math.min(attempts.length, outcomes.length - 1)]!
    attempts.push(Headers.get(ctx.headers, Retry.ATTEMPT_HEADER))
    if (typeof outcome === "object" && "_tag" in outcome) return Effect.fail(ProxyError.make(outcome))
    const body = streamBody()
    bodies.push(body)
    const headers = Headers.empty()
    const status = typeof outcome === "number" ? outcome : outcome.status
    if (typeof outcome === "object") for (const [k, v] of Object.entries(outcome.headers)) headers[k] = v
    return Effect.succeed(new ProxyResponse(status, headers, body.body))
  })
  return { handler, attempts, bodies }
}

/** A request whose body is `size` bytes, sent as a real (socket-less) Node request stream. */
const withBody = (size: number): ProxyRequest => {
  const raw = new IncomingMessage(new Socket())
  raw.headers = { "content-length": String(size) }
  raw.push(Buffer.alloc(size, "a"))
  raw.push(null)
  const headers = Headers.empty()
  headers["host"] = "example.com"
  headers["content-length"] = String(size)
  const req = new ProxyRequest(raw, "POST", "/", "", "example.com", "example.com", "http", "HTTP/1.1", headers, "127.0.0.1", 1, 0)
  req.hasBody = true
  return req
}

describe("retry", () => {
  it.effect("attempts defaults to ONE retry: a retried status is tried twice, the retry marked x-retry-attempt: 1", () =>
    Effect.gen(function*() {
      const next = upstream(503)
      const response = yield* run(Retry.policy, { codes: [503] }, next.handler, request())
      assert.strictEqual(response.status, 503)
      assert.deepStrictEqual(next.attempts, [undefined, "1"])
    }))

  it.effect("attempts counts retries: attempts 3 makes four calls numbered 1, 2, 3", () =>
    Effect.gen(function*() {
      const next = upstream(429)
      const response = yield* run(Retry.policy, { attempts: 3, codes: [429] }, next.handler, request())
      assert.strictEqual(response.status, 429)
      assert.deepStrictEqual(next.attempts, [undefined, "1", "2", "3"])
    }))

  it.effect("stops at the first response not in codes, and aborts the bodies of the retried ones", () =>
    Effect.gen(function*() {
      const next = upstream(503, 503, 200)
      const response = yield* run(Retry.policy, { attempts: 5, codes: [503] }, next.handler, request())
      assert.strictEqual(response.status, 200)
      assert.strictEqual(next.attempts.length, 3)
      assert.deepStrictEqual(next.bodies.map((b) => b.state.aborted), [true, true, false])
      assert.strictEqual(response.body, next.bodies[2]!.body)
    }))

  it.effect("a status outside codes is not retried", () =>
    Effect.gen(function*() {
      const next = upstream(500)
      const response = yield* run(Retry.policy, { codes: [503] }, next.handler, request())
      assert.strictEqual(response.status, 500)
      assert.strictEqual(next.attempts.length, 1)
    }))

  it.effect("a connection failure before the response head is retried", () =>
    Effect.gen(function*() {
      const next = upstream({ _tag: "UpstreamFailed", cause: new Error("ECONNREFUSED") }, 200)
      const response = yield* run(Retry.policy, { codes: [] }, next.handler, request())
      assert.strictEqual(response.status, 200)
      assert.deepStrictEqual(next.attempts, [undefined, "1"])
    }))

  it.effect("the last failure is returned when retries run out", () =>
    Effect.gen(function*() {
      const next = upstream({ _tag: "UpstreamFailed", cause: new Error("ECONNRESET") })
      const error = yield* Effect.flip(run(Retry.policy, { attempts: 2, codes: [] }, next.handler, request()))
      assert.strictEqual(error.reason._tag, "UpstreamFailed")
      assert.strictEqual(next.attempts.length, 3)
    }))

  it.effect("timeouts and policy rejections are not retried", () =>
    Effect.gen(function*() {
      for (const reason of [{ _tag: "UpstreamTimeout" }, { _tag: "RequestTimeout" }, { _tag: "AuthorizationFailed" }] as const) {
        const next = upstream(reason)
        const error = yield* Effect.flip(run(Retry.policy, { attempts: 3, codes: [503] }, next.handler, request()))
        assert.strictEqual(error.reason._tag, reason._tag)
        assert.strictEqual(next.attempts.length, 1)
      }
    }))

  it.effect("waits backoff between attempts", () =>
    Effect.gen(function*() {
      const next = upstream(503, 200)
      const fiber = yield* Effect.forkChild(run(Retry.policy, { codes: [503], backoff: "1s" }, next.handler, request()))
      yield* TestClock.adjust("999 millis")
      assert.strictEqual(next.attempts.length, 1)
      yield* TestClock.adjust("1 millis")
      const response = yield* Fiber.join(fiber)
      assert.strictEqual(response.status, 200)
      assert.strictEqual(next.attempts.length, 2)
    }))

  it.effect("honours a longer Retry-After in seconds", () =>
    Effect.gen(function*() {
      const next = upstream({ status: 503, headers: { "retry-after": "5" } }, 200)
      const fiber = yield* Effect.forkChild(run(Retry.policy, { codes: [503], backoff: "1s" }, next.handler, request()))
      yield* TestClock.adjust("4999 millis")
      assert.strictEqual(next.attempts.length, 1)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual((yield* Fiber.join(fiber)).status, 200)
    }))

  it.effect("honours Retry-After as an HTTP date, and never waits less than backoff", () =>
    Effect.gen(function*() {
      // TestClock starts at the epoch.
      const next = upstream({ status: 503, headers: { "retry-after": "Thu, 01 Jan 1970 00:00:03 GMT" } }, { status: 503, headers: { "retry-after": "0" } }, 200)
      const fiber = yield* Effect.forkChild(run(Retry.policy, { attempts: 2, codes: [503], backoff: "2s" }, next.handler, request()))
      yield* TestClock.adjust("2999 millis")
      assert.strictEqual(next.attempts.length, 1)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(next.attempts.length, 2)
      yield* TestClock.adjust("1999 millis")
      assert.strictEqual(next.attempts.length, 2)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual((yield* Fiber.join(fiber)).status, 200)
    }))

  it.effect("caps Retry-After at RETRY_AFTER_MAX_MS", () =>
    Effect.gen(function*() {
      const next = upstream({ status: 429, headers: { "retry-after": "3600" } }, 200)
      const fiber = yield* Effect.forkChild(run(Retry.policy, { codes: [429] }, next.handler, request()))
      yield* TestClock.adjust(Retry.RETRY_AFTER_MAX_MS - 1)
      assert.strictEqual(next.attempts.length, 1)
      yield* TestClock.adjust(1)
      assert.strictEqual((yield* Fiber.join(fiber)).status, 200)
    }))

  it.effect("every attempt starts from the original headers (backend policies do not pile up)", () =>
    Effect.gen(function*() {
      const seen: Array<Headers.HeaderValue | undefined> = []
      let n = 0
      const next: Handler = Effect.flatMap(Effect.service(RequestContext), (ctx) => {
        Headers.append(ctx.headers, "x-added", "1")
        seen.push(ctx.headers["x-added"])
        return Effect.succeed(new ProxyResponse(n++ < 2 ? 503 : 200, Headers.empty(), undefined))
      })
      const req = request({ headers: { "x-added": "0" } })
      yield* run(Retry.policy, { attempts: 2, codes: [503] }, next, req)
      assert.deepStrictEqual(seen, [["0", "1"], ["0", "1"], ["0", "1"]])
    }))

  it.effect("a small body is buffered once and replayed on every attempt", () =>
    Effect.gen(function*() {
      const next = upstream(503)
      const req = withBody(1000)
      yield* run(Retry.policy, { codes: [503] }, next.handler, req)
      assert.strictEqual(next.attempts.length, 2)
      assert.strictEqual(req.body._tag, "Buffered")
      assert.strictEqual(req.body._tag === "Buffered" ? req.body.bytes.length : -1, 1000)
    }))

  it.effect("a body larger than MAX_REPLAY_BYTES is forwarded once, streaming, without retries", () =>
    Effect.gen(function*() {
      const next = upstream(503)
      const req = withBody(Retry.MAX_REPLAY_BYTES + 1)
      const response = yield* run(Retry.policy, { codes: [503] }, next.handler, req)
      assert.strictEqual(response.status, 503)
      assert.strictEqual(next.attempts.length, 1)
      assert.strictEqual(req.body._tag, "Stream")
    }))

  it.effect("a client gone mid-backoff interrupts the loop: no further attempt", () =>
    Effect.gen(function*() {
      const next = upstream(503, 200)
      const fiber = yield* Effect.forkChild(run(Retry.policy, { codes: [503], backoff: "10s" }, next.handler, request()))
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(fiber)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(next.attempts.length, 1)
    }))

  it("decodes upstream's shape, CEL conditions included", () => {
    assert.strictEqual(Schema.decodeUnknownExit(Retry.Config)({ attempts: 2, codes: [429] })._tag, "Success")
    assert.strictEqual(Schema.decodeUnknownExit(Retry.Config)({ attempts: 2 })._tag, "Failure")
    assert.strictEqual(Schema.decodeUnknownExit(Retry.Config)({ attempts: 0, codes: [] })._tag, "Failure")
    const cel = Schema.decodeUnknownExit(Retry.Config)({ codes: [503], precondition: "request.method == \"GET\"", condition: "response.code == 500" })
    assert.strictEqual(cel._tag, "Success")
  })

  it.effect("precondition false: one attempt, no retries; true: retried as usual", () =>
    Effect.gen(function*() {
      const config = { attempts: 2, codes: [503], precondition: 'request.method == "GET"' }
      const post = upstream(503, 200)
      assert.strictEqual((yield* run(Retry.policy, config, post.handler, request({ method: "POST" }))).status, 503)
      assert.deepStrictEqual(post.attempts, [undefined])
      const get = upstream(503, 200)
      assert.strictEqual((yield* run(Retry.policy, config, get.handler, request())).status, 200)
      assert.deepStrictEqual(get.attempts, [undefined, "1"])
    }))

  it.effect("a precondition that errors counts as false; a body is then not buffered for replay", () =>
    Effect.gen(function*() {
      const next = upstream(503, 200)
      const req = withBody(10)
      const response = yield* run(Retry.policy, { codes: [503], precondition: 'request.headers["x-retry"] == "yes"' }, next.handler, req)
      assert.strictEqual(response.status, 503)
      assert.deepStrictEqual(next.attempts, [undefined])
      assert.strictEqual(req.body._tag, "Stream")
    }))

  it.effect("condition retries a response it matches, in addition to codes", () =>
    Effect.gen(function*() {
      const config = { attempts: 3, codes: [503], condition: 'response.headers["x-upstream-state"] == "warming"' }
      const next = upstream({ status: 200, headers: { "x-upstream-state": "warming" } }, 503, { status: 200, headers: { "x-upstream-state": "ready" } })
      const response = yield* run(Retry.policy, config, next.handler, request())
      assert.strictEqual(response.status, 200)
      assert.strictEqual(response.headers["x-upstream-state"], "ready")
      assert.deepStrictEqual(next.attempts, [undefined, "1", "2"])
      assert.isTrue(next.bodies[0]!.state.aborted)
    }))

  it.effect("bad CEL in precondition or condition is a ConfigError at its path", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const make = (config: Retry.Config) => Effect.exit(Scope.provide(Retry.policy.make(config, buildEnv(), "r.policies.retry"), scope))
      assert.include(String(yield* make({ codes: [], precondition: "request.method ==" })), "r.policies.retry.precondition: invalid CEL expression")
      assert.include(String(yield* make({ codes: [], condition: "response.code" })), "r.policies.retry.condition: invalid CEL expression")
    }))

  it("reads Retry-After seconds and dates", () => {
    assert.strictEqual(Retry.retryAfterMillis("7", 0), 7000)
    assert.strictEqual(Retry.retryAfterMillis("Thu, 01 Jan 1970 00:00:10 GMT", 4000), 6000)
    assert.strictEqual(Retry.retryAfterMillis("Thu, 01 Jan 1970 00:00:10 GMT", 20_000), 0)
    assert.isUndefined(Retry.retryAfterMillis("soon", 0))
    assert.isUndefined(Retry.retryAfterMillis(undefined, 0))
  })
})
