/**
 * Prometheus metrics with agentgateway's names and labels, on Effect's Metric registry (the
 * stats server renders it with `Prometheus.format`). Request metrics are recorded from the
 * listener's completion callback with `updateUnsafe`.
 *
 * The per-request cost is a few map lookups, no string building: series are cached in a tree
 * keyed by the route (an object built once per snapshot, held weakly so a reload frees the old
 * one), the backend name, and one number packing protocol, reason, method and status (each a
 * small index). Only `config.metrics.fields.add` labels, whose values come from CEL per
 * request, add a string key, and their distinct tuples are bounded.
 *
 * Empty label values are exported as `unknown`, as upstream's `DefaultedUnknown` does.
 *
 * @since 0.1.0
 */
import type * as Context from "effect/Context"
import * as Metric from "effect/Metric"
import type { RouteInfo } from "../pipeline/RequestContext.ts"

export const requestLabels = [
  "backend",
  "protocol",
  "method",
  "status",
  "reason",
  "bind",
  "gateway",
  "listener",
  "route",
  "route_rule"
] as const
export type RequestLabels = { readonly [K in (typeof requestLabels)[number]]: string }

export const mcpLabels = ["method", "resource_type", "server", "resource"] as const
export type McpLabels = { readonly [K in (typeof mcpLabels)[number]]: string }

/** Labels a custom metric field may not take: the built-in ones, and the histogram's `le`. */
export const reservedLabels: ReadonlySet<string> = new Set<string>([...requestLabels, ...mcpLabels, "le", "tag", "result", "transport"])

/** The value upstream exports for an absent label. */
export const UNKNOWN = "unknown"

/** Buckets of `agentgateway_request_duration_seconds` (upstream's HTTP_REQUEST_DURATION_BUCKET). */
export const REQUEST_DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 80]
/** Buckets of `agentgateway_upstream_connect_duration_seconds` (upstream's CONNECT_DURATION_BUCKET). */
export const CONNECT_DURATION_BUCKETS = [0.0005, 0.0015, 0.0043, 0.0126, 0.0368, 0.108, 0.316, 0.924, 2.71, 8]

/**
 * A labelled series is a metric of its own with fixed attributes. `Metric.withAttributes` would
 * address the same registry entry, but it rebuilds the series key (sorted attributes,
 * `JSON.stringify`) on every update; a metric built with its attributes computes it once.
 */
const counterSeries = (name: string, description: string) => (attributes: Metric.Metric.Attributes): Metric.Counter<number> =>
  Metric.counter(name, { description, incremental: true, attributes })
const histogramSeries = (name: string, description: string, boundaries: ReadonlyArray<number>) =>
(attributes: Metric.Metric.Attributes): Metric.Histogram<number> => Metric.histogram(name, { description, boundaries, attributes })

const requestsTotal = counterSeries("agentgateway_requests_total", "The total number of HTTP requests sent")
const requestDuration = histogramSeries("agentgateway_request_duration_seconds", "Duration of HTTP requests (seconds)", REQUEST_DURATION_BUCKETS)
const responseBytes = counterSeries("agentgateway_response_bytes_total", "Total HTTP response bytes received")
const retriesTotal = counterSeries("agentgateway_retries_total", "The total number of request retries")
const mcpRequestsTotal = counterSeries("agentgateway_mcp_requests_total", "Total number of MCP tool calls")
const downstreamConnections = counterSeries("agentgateway_downstream_connections_total", "The total number of downstream connections established")
const upstreamConnectDuration = histogramSeries(
  "agentgateway_upstream_connect_duration_seconds",
  "Duration to establish upstream connection (seconds)",
  CONNECT_DURATION_BUCKETS
)
const configReloads = Metric.counter("agentgateway_config_reloads_total", {
  description: "Config load attempts by result (success, failure), the initial load included.",
  incremental: true
})
const configSynchronized = Metric.gauge("agentgateway_config_synchronized", {
  description: "1 when the last config load succeeded, 0 when the previous config is still serving after a failure."
})
const configLastSuccess = Metric.gauge("agentgateway_config_last_reload_success_timestamp_seconds", {
  description: "Unix time of the last config load that succeeded."
})
const buildInfo = Metric.gauge("agentgateway_build_info", { description: "Agentgateway build information" })

/**
 * Distinct `agentgateway_mcp_requests_total` series kept; later label sets are not counted.
 * Unknown methods and tool names are client-chosen, so without a bound a client could grow the
 * registry without limit.
 */
export const MAX_MCP_SERIES = 4096
/**
 * Distinct custom-label tuples (`config.metrics.fields.add`) kept per route and status; later
 * tuples are counted with every custom label `other`. CEL values may come from the client.
 */
export const MAX_CUSTOM_SERIES = 1024
/** The custom label value of tuples beyond `MAX_CUSTOM_SERIES`. */
export const OVERFLOW = "other"

interface RequestSeries {
  readonly total: Metric.Counter<number>
  readonly duration: Metric.Histogram<number>
  readonly bytes: Metric.Counter<number>
  readonly retries: Metric.Counter<number>
}

/** What one finished request is counted under; everything else comes from `route`. */
export interface RequestRecord {
  /** The selected route, or undefined (not found, refused before routing). */
  readonly route: RouteInfo | undefined
  readonly bind: string
  readonly gateway: string
  readonly listener: string
  readonly backend: string
  readonly protocol: string
  readonly method: string
  readonly status: number
  readonly reason: string
  readonly seconds: number
  readonly responseBytes: number
  readonly retries: number
  /** Custom label values, in `customNames` order (undefined: `unknown`); undefined when none are configured. */
  readonly custom: ReadonlyArray<string | undefined> | undefined
}

/** Small dense indices for label values drawn from small sets (protocols, reasons, methods). */
class Index {
  private readonly ids = new Map<string, number>()
  id(value: string): number {
    let id = this.ids.get(value)
    if (id === undefined) {
      id = this.ids.size
      this.ids.set(value, id)
    }
    return id
  }
}

const orUnknown = (value: string | undefined): string => (value === undefined || value === "" ? UNKNOWN : value)

type Leaf = RequestSeries | Map<string, RequestSeries>

/** Per route (or route-less bind/listener): backend → packed key → series. */
type RouteNode = Map<string, Map<number, Leaf>>

/** A recorder bound to the process's metric registry. */
export class RequestMetrics {
  private readonly byRoute = new WeakMap<RouteInfo, RouteNode>()
  private readonly byListener = new Map<string, RouteNode>()
  private readonly protocols = new Index()
  private readonly reasons = new Index()
  private readonly methods = new Index()
  private readonly mcpSeries = new Map<string, Metric.Counter<number>>()
  /** Per route, item labels → the series in `mcpSeries` (never more than it holds). */
  private readonly mcpByRoute = new WeakMap<RouteInfo, Map<string, Metric.Counter<number>>>()
  private readonly connections = new Map<string, Metric.Counter<number>>()
  private readonly connectSeries = new Map<string, Metric.Histogram<number>>()
  private readonly context: Context.Context<never>
  /** Names of the `config.metrics.fields.add` labels of the serving snapshot. */
  private customNames: ReadonlyArray<string> = []

  constructor(context: Context.Context<never>) {
    this.context = context
  }

  /** Sets the custom labels of the snapshot now serving (at each load). */
  setCustomLabels(names: ReadonlyArray<string>): void {
    if (names.length === this.customNames.length && names.every((n, i) => n === this.customNames[i])) return
    this.customNames = names
    // Route nodes belong to the old snapshot's routes and go with them; these outlive snapshots.
    this.byListener.clear()
  }

  get customLabelNames(): ReadonlyArray<string> {
    return this.customNames
  }

  private routeNode(r: RequestRecord): RouteNode {
    const route = r.route
    if (route !== undefined) {
      let node = this.byRoute.get(route)
      if (node === undefined) {
        node = new Map()
        this.byRoute.set(route, node)
      }
      return node
    }
    // Requests without a route (404s, refused requests): bind/gateway/listener come from config, so this stays small.
    const key = `${r.bind}\u0000${r.gateway}\u0000${r.listener}`
    let node = this.byListener.get(key)
    if (node === undefined) {
      node = new Map()
      this.byListener.set(key, node)
    }
    return node
  }

  private create(r: RequestRecord, custom: ReadonlyArray<string> | undefined): RequestSeries {
    const attributes: Record<string, string> = {
      backend: orUnknown(r.backend),
      protocol: orUnknown(r.protocol),
      method: orUnknown(r.method),
      status: r.status === 0 ? UNKNOWN : String(r.status),
      reason: orUnknown(r.reason),
      bind: orUnknown(r.bind),
      gateway: orUnknown(r.gateway),
      listener: orUnknown(r.listener),
      route: orUnknown(r.route?.label),
      route_rule: orUnknown(r.route?.ruleName)
    }
    if (custom !== undefined) this.customNames.forEach((name, i) => (attributes[name] = custom[i]!))
    return {
      total: requestsTotal(attributes),
      duration: requestDuration(attributes),
      bytes: responseBytes(attributes),
      retries: retriesTotal(attributes)
    }
  }

  private series(r: RequestRecord): RequestSeries {
    const node = this.routeNode(r)
    let byKey = node.get(r.backend)
    if (byKey === undefined) {
      byKey = new Map()
      node.set(r.backend, byKey)
    }
    // Indices stay far below 128 (Node parses a fixed method set; protocols and reasons are ours); status < 1000.
    const key = ((this.protocols.id(r.protocol) * 128 + this.reasons.id(r.reason)) * 128 + this.methods.id(r.method)) * 1000 + r.status
    const leaf = byKey.get(key)
    const values = r.custom
    if (values === undefined || this.customNames.length === 0) {
      if (leaf !== undefined && !(leaf instanceof Map)) return leaf
      const s = this.create(r, undefined)
      byKey.set(key, s)
      return s
    }
    const normalized = values.map(orUnknown)
    const customKey = normalized.join("\u0000")
    let byCustom = leaf instanceof Map ? leaf : undefined
    if (byCustom === undefined) {
      byCustom = new Map()
      byKey.set(key, byCustom)
    }
    let s = byCustom.get(customKey)
    if (s === undefined) {
      if (byCustom.size >= MAX_CUSTOM_SERIES) {
        const overflowKey = this.customNames.map(() => OVERFLOW).join("\u0000")
        s = byCustom.get(overflowKey)
        if (s === undefined) {
          s = this.create(r, this.customNames.map(() => OVERFLOW))
          byCustom.set(overflowKey, s)
        }
        return s
      }
      s = this.create(r, normalized)
      byCustom.set(customKey, s)
    }
    return s
  }

  /** One finished request: count, duration, response bytes and retries under its labels. */
  request(r: RequestRecord): void {
    const s = this.series(r)
    const context = this.context
    s.total.updateUnsafe(1, context)
    s.duration.updateUnsafe(r.seconds, context)
    // Upstream creates these series only once there is something to count.
    if (r.responseBytes > 0) s.bytes.updateUnsafe(r.responseBytes, context)
    if (r.retries > 0) s.retries.updateUnsafe(r.retries, context)
  }

  /**
   * One MCP request; the label values come from the client (method, tool names), so the series
   * map is bounded. Route labels as upstream's `MCPCall` carries them.
   */
  mcp(labels: McpLabels, r: RequestRecord): void {
    const custom = r.custom !== undefined && this.customNames.length > 0 ? r.custom.map(orUnknown) : undefined
    const route = r.route
    // The item labels first, per route (a route fixes bind, gateway, listener and rule): the full
    // key below is built only the first time a route sees a label set.
    const itemKey = `${labels.method}\u0000${labels.resource_type}\u0000${labels.server}\u0000${labels.resource}${custom === undefined ? "" : `\u0000${custom.join("\u0000")}`}`
    let perRoute = route === undefined ? undefined : this.mcpByRoute.get(route)
    const cached = perRoute?.get(itemKey)
    if (cached !== undefined) return cached.updateUnsafe(1, this.context)
    const key = `${itemKey}\u0000${r.bind}\u0000${r.gateway}\u0000${r.listener}\u0000${route?.label ?? ""}\u0000${route?.ruleName ?? ""}`
    let s = this.mcpSeries.get(key)
    if (s === undefined) {
      if (this.mcpSeries.size >= MAX_MCP_SERIES) return
      const attributes: Record<string, string> = {
        method: orUnknown(labels.method),
        resource_type: orUnknown(labels.resource_type),
        server: orUnknown(labels.server),
        resource: orUnknown(labels.resource),
        bind: orUnknown(r.bind),
        gateway: orUnknown(r.gateway),
        listener: orUnknown(r.listener),
        route: orUnknown(route?.label),
        route_rule: orUnknown(route?.ruleName)
      }
      if (custom !== undefined) this.customNames.forEach((name, i) => (attributes[name] = custom[i]!))
      s = mcpRequestsTotal(attributes)
      this.mcpSeries.set(key, s)
    }
    if (route !== undefined) {
      if (perRoute === undefined) {
        perRoute = new Map()
        this.mcpByRoute.set(route, perRoute)
      }
      perRoute.set(itemKey, s)
    }
    s.updateUnsafe(1, this.context)
  }

  /** One accepted downstream connection (labels fixed per bind, so the map stays small). */
  connection(bind: string, gateway: string, listener: string, protocol: string): void {
    const key = `${bind}\u0000${gateway}\u0000${listener}\u0000${protocol}`
    let s = this.connections.get(key)
    if (s === undefined) {
      s = downstreamConnections({
        bind: orUnknown(bind),
        gateway: orUnknown(gateway),
        listener: orUnknown(listener),
        protocol
      })
      this.connections.set(key, s)
    }
    s.updateUnsafe(1, this.context)
  }

  /** Time to open one upstream connection (`transport`: `tcp` or `tls`). */
  upstreamConnect(transport: string, seconds: number): void {
    let s = this.connectSeries.get(transport)
    if (s === undefined) {
      s = upstreamConnectDuration({ transport })
      this.connectSeries.set(transport, s)
    }
    s.updateUnsafe(seconds, this.context)
  }

  configLoad(success: boolean, atMs: number = Date.now()): void {
    Metric.withAttributes(configReloads, { result: success ? "success" : "failure" }).updateUnsafe(1, this.context)
    configSynchronized.updateUnsafe(success ? 1 : 0, this.context)
    if (success) configLastSuccess.updateUnsafe(atMs / 1000, this.context)
  }

  buildInfo(version: string): void {
    Metric.withAttributes(buildInfo, { tag: version }).updateUnsafe(1, this.context)
  }
}
