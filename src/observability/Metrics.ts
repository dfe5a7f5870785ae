/**
 * Prometheus metrics with agentgateway's names and labels, on Effect's Metric registry (the
 * stats server renders it with `PrometheusMetrics`). Request metrics are recorded from the
 * listener's completion callback with `updateUnsafe`, one cached labelled series per label set.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Metric from "effect/Metric"

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

const requestsTotal = Metric.counter("agentgateway_requests_total", {
  description: "Total HTTP requests handled, by route, backend, status and reason.",
  incremental: true
})
const requestDuration = Metric.histogram("agentgateway_request_duration_seconds", {
  description: "Downstream request duration, from request head to the end of the response.",
  boundaries: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
})
const mcpRequestsTotal = Metric.counter("agentgateway_mcp_requests_total", {
  description: "MCP requests handled, by JSON-RPC method, resource type, target (server) and tool name.",
  incremental: true
})
const configReloads = Metric.counter("agentgateway_config_reloads_total", {
  description: "Config reload attempts by result (success, failure).",
  incremental: true
})
const configSynchronized = Metric.gauge("agentgateway_config_synchronized", {
  description: "1 when the last config load succeeded, 0 when the previous config is still serving after a failure."
})
const buildInfo = Metric.gauge("agentgateway_build_info", { description: "Build information." })

/**
 * Distinct `agentgateway_mcp_requests_total` series kept; later label sets are not counted.
 * Unknown methods and tool names are client-chosen, so without a bound a client could grow the
 * registry without limit.
 */
export const MAX_MCP_SERIES = 4096

/** A recorder bound to the process's metric registry. */
export class RequestMetrics {
  private readonly series = new Map<string, { readonly total: Metric.Counter<number>; readonly duration: Metric.Histogram<number> }>()
  private readonly mcpSeries = new Map<string, Metric.Counter<number>>()
  private readonly context: Context.Context<never>

  constructor(context: Context.Context<never>) {
    this.context = context
  }

  record(labels: RequestLabels, seconds: number): void {
    const key = `${labels.backend}\u0000${labels.method}\u0000${labels.status}\u0000${labels.reason}\u0000${labels.bind}\u0000${labels.gateway}\u0000${labels.listener}\u0000${labels.route}\u0000${labels.route_rule}\u0000${labels.protocol}`
    let s = this.series.get(key)
    if (s === undefined) {
      const attributes = { ...labels }
      s = { total: Metric.withAttributes(requestsTotal, attributes), duration: Metric.withAttributes(requestDuration, attributes) }
      this.series.set(key, s)
    }
    s.total.updateUnsafe(1, this.context)
    s.duration.updateUnsafe(seconds, this.context)
  }

  /** One MCP request; the label values come from the client (method, tool names), so the series map is bounded. */
  mcp(labels: McpLabels): void {
    const key = `${labels.method}\u0000${labels.resource_type}\u0000${labels.server}\u0000${labels.resource}`
    let s = this.mcpSeries.get(key)
    if (s === undefined) {
      if (this.mcpSeries.size >= MAX_MCP_SERIES) return
      s = Metric.withAttributes(mcpRequestsTotal, { ...labels })
      this.mcpSeries.set(key, s)
    }
    s.updateUnsafe(1, this.context)
  }

  configLoad(success: boolean): void {
    Metric.withAttributes(configReloads, { result: success ? "success" : "failure" }).updateUnsafe(1, this.context)
    configSynchronized.updateUnsafe(success ? 1 : 0, this.context)
  }

  buildInfo(version: string): void {
    Metric.withAttributes(buildInfo, { tag: version }).updateUnsafe(1, this.context)
  }
}
