/**
 * Runs a single policy's middleware without sockets: build it from config, wrap a stub
 * `next`, provide a `ProxyRequest`.
 */
import { Effect, Exit, Scope } from "effect"
import { ConfigError } from "../../src/config/ConfigError.ts"
import { parseHostTarget } from "../../src/config/Normalize.ts"
import type { BuildEnv, Handler, Policy, PolicyConfig, PolicyKey } from "../../src/pipeline/Policy.ts"
import * as ProxyErrors from "../../src/pipeline/ProxyError.ts"
import type { ProxyError } from "../../src/pipeline/ProxyError.ts"
import { ProxyResponse } from "../../src/pipeline/ProxyResponse.ts"
import { type ProxyRequest, RequestContext } from "../../src/pipeline/RequestContext.ts"
import * as Headers from "../../src/shared/headers.ts"

/** A `next` that records it was called and answers 200 "upstream" with the given headers. */
export const upstream = (headers: Record<string, string> = {}) => {
  const calls: Array<ProxyRequest> = []
  const handler: Handler = Effect.map(Effect.service(RequestContext), (ctx) => {
    calls.push(ctx)
    const h = Headers.empty()
    for (const [k, v] of Object.entries(headers)) h[k] = v
    return new ProxyResponse(200, h, "upstream")
  })
  return { handler, calls }
}

/**
 * The BuildEnv of unit tests: `backendCall` answers with the given handler (a stub backend),
 * or fails with a ConfigError when none is given.
 */
export const buildEnv = (backend?: Handler): BuildEnv => ({
  maxBufferSize: 2 * 1024 * 1024,
  backendCall: (_spec, path) =>
    backend === undefined
      ? Effect.fail(new ConfigError({ issues: [{ path, message: "no backend calls in this unit test" }] }))
      : Effect.succeed(backend),
  // `{host}` specs resolve as in a snapshot (a gRPC side-service peer on a local port); named backends do not exist here.
  resolveBackend: (spec, path) => {
    const target = spec.host === undefined || spec.host === null ? "no named backends in this unit test" : parseHostTarget(spec.host)
    return typeof target === "string"
      ? Effect.fail(new ConfigError({ issues: [{ path, message: target }] }))
      : Effect.succeed({ name: spec.host ?? "", target, policies: spec.policies ?? {} })
  }
})

export const run = <K extends PolicyKey>(
  policy: Policy<K>,
  config: PolicyConfig<K>,
  next: Handler,
  request: ProxyRequest
): Effect.Effect<ProxyResponse, ProxyError> =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const middleware = yield* Effect.orDie(Scope.provide(policy.make(config, buildEnv(), "policies"), scope))
    return yield* Effect.provideService(middleware(next), RequestContext, request)
  })

/** What one request through a policy looked like from both sides. */
export interface Exchange {
  /** The answer the client gets (a failure as `ProxyError.toResponse` maps it). */
  readonly response: ProxyResponse
  /** The request as `next` saw it, or undefined when the policy answered by itself. */
  readonly forwarded: ProxyRequest | undefined
}

/**
 * Builds a policy once (one snapshot, in a scope closed by `close`) and returns `send`, which
 * runs one request through it in front of `upstream()`.
 */
export const exchange = <K extends PolicyKey>(policy: Policy<K>, config: PolicyConfig<K>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const middleware = yield* Scope.provide(policy.make(config, buildEnv(), `policies.${policy.key}`), scope)
    const send = (request: ProxyRequest): Effect.Effect<Exchange> =>
      Effect.gen(function*() {
        const next = upstream()
        const exit = yield* Effect.exit(Effect.provideService(middleware(next.handler), RequestContext, request))
        const failure = Exit.isSuccess(exit) ? undefined : exit.cause.reasons[0]
        const response = Exit.isSuccess(exit)
          ? exit.value
          : ProxyErrors.toResponse(failure?._tag === "Fail" ? failure.error : ProxyErrors.make({ _tag: "Internal", cause: exit.cause }))
        return { response, forwarded: next.calls[0] }
      })
    return { send, close: Scope.close(scope, Exit.void) }
  })
