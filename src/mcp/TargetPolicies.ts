/**
 * Policies of one MCP target (upstream `LocalMcpTarget.policies`, `policies[]` targeting the
 * backend's `section: <target>`, and the named host backend a `{backend: name}` target goes
 * through): they shape that target's HTTP requests only, after the MCP backend's own
 * backend-phase policies shaped the downstream request every target gets.
 *
 * - `backendTLS`: the target's TLS (replaces the backend's for it; McpBackend.build).
 * - `backendAuth` then `requestHeaderModifier` (the backend phase's order): run on a copy of
 *   the forwarded headers per call, through the policies' own `make`, so `key`, `passthrough`,
 *   `credentials` and `gcp` behave as on a host backend. `gcp` ID tokens default their audience
 *   to the target's host (known here, unlike on the backend). `aws` signs the request exactly
 *   as the transport sends it (body included), so its signer is handed on as `CallContext.sign`
 *   and run by the transport last, on the backend's own signer (BackendAuth → AwsSigV4).
 * - The transports' own requests (the DELETE ending an upstream session, a legacy SSE target's
 *   GET) are edited too, through `Inbound.ownCall`: a call with no downstream request gets the
 *   policies that need none (`key`, `credentials`, `gcp`, `aws`, header edits); `passthrough`
 *   then has no validated JWT and adds nothing.
 * - `mcpAuthorization`: accumulated with the backend's rules for this target's items (`authorizer`).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as http from "node:http"
import * as net from "node:net"
import * as ConfigError from "../config/ConfigError.ts"
import type * as Ir from "../ir/Ir.ts"
import type { BuildEnv, Handler, Middleware } from "../pipeline/Policy.ts"
import type * as ProxyError from "../pipeline/ProxyError.ts"
import { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import { ProxyRequest, RequestContext } from "../pipeline/RequestContext.ts"
import * as BackendAuth from "../policies/BackendAuth.ts"
import * as HeaderModifier from "../policies/HeaderModifier.ts"
import * as McpAuthorization from "../policies/McpAuthorization.ts"
import * as Headers from "../shared/headers.ts"
import { allowAll, type Authorizer } from "./Hooks.ts"
import type { CallContext, Connect, OutgoingRequest, Upstream } from "./Upstream.ts"
import { UpstreamError } from "./Upstream.ts"

/** Rewrites one call's context (its headers) for a target. */
export type Edit = (call: CallContext) => Effect.Effect<CallContext, UpstreamError>

/** The terminal the per-target policies wrap: they only edit the request. */
const DONE: Handler = Effect.succeed(new ProxyResponse(204, Headers.empty(), undefined))

const EMPTY = new Uint8Array(0)

/** What `backendAuth` left to run on the request as sent (aws, gcp's late audience). */
type Signer = NonNullable<ProxyRequest["upstreamSigner"]>

/** A request sharing the downstream one's identity and credentials, with its own headers. */
const view = (request: ProxyRequest, headers: Headers.HeaderMap): ProxyRequest => {
  const v = new ProxyRequest(
    request.raw, request.method, request.path, request.query, request.host, request.authority, request.scheme, request.version,
    headers, request.sourceAddress, request.sourcePort, request.startTime
  )
  v.bind = request.bind
  v.gateway = request.gateway
  v.listener = request.listener
  v.route = request.route
  v.backend = request.backend
  v.identity = request.identity
  v.validatedJwt = request.validatedJwt
  v.celExtensions = request.celExtensions
  v.mcp = request.mcp
  return v
}

/**
 * The header edit of a target with `backendAuth` or `requestHeaderModifier`, built once per
 * snapshot; undefined without either (the target's calls then pass untouched).
 */
export const editor = (
  target: Ir.McpTarget,
  host: string | undefined,
  env: BuildEnv,
  /** The MCP backend's `backendAuth`, for a target without one (McpBackend `targetAuth`). */
  inherited?: { readonly config: BackendAuth.Config; readonly path: string }
): Effect.Effect<Edit | undefined, ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const policies = target.policies ?? {}
    const own = policies.backendAuth ?? undefined
    const auth = own ?? inherited?.config
    const modifier = policies.requestHeaderModifier ?? undefined
    if (auth === undefined && modifier === undefined) return undefined
    const authPath = own === undefined && inherited !== undefined ? inherited.path : `${target.path}.policies.backendAuth`
    // aws signs the request as sent, which only the transport has (it builds the body).
    const signsAtSend = auth !== undefined && typeof auth !== "string" && auth.aws !== undefined && auth.aws !== null
    const compiled = modifier === undefined ? undefined : HeaderModifier.compile(modifier)
    const middleware: Middleware | undefined = auth === undefined ? undefined : yield* BackendAuth.policy.make(auth, env, authPath)
    const run = middleware === undefined ? undefined : middleware(DONE)
    const failed = (cause: unknown) =>
      new UpstreamError({ target: target.name, message: "backend authentication failed", detail: cause instanceof Error ? cause.message : String(cause) })
    /** The request the signer sees: `base`'s identity, the transport's method, path, headers and body. */
    const atSend = (base: ProxyRequest, signer: Signer) => (out: OutgoingRequest): Effect.Effect<void, UpstreamError> => {
      const r = view(base, out.headers)
      r.method = out.method
      r.path = out.path
      r.query = ""
      r.hasBody = out.body !== undefined && out.body.length > 0
      r.body = { _tag: "Buffered", bytes: out.body ?? EMPTY }
      return Effect.mapError(signer(r), failed)
    }
    let detached: http.IncomingMessage | undefined
    /** A request standing for none (a transport's own request after no client call): no identity, no JWT. */
    const standalone = (headers: Headers.HeaderMap): ProxyRequest => {
      detached ??= new http.IncomingMessage(new net.Socket())
      const name = host ?? target.name
      return new ProxyRequest(detached, "POST", "/", "", name.replace(/:\d+$/, ""), name, "http", "HTTP/1.1", headers, "", 0, performance.now())
    }
    return (call) => {
      const headers: Headers.HeaderMap = { ...call.headers }
      const finish = (sign: CallContext["sign"]): CallContext => {
        if (compiled !== undefined) HeaderModifier.apply(compiled, headers)
        return sign === undefined ? { ...call, headers } : { ...call, headers, sign }
      }
      if (run === undefined) return Effect.succeed(finish(undefined))
      // The destination, for policies that derive from it (a gcp ID token's default audience).
      if (host !== undefined) headers["host"] = host
      const v = call.request === undefined ? standalone(headers) : view(call.request, headers)
      return Effect.provideService(run, RequestContext, v).pipe(
        Effect.flatMap((): Effect.Effect<CallContext["sign"], ProxyError.ProxyError> => {
          const signer = v.upstreamSigner
          v.upstreamSigner = undefined
          if (signer === undefined) return Effect.succeed(undefined)
          if (signsAtSend) return Effect.succeed(atSend(v, signer))
          return Effect.as(signer(v), undefined)
        }),
        Effect.mapError(failed),
        Effect.map(finish)
      )
    }
  })

/** The upstream with every call's context edited first (listen included: it carries headers too). */
export const wrap = (upstream: Upstream, edit: Edit): Upstream => ({
  target: upstream.target,
  request: (method, params, call) => Effect.flatMap(edit(call), (c) => upstream.request(method, params, c)),
  send: (message, call) => Effect.flatMap(edit(call), (c) => upstream.send(message, c)),
  listen: (call) => Effect.flatMap(Effect.orElseSucceed(edit(call), () => call), (c) => upstream.listen(c)),
  serverMessages: upstream.serverMessages,
  resumeToken: () => upstream.resumeToken()
})

/** Connections whose calls, and whose own requests (`Inbound.ownCall`: DELETE, SSE GET), are edited. */
export const connectWith = (connect: Connect, edit: Edit | undefined): Connect =>
  edit === undefined ? connect : (inbound, resume) =>
    Effect.map(connect({ ...inbound, ownCall: () => Effect.flatMap(inbound.ownCall(), edit) }, resume), (u) => wrap(u, edit))

/**
 * The backend's authorizer with each target's own `mcpAuthorization` added for that target's
 * items (a deny at either level hides the item); the backend's unchanged when no target has rules.
 */
export const authorizer = (
  backend: Authorizer,
  targets: ReadonlyArray<Ir.McpTarget>
): Effect.Effect<Authorizer, ConfigError.ConfigError> =>
  Effect.gen(function*() {
    const own = new Map<string, Authorizer>()
    for (const t of targets) {
      const rules = yield* McpAuthorization.authorizer(t.policies?.mcpAuthorization, `${t.path}.policies.mcpAuthorization`)
      if (rules !== allowAll) own.set(t.name, rules)
    }
    if (own.size === 0) return backend
    return (item, request) => {
      if (!backend(item, request)) return false
      const target = own.get(item.target)
      return target === undefined || target(item, request)
    }
  })
