/**
 * Config → IR. Both front-ends (classic `binds` and `gateways` + `routes` with the implicit
 * `default` gateway) become the same `Bind → Listener → Route → BackendRef` tree, with
 * names and keys as agentgateway derives them and policies merged per attachment point:
 * route phase "most specific replaces", backend phase "first found wins".
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as os from "node:os"
import * as WorkerCount from "../cluster/WorkerCount.ts"
import type * as Ir from "../ir/Ir.ts"
import { backendClass, gatewayPhase } from "../pipeline/PolicyOrder.ts"
import { DEFAULT_IDLE_TIMEOUT_MS } from "../listeners/BodyWatch.ts"
import { DEFAULT_SEND_TIMEOUT_MS } from "../listeners/SendWatch.ts"
import { firstFoundWins, mostSpecificReplaces } from "../state/PolicyMerge.ts"
import type { PolicyKey } from "../pipeline/Policy.ts"
import { type ConfigIssue, ConfigError } from "./ConfigError.ts"
import * as Duration from "./Duration.ts"
import type * as Env from "./Env.ts"
import { unsupportedMessage } from "./Fields.ts"
import type * as C from "./LocalConfig.ts"

const STANDALONE = "default"
const MiB = 1024 * 1024

/** Default addresses of the operational ports (agentgateway's defaults). */
export const defaults = {
  adminAddr: "localhost:15000",
  statsAddr: "[::]:15020",
  readinessAddr: "[::]:15021"
} as const

class Issues {
  readonly list: Array<ConfigIssue> = []
  add(path: string, message: string): void {
    this.list.push({ path, message })
  }
}

const defined = <T>(value: T | null | undefined): value is T => value !== undefined && value !== null

/** Keeps only set (non-null) fields of a policy block. */
const present = <T extends object>(block: T | null | undefined): Partial<T> => {
  const out: Partial<T> = {}
  if (!defined(block)) return out
  for (const key of Object.keys(block) as Array<keyof T>) {
    if (defined(block[key])) out[key] = block[key]
  }
  return out
}


/** Parses `host:port`, `[v6]:port` or `v4:port`. */
export const parseHostTarget = (input: string): Ir.HostTarget | string => {
  if (input.startsWith("unix:")) return unsupportedMessage("unix socket backends")
  if (input.includes("://")) return `invalid host "${input}": expected host:port, not a URL`
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s/[\]]+)):(\d{1,5})$/.exec(input)
  if (m === null) return `invalid host "${input}": expected host:port`
  const port = Number(m[3])
  if (port < 1 || port > 65535) return `invalid port in "${input}"`
  const host = m[1] ?? m[2]!
  const isHostname = m[1] === undefined && !/^\d{1,3}(\.\d{1,3}){3}$/.test(host)
  return { _tag: "Host", host, port, isHostname }
}

const tlsFiles = (tls: C.TlsServer | null | undefined, path: string, issues: Issues): Ir.TlsFiles | undefined => {
  if (!defined(tls)) return undefined
  if (tls.mode === "dynamicCa") {
    issues.add(`${path}.mode`, unsupportedMessage("tls mode dynamicCa"))
    return undefined
  }
  if (!defined(tls.cert) || !defined(tls.key)) {
    issues.add(path, "tls needs both cert and key")
    return undefined
  }
  const version = (v: string | null | undefined) => (v === "TLS_V1_2" ? "TLSv1.2" : v === "TLS_V1_3" ? "TLSv1.3" : undefined)
  return {
    cert: tls.cert,
    key: tls.key,
    root: tls.root ?? undefined,
    cipherSuites: tls.cipherSuites ?? undefined,
    minVersion: version(tls.minTLSVersion ?? tls.minTlsVersion),
    maxVersion: version(tls.maxTLSVersion ?? tls.maxTlsVersion)
  }
}

const listenerProtocol = (
  protocol: string | null | undefined,
  path: string,
  issues: Issues
): "HTTP" | "HTTPS" => {
  if (!defined(protocol) || protocol === "HTTP") return "HTTP"
  if (protocol === "HTTPS") return "HTTPS"
  issues.add(`${path}.protocol`, unsupportedMessage(`protocol ${protocol}`))
  return "HTTP"
}

interface Targeted {
  readonly routePhaseByGateway: Array<{ gateway: string; listener?: string; port?: number; policy: Partial<C.FilterOrPolicy> }>
  readonly gatewayPhaseByGateway: Array<{ gateway: string; listener?: string; port?: number; policy: Partial<C.GatewayPolicy> }>
  readonly byRoute: Array<{ name: string; namespace: string; ruleName?: string; policy: Partial<C.FilterOrPolicy> }>
  readonly byBackend: Map<string, Partial<C.BackendPolicies>>
  /** `policies[]` targeting one MCP target of a named backend (`section: <target name>`), by backend then target. */
  readonly bySection: Map<string, Map<string, { readonly policy: Partial<Ir.McpTargetPolicies>; readonly path: string }>>
}

/** What a targeted policy may set on one MCP target (upstream `sub_backend_policies`). */
const SECTION_POLICIES: ReadonlySet<string> = new Set(["requestHeaderModifier", "backendTLS", "backendAuth", "mcpAuthorization"])
/** What an MCP target takes from the named host backend it goes through. */
const VIA_BACKEND_POLICIES: ReadonlyArray<keyof Ir.McpTargetPolicies> = ["requestHeaderModifier", "backendTLS", "backendAuth"]

const collectTargeted = (config: C.LocalConfig, issues: Issues): Targeted => {
  const out: Targeted = { routePhaseByGateway: [], gatewayPhaseByGateway: [], byRoute: [], byBackend: new Map(), bySection: new Map() }
  ;(config.policies ?? []).forEach((p, i) => {
    const path = `policies[${i}]`
    const policy = present(p.policy)
    const keys = Object.keys(policy)
    if (keys.length !== 1) {
      issues.add(`${path}.policy`, `a targeted policy must contain exactly one policy, found ${keys.length}`)
      return
    }
    const target = p.target
    if (defined(target.gateway)) {
      const g = target.gateway
      const where = {
        gateway: g.gatewayName,
        ...(defined(g.listenerName) ? { listener: g.listenerName } : {}),
        ...(defined(g.port) ? { port: g.port } : {})
      }
      if (p.phase === "gateway") {
        if (!gatewayPhase.includes(keys[0] as PolicyKey)) {
          issues.add(`${path}.policy.${keys[0]}`, "this policy cannot run in the gateway phase")
          return
        }
        out.gatewayPhaseByGateway.push({ ...where, policy: policy as Partial<C.GatewayPolicy> })
      } else {
        out.routePhaseByGateway.push({ ...where, policy })
      }
    } else if (defined(target.route)) {
      const r = target.route
      out.byRoute.push({ name: r.name, namespace: r.namespace, ...(defined(r.ruleName) ? { ruleName: r.ruleName } : {}), policy })
    } else if (defined(target.backend) && defined(target.backend.backend) && defined(target.backend.backend.section)) {
      const { name, section } = target.backend.backend
      if (!SECTION_POLICIES.has(keys[0]!)) {
        issues.add(`${path}.policy.${keys[0]}`, `a policy targeting an MCP target (section) must be one of: ${[...SECTION_POLICIES].join(", ")}`)
        return
      }
      const sections = out.bySection.get(name) ?? new Map<string, { policy: Partial<Ir.McpTargetPolicies>; path: string }>()
      out.bySection.set(name, sections)
      const earlier = sections.get(section)
      sections.set(section, { policy: firstFoundWins<Ir.McpTargetPolicies>(earlier?.policy ?? {}, policy as Partial<Ir.McpTargetPolicies>), path: earlier?.path ?? path })
    } else if (defined(target.backend) && defined(target.backend.backend)) {
      const name = target.backend.backend.name
      out.byBackend.set(name, firstFoundWins(out.byBackend.get(name) ?? {}, policy as Partial<C.BackendPolicies>))
    } else {
      issues.add(`${path}.target`, "unsupported policy target")
    }
  })
  return out
}

interface Context {
  readonly issues: Issues
  readonly named: Map<string, { readonly backend: C.NamedBackend; readonly path: string }>
  readonly targeted: Targeted
}

/** Splits a route's `policies:` into route-class and backend-class policies. */
const splitPolicies = (policies: C.FilterOrPolicy | null | undefined) => {
  const route: Partial<C.FilterOrPolicy> = {}
  const backend: Partial<C.BackendPolicies> = {}
  for (const [key, value] of Object.entries(present(policies))) {
    if (backendClass.has(key as PolicyKey)) (backend as Record<string, unknown>)[key] = value
    else (route as Record<string, unknown>)[key] = value
  }
  return { route, backend }
}

const backendRef = (
  ctx: Context,
  backend: C.RouteBackend,
  routeKey: string,
  index: number,
  path: string,
  routeBackendPolicies: Partial<C.BackendPolicies>
): Ir.BackendRef | undefined => {
  const weight = backend.weight ?? 1
  const own = present(backend.policies)
  if (defined(backend.mcp)) {
    const mcp = mcpBackend(ctx, backend.mcp, `${path}.mcp`, undefined, ctx.issues)
    return { name: `/${routeKey}/backend${index}`, weight, target: mcp, policies: firstFoundWins(own, routeBackendPolicies), path }
  }
  if (defined(backend.host)) {
    const target = parseHostTarget(backend.host)
    if (typeof target === "string") {
      ctx.issues.add(`${path}.host`, target)
      return undefined
    }
    return { name: `/${routeKey}/backend${index}`, weight, target, policies: firstFoundWins(own, routeBackendPolicies), path }
  }
  if (defined(backend.backend)) {
    const named = ctx.named.get(backend.backend)
    if (named === undefined) {
      ctx.issues.add(`${path}.backend`, `backend "${backend.backend}" is not defined in backends`)
      return undefined
    }
    if (defined(named.backend.mcp)) {
      return {
        name: `/${backend.backend}`,
        weight,
        target: mcpBackend(ctx, named.backend.mcp, `${named.path}.mcp`, backend.backend, new Issues()),
        policies: firstFoundWins(own, routeBackendPolicies, present(named.backend.policies), ctx.targeted.byBackend.get(backend.backend) ?? {}),
        path
      }
    }
    if (!defined(named.backend.host)) return undefined // reported once, at the named backend
    const target = parseHostTarget(named.backend.host)
    if (typeof target === "string") return undefined // reported at the named backend
    return {
      name: `/${backend.backend}`,
      weight,
      target,
      policies: firstFoundWins(own, routeBackendPolicies, present(named.backend.policies), ctx.targeted.byBackend.get(backend.backend) ?? {}),
      path
    }
  }
  return undefined
}

/** Named host backends as policies reach them (`{backend: name}`): own policies, then targeted ones. */
const namedBackendRefs = (ctx: Context): Map<string, Ir.BackendRef> => {
  const out = new Map<string, Ir.BackendRef>()
  for (const [name, { backend, path }] of ctx.named) {
    if (!defined(backend.host)) continue
    const target = parseHostTarget(backend.host)
    if (typeof target === "string") continue // reported at the named backend
    const policies = firstFoundWins(present(backend.policies), ctx.targeted.byBackend.get(name) ?? {})
    out.set(name, { name: `/${name}`, weight: 1, target, policies, path })
  }
  return out
}

const route = (
  ctx: Context,
  r: C.Route,
  index: number,
  listenerKey: string,
  path: string,
  inherited: Partial<C.FilterOrPolicy>
): Ir.Route => {
  const name = r.name ?? `route${index}`
  const namespace = r.namespace ?? STANDALONE
  const key = `${listenerKey}/${namespace}/${name}`
  const split = splitPolicies(r.policies)
  const targeted = ctx.targeted.byRoute
    .filter((t) => t.name === name && t.namespace === namespace && (t.ruleName === undefined || t.ruleName === r.ruleName))
    .map((t) => splitPolicies(t.policy as C.FilterOrPolicy))
  const backends: Array<Ir.BackendRef> = []
  const routeBackendPolicies = firstFoundWins<C.BackendPolicies>(split.backend, ...targeted.map((t) => t.backend))
  ;(r.backends ?? []).forEach((b, i) => {
    const ref = backendRef(ctx, b, key, i, `${path}.backends[${i}]`, routeBackendPolicies)
    if (ref !== undefined) backends.push(ref)
  })
  for (const hostname of r.hostnames ?? []) {
    if (hostname.includes("*") && !/^\*\.[^*]+$/.test(hostname)) {
      ctx.issues.add(`${path}.hostnames`, `invalid hostname "${hostname}": only a leading "*." wildcard is allowed`)
    }
  }
  return {
    key,
    name,
    namespace,
    ruleName: r.ruleName ?? undefined,
    hostnames: (r.hostnames ?? []).map((h) => h.toLowerCase()),
    matches: r.matches ?? [{ path: { pathPrefix: "/" } }],
    policies: mostSpecificReplaces<C.FilterOrPolicy>(inherited, ...targeted.map((t) => t.route), split.route),
    backends,
    path
  }
}

/** Route-phase policies targeted at a gateway/listener (phase: route). */
const inheritedRoutePolicies = (ctx: Context, gateway: string, listener: string, port: number) =>
  mostSpecificReplaces<C.FilterOrPolicy>(
    ...ctx.targeted.routePhaseByGateway
      .filter((t) => t.gateway === gateway && (t.listener === undefined || t.listener === listener) && (t.port === undefined || t.port === port))
      .map((t) => t.policy)
  )

/** Gateway-phase policies: the listener's own first, then targeted ones (first wins). */
const gatewayPolicies = (ctx: Context, own: Partial<C.GatewayPolicy>, gateway: string, listener: string, port: number) =>
  firstFoundWins<C.GatewayPolicy>(
    own,
    ...ctx.targeted.gatewayPhaseByGateway
      .filter((t) => t.gateway === gateway && (t.listener === undefined || t.listener === listener) && (t.port === undefined || t.port === port))
      .map((t) => t.policy)
  )

const gatewayPolicyFields = (source: C.GatewayPolicy | C.Gateway | C.GatewayListener): Partial<C.GatewayPolicy> => {
  const out: Partial<C.GatewayPolicy> = {}
  for (const key of gatewayPhase) {
    const value = (source as Record<string, unknown>)[key]
    if (defined(value)) (out as Record<string, unknown>)[key] = value
  }
  return out
}

const fromBinds = (ctx: Context, config: C.LocalConfig): Array<Ir.Bind> =>
  (config.binds ?? []).flatMap((bind, b) => {
    const path = `binds[${b}]`
    if (defined(bind.tunnelProtocol) && bind.tunnelProtocol !== "direct") {
      ctx.issues.add(`${path}.tunnelProtocol`, unsupportedMessage(`tunnelProtocol ${bind.tunnelProtocol}`))
    }
    if (bind.mode === "internal" || !defined(bind.port)) {
      ctx.issues.add(bind.mode === "internal" ? `${path}.mode` : path, unsupportedMessage("internal binds"))
      return []
    }
    const port = bind.port
    const listeners = bind.listeners.map((l, i): Ir.Listener => {
      const lpath = `${path}.listeners[${i}]`
      const name = l.name ?? `listener${i}`
      const key = `${STANDALONE}/${STANDALONE}/bind/${port}/${name}`
      const protocol = listenerProtocol(l.protocol, lpath, ctx.issues)
      const tls = tlsFiles(l.tls, `${lpath}.tls`, ctx.issues)
      if (protocol === "HTTPS" && tls === undefined && !defined(l.tls)) ctx.issues.add(lpath, "protocol HTTPS needs tls")
      if (protocol === "HTTP" && defined(l.tls)) ctx.issues.add(`${lpath}.tls`, "tls is set but protocol is not HTTPS")
      const inherited = inheritedRoutePolicies(ctx, STANDALONE, name, port)
      return {
        key,
        name,
        gatewayName: `bind/${port}`,
        hostname: normalizeListenerHostname(l.hostname),
        protocol,
        tls,
        policies: gatewayPolicies(ctx, gatewayPolicyFields(l.policies ?? {}), STANDALONE, name, port),
        routes: (l.routes ?? []).map((r, j) => route(ctx, r, j, key, `${lpath}.routes[${j}]`, inherited)),
        path: lpath
      }
    })
    return [{ key: `bind/${port}`, port, protocol: bindProtocol(ctx, listeners, path), listeners }]
  })

const normalizeListenerHostname = (hostname: string | null | undefined): string =>
  !defined(hostname) || hostname === "*" ? "" : hostname.toLowerCase()

const bindProtocol = (ctx: Context, listeners: ReadonlyArray<Ir.Listener>, path: string): "HTTP" | "HTTPS" => {
  const protocols = new Set(listeners.map((l) => l.protocol))
  if (protocols.size > 1) ctx.issues.add(path, "listeners on one port cannot mix HTTP and HTTPS")
  return listeners[0]?.protocol ?? "HTTP"
}

const fromGateways = (ctx: Context, config: C.LocalConfig): Array<Ir.Bind> => {
  const gateways = config.gateways ?? {}
  const routes = config.routes ?? []
  // Routes per (gateway, listener?) reference, in config order.
  const attached = new Map<string, Array<{ route: C.AttachedRoute; index: number }>>()
  routes.forEach((r, index) => {
    const refs = !defined(r.gateways) ? [STANDALONE] : typeof r.gateways === "string" ? [r.gateways] : r.gateways
    for (const ref of refs) {
      const [gateway] = ref.split("/")
      if (gateways[gateway!] === undefined) {
        ctx.issues.add(
          `routes[${index}]${defined(r.gateways) ? ".gateways" : ""}`,
          defined(r.gateways) ? `gateway "${gateway}" is not defined in gateways` : `routes must set gateways, or a gateway named "default" must exist`
        )
        continue
      }
      const list = attached.get(ref) ?? []
      list.push({ route: r, index })
      attached.set(ref, list)
    }
  })
  return Object.entries(gateways).flatMap(([gatewayName, gateway]) => {
    const path = `gateways[${JSON.stringify(gatewayName)}]`
    if (!defined(gateway.port)) {
      ctx.issues.add(path, `missing required field "port"`)
      return []
    }
    const port = gateway.port
    const specs: ReadonlyArray<{ name: string | undefined; spec: C.Gateway | C.GatewayListener; lpath: string }> =
      defined(gateway.listeners)
        ? gateway.listeners.map((l, i) => ({ name: l.name ?? `listener${i}`, spec: l, lpath: `${path}.listeners[${i}]` }))
        : [{ name: undefined, spec: gateway, lpath: path }]
    if (defined(gateway.listeners)) {
      const own = gatewayPolicyFields(gateway)
      if (defined(gateway.protocol) || defined(gateway.tls) || Object.keys(own).length > 0) {
        ctx.issues.add(path, "a gateway with listeners cannot also set protocol, tls or policies; set them per listener")
      }
    }
    const listeners = specs.map(({ name, spec, lpath }): Ir.Listener => {
      const key = name === undefined ? `gateway/${gatewayName}` : `gateway/${gatewayName}/${name}`
      const listenerName = name ?? gatewayName
      const protocol = listenerProtocol(spec.protocol, lpath, ctx.issues)
      const tls = tlsFiles(spec.tls, `${lpath}.tls`, ctx.issues)
      if (protocol === "HTTPS" && !defined(spec.tls)) ctx.issues.add(lpath, "protocol HTTPS needs tls")
      const inherited = inheritedRoutePolicies(ctx, gatewayName, listenerName, port)
      const own = [...(attached.get(gatewayName) ?? []), ...(name === undefined ? [] : attached.get(`${gatewayName}/${name}`) ?? [])]
        .sort((a, b) => a.index - b.index)
      return {
        key,
        name: listenerName,
        gatewayName: `${STANDALONE}/${gatewayName}`,
        hostname: normalizeListenerHostname("hostname" in spec ? spec.hostname : undefined),
        protocol,
        tls,
        policies: gatewayPolicies(ctx, gatewayPolicyFields(spec), gatewayName, listenerName, port),
        routes: own.map(({ route: r, index }) => route(ctx, r, index, key, `routes[${index}]`, inherited)),
        path: lpath
      }
    })
    for (const [ref, list] of attached) {
      const [g, l] = ref.split("/")
      if (g === gatewayName && l !== undefined && !specs.some((s) => s.name === l)) {
        ctx.issues.add(`routes[${list[0]!.index}].gateways`, `gateway "${gatewayName}" has no listener "${l}"`)
      }
    }
    return [{ key: `bind/${port}`, port, protocol: bindProtocol(ctx, listeners, path), listeners }]
  })
}

/** `limits`: REQUEST_BODY_IDLE_TIMEOUT and RESPONSE_SEND_TIMEOUT, already checked by `normalize`. */
const settings = (config: C.LocalConfig, env: Env.Lookup, limits: { readonly bodyIdleMs: number; readonly sendMs: number }): Ir.Settings => {
  const raw = config.config ?? {}
  const http = config.frontendPolicies?.http ?? {}
  const backend = raw.backend ?? {}
  const level = raw.logging?.level
  const ms = (value: string | null | undefined, fallback: number) => (defined(value) ? Duration.parseMillis(value) : fallback)
  return {
    adminAddr: env("ADMIN_ADDR") ?? raw.adminAddr ?? defaults.adminAddr,
    statsAddr: env("STATS_ADDR") ?? raw.statsAddr ?? defaults.statsAddr,
    readinessAddr: env("READINESS_ADDR") ?? raw.readinessAddr ?? defaults.readinessAddr,
    logFormat: raw.logging?.format ?? "text",
    logLevel: !defined(level) ? "info" : typeof level === "string" ? level : level.join(","),
    ...observability(config),
    maxBufferSize: http.maxBufferSize ?? 2 * MiB,
    http1MaxHeaders: http.http1MaxHeaders ?? 100,
    http1IdleTimeoutMs: ms(http.http1IdleTimeout, 600_000),
    requestBodyIdleTimeoutMs: limits.bodyIdleMs,
    responseSendTimeoutMs: limits.sendMs,
    tlsHandshakeTimeoutMs: ms(config.frontendPolicies?.tls?.handshakeTimeout, 15_000),
    connectTimeoutMs: ms(backend.connectTimeout, 10_000),
    poolIdleTimeoutMs: ms(backend.poolIdleTimeout, 90_000),
    poolMaxSize: backend.poolMaxSize ?? undefined,
    keepalive: backend.keepalives?.enabled ?? true,
    terminationDeadlineMs: terminationDeadline(raw, env),
    terminationMinDeadlineMs: ms(raw.connectionMinTerminationDeadline, 0),
    mcpSessionTtlMs: ms(raw.mcp?.sessionTtl, 30 * 60_000),
    sessionKey: raw.session?.key ?? env("SESSION_KEY"),
    workerThreads: workerThreads(raw, env),
    tracing: tracingSettings(config)
  }
}

const named = (record: Readonly<Record<string, string>> | null | undefined, path: string): ReadonlyArray<Ir.NamedExpression> | undefined =>
  defined(record) ? Object.entries(record).map(([name, source]) => ({ name, source, path: `${path}.${name}` })) : undefined

/**
 * Access log and metrics settings. `frontendPolicies.accessLog` (or its alias `logging`) wins
 * over the deprecated `config.logging.filter`/`fields`, which upstream migrates into it.
 */
const observability = (config: C.LocalConfig): Pick<Ir.Settings, "accessLogRemove" | "accessLogFilter" | "accessLogAdd" | "metricsRemove" | "metricsAdd" | "sensitiveHeaders"> => {
  const raw = config.config ?? {}
  const fp = config.frontendPolicies
  const policyPath = defined(fp?.accessLog) ? "frontendPolicies.accessLog" : "frontendPolicies.logging"
  const policy = fp?.accessLog ?? fp?.logging ?? undefined
  const legacy = raw.logging
  const filter = defined(policy?.filter)
    ? { source: policy.filter, path: `${policyPath}.filter` }
    : defined(legacy?.filter)
    ? { source: legacy.filter, path: "config.logging.filter" }
    : undefined
  return {
    accessLogRemove: policy?.remove ?? legacy?.fields?.remove ?? [],
    accessLogFilter: filter,
    accessLogAdd: defined(policy?.add) ? named(policy.add, `${policyPath}.add`) : named(legacy?.fields?.add, "config.logging.fields.add"),
    metricsRemove: raw.metrics?.remove ?? undefined,
    metricsAdd: named(raw.metrics?.fields?.add, "config.metrics.fields.add"),
    sensitiveHeaders: raw.sensitiveHeaders?.map((h) => h.toLowerCase()) ?? undefined
  }
}

/** `true`/`false`/ratio (or the same as a string) → a probability. */
const samplingRate = (value: boolean | number | string | null | undefined, fallback: number): number => {
  if (value === undefined || value === null) return fallback
  if (typeof value === "boolean") return value ? 1 : 0
  if (typeof value === "number") return value
  const t = value.trim()
  return t === "true" ? 1 : t === "false" ? 0 : Number(t)
}

/**
 * `frontendPolicies.tracing` wins over the deprecated `config.tracing` (upstream's `migrate`
 * moves the latter into the former). Both default to gRPC, as upstream's schema does.
 */
const tracingSettings = (config: C.LocalConfig): Ir.TracingSettings | undefined => {
  const policy = config.frontendPolicies?.tracing
  if (defined(policy)) {
    if (!defined(policy.host)) return undefined
    return {
      protocol: policy.protocol ?? "grpc",
      endpoint: `http://${policy.host}`,
      path: policy.path ?? "/v1/traces",
      headers: {},
      randomSampling: samplingRate(policy.randomSampling, 0),
      clientSampling: samplingRate(policy.clientSampling, 1),
      attributes: named(policy.attributes, "frontendPolicies.tracing.attributes"),
      remove: policy.remove ?? undefined
    }
  }
  const raw = config.config?.tracing
  if (!defined(raw) || !defined(raw.otlpEndpoint)) return undefined
  return {
    protocol: raw.otlpProtocol ?? "grpc",
    endpoint: raw.otlpEndpoint,
    path: raw.path ?? "/v1/traces",
    headers: raw.headers ?? {},
    randomSampling: samplingRate(raw.randomSampling, 0),
    clientSampling: samplingRate(raw.clientSampling, 1),
    attributes: named(raw.fields?.add, "config.tracing.fields.add"),
    remove: raw.fields?.remove ?? undefined
  }
}

const MCP_DELIMITERS = /[_+]/

/**
 * A target's policies, most specific first (first found wins; `mcpAuthorization` accumulates):
 * its own inline ones, `policies[]` targeting its section, then those of the named host backend
 * it goes through (`{backend: name}`).
 */
const targetPolicies = (
  own: C.McpTargetPolicies | null | undefined,
  section: Partial<Ir.McpTargetPolicies> | undefined,
  via: Partial<Ir.McpTargetPolicies> | undefined
): Ir.McpTargetPolicies => {
  const inline = present(own)
  const mine: Partial<Ir.McpTargetPolicies> = {}
  for (const key of VIA_BACKEND_POLICIES) if (defined(inline[key])) (mine as Record<string, unknown>)[key] = inline[key]
  return firstFoundWins<Ir.McpTargetPolicies>(mine, section ?? {}, via ?? {})
}

/**
 * An `mcp:` backend (route, named backend `backendName`, or shorthand) → IR; problems go to
 * `issues` under `path`. Targets through a named backend take its host and connection policies.
 */
const mcpBackend = (ctx: Pick<Context, "named" | "targeted">, mcp: C.McpBackend, path: string, backendName: string | undefined, issues: Issues): Ir.McpBackend => {
  const names = new Set<string>()
  const sections = backendName === undefined ? undefined : ctx.targeted.bySection.get(backendName)
  const targets = mcp.targets.flatMap((t, i): Array<Ir.McpTarget> => {
    const tpath = `${path}.targets[${i}]`
    if (MCP_DELIMITERS.test(t.name)) issues.add(`${tpath}.name`, `target name "${t.name}" must not contain "_" or "+"`)
    if (names.has(t.name)) issues.add(`${tpath}.name`, `duplicate target name "${t.name}"`)
    names.add(t.name)
    const section = sections?.get(t.name)?.policy
    if (defined(t.stdio)) {
      // A child process has no HTTP requests to shape; upstream refuses these too.
      const own = present(t.policies)
      for (const key of Object.keys(own)) issues.add(`${tpath}.policies.${key}`, "policies are not supported on stdio targets")
      const stdioSection = section === undefined ? [] : Object.keys(section).filter((k) => k !== "mcpAuthorization")
      for (const key of stdioSection) issues.add(`${sections?.get(t.name)?.path ?? tpath}.policy.${key}`, `target "${t.name}" is a stdio target: only mcpAuthorization applies to it`)
      return [{
        name: t.name,
        path: tpath,
        transport: { _tag: "Stdio", cmd: t.stdio.cmd, args: t.stdio.args ?? [], env: t.stdio.env ?? {}, clearEnv: t.stdio.clear_env ?? false },
        policies: targetPolicies(undefined, section, undefined)
      }]
    }
    const connection = defined(t.mcp) ? { spec: t.mcp, tag: "StreamableHttp" as const, key: "mcp", defaultPath: "/mcp" }
      : defined(t.sse) ? { spec: t.sse, tag: "Sse" as const, key: "sse", defaultPath: "/sse" }
      : undefined
    if (connection === undefined) {
      if (!defined(t.openapi)) return []
      // The document is loaded when the snapshot is built (McpBackend), so a bad one rejects the config there.
      const endpoint = mcpEndpoint(ctx, t.openapi, "")
      if (typeof endpoint === "string") {
        issues.add(`${tpath}.openapi`, endpoint)
        return []
      }
      const policies = targetPolicies(t.policies, section, endpoint.via)
      return [{
        name: t.name,
        path: tpath,
        transport: { _tag: "OpenApi", target: endpoint.target, schema: t.openapi.schema, tls: endpoint.tls || defined(policies.backendTLS) },
        policies
      }]
    }
    const cpath = `${tpath}.${connection.key}`
    const endpoint = mcpEndpoint(ctx, connection.spec, connection.defaultPath)
    if (typeof endpoint === "string") {
      issues.add(cpath, endpoint)
      return []
    }
    const policies = targetPolicies(t.policies, section, endpoint.via)
    return [{
      name: t.name,
      path: tpath,
      transport: { _tag: connection.tag, target: endpoint.target, path: endpoint.path, tls: endpoint.tls || defined(endpoint.via?.backendTLS) },
      policies
    }]
  })
  if (sections !== undefined) {
    for (const [section, { path: ppath }] of sections) {
      if (!names.has(section)) issues.add(`${ppath}.target.backend.backend.section`, `backend "${backendName}" has no MCP target "${section}"`)
    }
  }
  return {
    _tag: "Mcp",
    targets,
    stateful: mcp.statefulMode !== "stateless",
    prefixMode: mcp.prefixMode ?? "conditional",
    failureMode: mcp.failureMode ?? "failClosed",
    dnsRebindingProtection: mcp.dnsRebindingProtection ?? false
  }
}

interface McpEndpoint {
  readonly target: Ir.HostTarget
  readonly path: string
  readonly tls: boolean
  /** The connection policies of the named backend the target goes through. */
  readonly via?: Partial<Ir.McpTargetPolicies>
}

/** `host` as a URL (`http://h:p/path`), a bare host with `port` and `path`, or a named host backend (`backend`, `path`). */
const mcpEndpoint = (
  ctx: Pick<Context, "named" | "targeted">,
  spec: { readonly host?: string | null | undefined; readonly port?: number | null | undefined; readonly path?: string | null | undefined; readonly backend?: string | null | undefined },
  defaultPath: string
): McpEndpoint | string => {
  if (defined(spec.backend)) {
    if (defined(spec.host)) return "set either host or backend, not both"
    const named = ctx.named.get(spec.backend)
    if (named === undefined) return `backend "${spec.backend}" is not defined in backends`
    if (!defined(named.backend.host)) return `backend "${spec.backend}" is not a host backend`
    const target = parseHostTarget(named.backend.host)
    if (typeof target === "string") return `backend "${spec.backend}": ${target}`
    const all = firstFoundWins<C.BackendPolicies>(present(named.backend.policies), ctx.targeted.byBackend.get(spec.backend) ?? {})
    const via: Partial<Ir.McpTargetPolicies> = {}
    for (const key of VIA_BACKEND_POLICIES) if (defined(all[key])) (via as Record<string, unknown>)[key] = all[key]
    return { target, path: spec.path ?? defaultPath, tls: false, via }
  }
  if (!defined(spec.host)) return `missing required field "host"`
  if (spec.host.includes("://")) {
    let url: URL
    try {
      url = new URL(spec.host)
    } catch {
      return `invalid URL "${spec.host}"`
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") return `unsupported scheme in "${spec.host}"`
    const tls = url.protocol === "https:"
    const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname
    const target = parseHostTarget(`${host.includes(":") ? `[${host}]` : host}:${url.port === "" ? (tls ? 443 : 80) : url.port}`)
    if (typeof target === "string") return target
    const path = defined(spec.path) ? spec.path : url.pathname === "/" && !spec.host.endsWith("/") ? defaultPath : url.pathname
    return { target, path: path + url.search, tls }
  }
  const target = parseHostTarget(spec.host.includes(":") || !defined(spec.port) ? spec.host : `${spec.host}:${spec.port}`)
  if (typeof target === "string") return target
  return { target, path: spec.path ?? defaultPath, tls: false }
}

/**
 * The top-level `mcp:` shorthand as the route it stands for: its own bind on `port` (default
 * 3000) matching any path, or, with `gateways` (or an implicit `default` gateway and no
 * `port`), a route on those gateways matching `/mcp`, `/sse` and `/.well-known`.
 */
const expandMcpShorthand = (config: C.LocalConfig, mcp: C.SimpleMcp): C.LocalConfig => {
  const { gateways, port, policies, ...backend } = mcp
  const attach = defined(gateways) || (!defined(port) && defined(config.gateways) && config.gateways["default"] !== undefined)
  const routeBackend = { mcp: backend }
  if (attach) {
    const route: C.AttachedRoute = {
      name: "mcp",
      ...(defined(gateways) ? { gateways } : {}),
      matches: ["/mcp", "/sse", "/.well-known"].map((p) => ({ path: { pathPrefix: p } })),
      backends: [routeBackend],
      ...(defined(policies) ? { policies } : {})
    }
    return { ...config, routes: [...(config.routes ?? []), route] }
  }
  const bind: C.Bind = {
    port: port ?? 3000,
    listeners: [{ name: "mcp", routes: [{ name: "mcp", backends: [routeBackend], ...(defined(policies) ? { policies } : {}) }] }]
  }
  return { ...config, binds: [...(config.binds ?? []), bind] }
}

/** Validated in `normalize` (an invalid count is a config error); here only read. */
const workerThreads = (raw: C.RawConfig, env: Env.Lookup): number => {
  const resolved = WorkerCount.resolve(raw.workerThreads, env, os.availableParallelism())
  return "count" in resolved ? resolved.count : WorkerCount.DEFAULT_WORKERS
}

/** CONNECTION_TERMINATION_DEADLINE, then config, then TERMINATION_GRACE_PERIOD_SECONDS − 5, else 5 s. */
const terminationDeadline = (raw: C.RawConfig, env: Env.Lookup): number => {
  const fromEnv = env("CONNECTION_TERMINATION_DEADLINE")
  if (fromEnv !== undefined && Duration.isDuration(fromEnv)) return Duration.parseMillis(fromEnv)
  if (defined(raw.connectionTerminationDeadline)) return Duration.parseMillis(raw.connectionTerminationDeadline)
  const grace = Number(env("TERMINATION_GRACE_PERIOD_SECONDS"))
  if (Number.isFinite(grace) && grace > 0) return Math.max(grace > 10 ? grace - 5 : grace - 1, 0) * 1000
  return 5000
}

/**
 * A watchdog limit from the environment (ours; agentgateway has neither): `fallbackMs` when
 * unset, "0s" turns the watch off, anything else not a duration is a config error naming the
 * variable. Both default to 30 s, as nginx's `client_body_timeout`/`send_timeout` 60 s and
 * haproxy's anti-DoS 5 s bracket it.
 */
const envLimit = (env: Env.Lookup, name: string, fallbackMs: number, issues: Issues): number => {
  const raw = env(name)
  if (raw === undefined) return fallbackMs
  if (!Duration.isDuration(raw)) {
    issues.add(name, `invalid duration "${raw}" (expected e.g. "30s", "1m"; "0s" turns it off)`)
    return fallbackMs
  }
  return Duration.parseMillis(raw)
}
/** The longest pause in a request body the gateway is reading before it answers 408 (listeners/BodyWatch.ts). */
export const BODY_IDLE_TIMEOUT_ENV = "REQUEST_BODY_IDLE_TIMEOUT"
/** The longest time a response waits for the client to take any byte before its connection is closed (listeners/SendWatch.ts). */
export const SEND_TIMEOUT_ENV = "RESPONSE_SEND_TIMEOUT"

export const normalize = (config: C.LocalConfig, env: Env.Lookup): Effect.Effect<Ir.Snapshot, ConfigError> =>
  Effect.suspend(() => {
    const issues = new Issues()
    const named = new Map<string, { backend: C.NamedBackend; path: string }>()
    ;(config.backends ?? []).forEach((b, i) => {
      const path = `backends[${i}]`
      if (named.has(b.name)) issues.add(`${path}.name`, `duplicate backend name "${b.name}"`)
      named.set(b.name, { backend: b, path })
      if (defined(b.host)) {
        const target = parseHostTarget(b.host)
        if (typeof target === "string") issues.add(`${path}.host`, target)
      }
    })
    const ctx: Context = { issues, named, targeted: collectTargeted(config, issues) }
    // After every name is known: a target may go through a backend defined after it.
    for (const [name, { backend, path }] of named) if (defined(backend.mcp)) mcpBackend(ctx, backend.mcp, `${path}.mcp`, name, issues)
    for (const [name, sections] of ctx.targeted.bySection) {
      if (named.get(name)?.backend.mcp === undefined || named.get(name)?.backend.mcp === null) {
        for (const { path } of sections.values()) issues.add(`${path}.target.backend.backend.section`, `backend "${name}" is not a named MCP backend: only its MCP targets have sections`)
      }
    }
    const expanded = defined(config.mcp) ? expandMcpShorthand(config, config.mcp) : config
    const binds = [...fromBinds(ctx, expanded), ...fromGateways(ctx, expanded)]
    const seen = new Map<number, string>()
    for (const bind of binds) {
      const other = seen.get(bind.port)
      if (other !== undefined) issues.add("", `port ${bind.port} is configured by both ${other} and ${bind.key}; binds and gateways must use unique ports`)
      seen.set(bind.port, bind.listeners[0]?.path ?? bind.key)
    }
    const workers = WorkerCount.resolve(config.config?.workerThreads, env, os.availableParallelism())
    if ("message" in workers) issues.add(workers.path, workers.message)
    const limits = {
      bodyIdleMs: envLimit(env, BODY_IDLE_TIMEOUT_ENV, DEFAULT_IDLE_TIMEOUT_MS, issues),
      sendMs: envLimit(env, SEND_TIMEOUT_ENV, DEFAULT_SEND_TIMEOUT_MS, issues)
    }
    if (issues.list.length > 0) return Effect.fail(new ConfigError({ issues: issues.list }))
    return Effect.succeed({ binds, settings: settings(config, env, limits), backends: namedBackendRefs(ctx) })
  })
