/**
 * IR → compiled snapshot: listener tables, sorted route tables, every policy's middleware
 * built once, handlers composed in `PolicyOrder`, upstream pools resolved. Built inside the
 * snapshot's Scope; nothing on the request path re-derives any of it.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import * as HttpBackend from "../backends/HttpBackend.ts"
import { UpstreamPools } from "../backends/Pools.ts"
import { ConfigError } from "../config/ConfigError.ts"
import { parseHostTarget } from "../config/Normalize.ts"
import type * as Ir from "../ir/Ir.ts"
import * as Tls from "../listeners/Tls.ts"
import * as Deadline from "../pipeline/Deadline.ts"
import * as Pipeline from "../pipeline/Pipeline.ts"
import type { BackendSpec, BuildEnv, Handler, Middleware, PolicyKey } from "../pipeline/Policy.ts"
import * as PolicyOrder from "../pipeline/PolicyOrder.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import * as RequestBody from "../pipeline/RequestBody.ts"
import { currentRequest, type ProxyRequest, type RouteInfo } from "../pipeline/RequestContext.ts"
import type { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import * as BackendAuth from "../policies/BackendAuth.ts"
import * as BackendTls from "../policies/BackendTls.ts"
import * as McpAuthorization from "../policies/McpAuthorization.ts"
import { registry } from "../policies/index.ts"
import * as Match from "../routing/Match.ts"
import { ListenerTable, RouteTable } from "../routing/RouteTable.ts"
import * as McpBackend from "../mcp/McpBackend.ts"
import * as Telemetry from "../observability/Telemetry.ts"

export interface CompiledListener {
  readonly ir: Ir.Listener
  readonly tls: Tls.ListenerTls | undefined
  /** Gateway-phase policies → route selection → route pipeline. */
  readonly handler: Handler
}

export interface CompiledBind {
  readonly ir: Ir.Bind
  readonly listeners: ListenerTable<CompiledListener>
  readonly all: ReadonlyArray<CompiledListener>
}

export interface Compiled {
  readonly ir: Ir.Snapshot
  readonly binds: ReadonlyMap<number, CompiledBind>
  /** Access-log and metric-label expressions, compiled with the rest (observability/Telemetry.ts). */
  readonly telemetry: Telemetry.Telemetry
}

interface CompiledRoute {
  readonly info: RouteInfo
  readonly handler: Handler
}

const buildMiddlewares = (
  block: object,
  allowed: ReadonlyArray<PolicyKey>,
  env: BuildEnv,
  path: string,
  /** Keys the caller consumes itself (connection settings), skipped here. */
  consumed: ReadonlySet<string> = new Set()
): Effect.Effect<Map<PolicyKey, Middleware>, ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const out = new Map<PolicyKey, Middleware>()
    for (const [key, config] of Object.entries(block)) {
      if (config === undefined || config === null || consumed.has(key)) continue
      const policy = registry[key as PolicyKey]
      if (policy === undefined || !allowed.includes(key as PolicyKey)) {
        return yield* Effect.fail(new ConfigError({ issues: [{ path: `${path}.${key}`, message: `policy ${key} cannot be used here` }] }))
      }
      const make = policy.make as (c: unknown, e: BuildEnv, p: string) => Effect.Effect<Middleware, ConfigError, Scope.Scope>
      out.set(key as PolicyKey, yield* make(config, env, `${path}.${key}`))
    }
    return out
  })

const regexError = (path: string, cause: unknown) =>
  new ConfigError({ issues: [{ path, message: `invalid regular expression: ${cause instanceof Error ? cause.message : String(cause)}` }] })

const hostHeader = (target: Ir.HostTarget) => (target.port === 80 ? target.host : `${target.host}:${target.port}`)

const upstreamTimeout = () => Effect.fail(ProxyError.make({ _tag: "UpstreamTimeout" }))

const buildBackend = (ref: Ir.BackendRef, env: BuildEnv, settings: Ir.Settings) =>
  Effect.gen(function*() {
    const target = ref.target
    const backendAuth = ref.policies.backendAuth
    // On an MCP backend, aws signing and an audience-less gcp ID token need each target's own request: they run per target.
    const perTarget = target._tag === "Mcp" && backendAuth !== undefined && backendAuth !== null && BackendAuth.perMcpTarget(backendAuth)
      ? { config: backendAuth, path: `${ref.path}.policies.backendAuth` }
      : undefined
    const policies = perTarget === undefined ? ref.policies : { ...ref.policies, backendAuth: undefined }
    const call: Handler = target._tag === "Mcp"
      ? yield* McpBackend.build(ref.name, target, {
        settings,
        maxBodyBytes: env.maxBufferSize,
        env,
        ...(ref.policies.backendTLS === undefined || ref.policies.backendTLS === null
          ? {}
          : { backendTls: { config: ref.policies.backendTLS, path: `${ref.path}.policies.backendTLS` } }),
        authorize: yield* McpAuthorization.authorizer(ref.policies.mcpAuthorization, `${ref.path}.policies.mcpAuthorization`),
        ...(perTarget === undefined ? {} : { targetAuth: perTarget })
      })
      : yield* hostCall(ref, target, settings)
    const middlewares = yield* buildMiddlewares(policies, PolicyOrder.backendPhase, env, `${ref.path}.policies`, PolicyOrder.backendConnection)
    const pipeline = Pipeline.compose(PolicyOrder.backendPhase, middlewares, call)
    if (middlewares.size === 0) return pipeline
    // Backend-phase policies run once this backend is chosen, so CEL `backend.name` names it.
    return Effect.flatMap(currentRequest, (ctx) => {
      ctx.backend = ref.name
      return pipeline
    })
  })

const hostCall = (ref: Ir.BackendRef, target: Ir.HostTarget, settings: Ir.Settings) =>
  Effect.gen(function*() {
    const pools = yield* UpstreamPools
    const tlsConfig = ref.policies.backendTLS
    const tls = tlsConfig === undefined || tlsConfig === null
      ? undefined
      : yield* BackendTls.load(tlsConfig, target, `${ref.path}.policies.backendTLS`)
    const pool = pools.get(target, settings, tls)
    const endpoint = `${target.host.includes(":") ? `[${target.host}]` : target.host}:${target.port}`
    const rewriteHost = target.isHostname ? hostHeader(target) : undefined
    const send = (ctx: ProxyRequest): Effect.Effect<ProxyResponse, ProxyError.ProxyError> => {
      const timeoutMs = ctx.backendRequestTimeoutMs
      // Applied here, per attempt, so a retry gets the whole budget again; the interruption aborts the exchange.
      const attempt = timeoutMs === undefined
        ? HttpBackend.call(pool, ctx)
        : Deadline.within(HttpBackend.call(pool, ctx), timeoutMs, upstreamTimeout)
      // A sampled request gets a CLIENT span per attempt, its context sent upstream in `traceparent`.
      const trace = ctx.trace
      const sent = trace === undefined ? attempt : trace.tracer.upstream(ctx, trace, ref.name, endpoint, attempt)
      // A policy that signs the request as sent (backendAuth aws) goes last, once per attempt.
      const signer = ctx.upstreamSigner
      if (signer === undefined) return sent
      ctx.upstreamSigner = undefined
      return Effect.andThen(signer(ctx), sent)
    }
    const call: Handler = Effect.flatMap(currentRequest, (ctx) => {
      ctx.backend = ref.name
      ctx.endpoint = endpoint
      // Auto host rewrite for DNS-named backends; a policy that set the authority wins.
      if (rewriteHost !== undefined && !ctx.authorityRewritten) ctx.headers["host"] = rewriteHost
      // A small body is read before the exchange starts (RequestBody.smallFirst), outside the per-attempt deadline.
      const first = RequestBody.smallFirst(ctx, settings.maxBufferSize)
      return first === undefined ? send(ctx) : Effect.flatMap(first, () => send(ctx))
    })
    return call
  })

/** Weighted random choice over the route's backends, precomputed as cumulative weights. */
const chooseBackend = (handlers: ReadonlyArray<Handler>, weights: ReadonlyArray<number>): Handler => {
  const total = weights.reduce((a, b) => a + b, 0)
  if (handlers.length === 0 || total <= 0) return Effect.fail(ProxyError.make({ _tag: "NoValidBackends" }))
  if (handlers.length === 1) return handlers[0]!
  const cumulative: Array<number> = []
  let sum = 0
  for (const w of weights) cumulative.push((sum += w))
  return Effect.suspend(() => {
    const pick = Math.random() * total
    let i = 0
    while (cumulative[i]! <= pick) i++
    return handlers[i]!
  })
}

const buildRoute = (route: Ir.Route, env: BuildEnv, settings: Ir.Settings) =>
  Effect.gen(function*() {
    const backends = yield* Effect.forEach(route.backends, (b) => buildBackend(b, env, settings))
    const terminal = chooseBackend(backends, route.backends.map((b) => b.weight))
    const middlewares = yield* buildMiddlewares(route.policies, PolicyOrder.routePhase, env, `${route.path}.policies`)
    const info: RouteInfo = { key: route.key, name: route.name, namespace: route.namespace, ruleName: route.ruleName, label: `${route.namespace}/${route.name}` }
    const matches = yield* Effect.forEach(route.matches, (m, i) =>
      Effect.try({ try: () => Match.compile(m), catch: (cause) => regexError(`${route.path}.matches[${i}]`, cause) })
    )
    const compiled: CompiledRoute = { info, handler: Pipeline.compose(PolicyOrder.routePhase, middlewares, terminal) }
    return { route: compiled, key: route.key, hostnames: route.hostnames, matches }
  })

const buildListener = (listener: Ir.Listener, env: BuildEnv, settings: Ir.Settings) =>
  Effect.gen(function*() {
    const routes = yield* Effect.forEach(listener.routes, (r) => buildRoute(r, env, settings))
    const table = new RouteTable(routes)
    const notFound = Effect.fail(ProxyError.make({ _tag: "RouteNotFound" }))
    const select: Handler = Effect.flatMap(currentRequest, (ctx) => {
      const found = table.find(ctx)
      if (found === undefined) return notFound
      ctx.route = found.route.info
      ctx.matchedPrefix = found.match.prefix
      ctx.pathMatch = found.match.pathMatch
      return found.route.handler
    })
    const middlewares = yield* buildMiddlewares(listener.policies, PolicyOrder.gatewayPhase, env, `${listener.path}.policies`)
    const tls = listener.tls === undefined ? undefined : yield* Tls.load(listener.tls, `${listener.path}.tls`)
    const compiled: CompiledListener = { ir: listener, tls, handler: Pipeline.compose(PolicyOrder.gatewayPhase, middlewares, select) }
    return compiled
  })

const configError = (path: string, message: string) => new ConfigError({ issues: [{ path, message }] })

/** The keys of `o` that are set (YAML `null` counts as absent, as everywhere in the config). */
const setKeys = <T extends object>(o: T): Partial<T> => {
  const out: Partial<T> = {}
  for (const key in o) {
    const value = o[key]
    if (value !== undefined && value !== null) out[key] = value
  }
  return out
}

/** A backend a policy references (`{host}` or `{backend: name}`), resolved as a route's would be. */
const policyBackend = (spec: BackendSpec, path: string, ir: Ir.Snapshot): Effect.Effect<Ir.BackendRef & { readonly target: Ir.HostTarget }, ConfigError> => {
  if (spec.host !== undefined && spec.host !== null) {
    const target = parseHostTarget(spec.host)
    if (typeof target === "string") return Effect.fail(configError(`${path}.host`, target))
    return Effect.succeed({ name: spec.host, weight: 1, target, policies: spec.policies ?? {}, path })
  }
  if (spec.backend !== undefined && spec.backend !== null) {
    const named = ir.backends.get(spec.backend)
    if (named === undefined || named.target._tag !== "Host") {
      return Effect.fail(configError(`${path}.backend`, `backend "${spec.backend}" is not defined in backends (or is not a host backend)`))
    }
    const target = named.target
    if (spec.policies === undefined || spec.policies === null) return Effect.succeed({ ...named, target })
    // The reference's own policies win over the named backend's (first found wins).
    return Effect.succeed({ ...named, target, policies: { ...named.policies, ...setKeys(spec.policies) }, path })
  }
  return Effect.fail(configError(path, "expected exactly one of: host, backend"))
}

export const build = (ir: Ir.Snapshot): Effect.Effect<Compiled, ConfigError, Scope.Scope | UpstreamPools> =>
  Effect.gen(function*() {
    const pools = yield* UpstreamPools
    const env: BuildEnv = {
      maxBufferSize: ir.settings.maxBufferSize,
      backendCall: (spec, path) => policyBackend(spec, path, ir).pipe(
        Effect.flatMap((ref) => buildBackend(ref, env, ir.settings)),
        Effect.provideService(UpstreamPools, pools)
      ),
      resolveBackend: (spec, path) => Effect.map(policyBackend(spec, path, ir), ({ name, target, policies }) => ({ name, target, policies }))
    }
    const binds = new Map<number, CompiledBind>()
    for (const bind of ir.binds) {
      const all = yield* Effect.forEach(bind.listeners, (l) => buildListener(l, env, ir.settings))
      binds.set(bind.port, {
        ir: bind,
        all,
        listeners: new ListenerTable(all.map((l) => ({ hostname: l.ir.hostname, listener: l })))
      })
    }
    const telemetry = yield* Telemetry.compile(ir.settings)
    return { ir, binds, telemetry }
  })
