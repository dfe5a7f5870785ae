/**
 * Prometheus text exposition (format 0.0.4) of Effect's metric registry. Effect ships the
 * same formatter in `effect/observability/PrometheusMetrics`, but that module also imports the
 * HTTP router for its `layerHttp`, which costs ~27 MB of resident memory in a process that
 * never uses it; the gateway only needs counters, gauges and histograms rendered.
 *
 * @since 0.1.0
 */
import type * as Context from "effect/Context"
import * as Metric from "effect/Metric"

const escapeLabel = (value: string) => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"')
const escapeHelp = (value: string) => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

const labels = (attributes: Metric.Metric.AttributeSet | undefined, extra?: readonly [string, string]): string => {
  const parts: Array<string> = []
  if (attributes !== undefined) for (const [k, v] of Object.entries(attributes)) parts.push(`${k}="${escapeLabel(String(v))}"`)
  if (extra !== undefined) parts.push(`${extra[0]}="${extra[1]}"`)
  return parts.length === 0 ? "" : `{${parts.join(",")}}`
}

const number = (value: number | bigint): string =>
  typeof value === "bigint" ? value.toString() : Number.isNaN(value) ? "NaN" : value === Infinity ? "+Inf" : value === -Infinity ? "-Inf" : String(value)

const PREFIX = "agentgateway_"

/**
 * The names `config.metrics.remove` may use for a family, as upstream's `should_skip` accepts
 * them: with or without the `agentgateway_` prefix, the `_total` suffix and the unit.
 */
export const namesOf = (family: string): ReadonlyArray<string> => {
  const base = family.startsWith(PREFIX) ? family.slice(PREFIX.length) : family
  const forms = new Set<string>([base])
  const noTotal = base.endsWith("_total") ? base.slice(0, -"_total".length) : base
  forms.add(noTotal)
  for (const unit of ["_seconds", "_bytes"]) if (noTotal.endsWith(unit)) forms.add(noTotal.slice(0, -unit.length))
  const out: Array<string> = []
  for (const f of forms) out.push(f, PREFIX + f)
  return out
}

/** Renders every metric of the registry, leaving out families named in `removed`. */
export const format = (context: Context.Context<never>, removed?: ReadonlySet<string>): string =>
  formatSnapshots(Metric.snapshotUnsafe(context), removed)

/** Renders snapshots (of this process's registry, or merged over worker processes: cluster/MetricsMerge.ts). */
export const formatSnapshots = (snapshots: Iterable<Metric.Metric.Snapshot>, removed?: ReadonlySet<string>): string => {
  const families = new Map<string, Array<Metric.Metric.Snapshot>>()
  const skipped = new Map<string, boolean>()
  for (const snapshot of snapshots) {
    if (removed !== undefined && removed.size > 0) {
      let skip = skipped.get(snapshot.id)
      if (skip === undefined) {
        skip = namesOf(snapshot.id).some((n) => removed.has(n))
        skipped.set(snapshot.id, skip)
      }
      if (skip) continue
    }
    const list = families.get(snapshot.id)
    if (list === undefined) families.set(snapshot.id, [snapshot])
    else list.push(snapshot)
  }
  const lines: Array<string> = []
  for (const [name, series] of families) {
    const first = series[0]!
    if (first.description !== undefined) lines.push(`# HELP ${name} ${escapeHelp(first.description)}`)
    lines.push(`# TYPE ${name} ${first.type === "Counter" ? "counter" : first.type === "Histogram" ? "histogram" : "gauge"}`)
    for (const s of series) {
      switch (s.type) {
        case "Counter":
          lines.push(`${name}${labels(s.attributes)} ${number(s.state.count)}`)
          break
        case "Gauge":
          lines.push(`${name}${labels(s.attributes)} ${number(s.state.value)}`)
          break
        case "Histogram":
          for (const [boundary, cumulative] of s.state.buckets) {
            if (boundary !== Infinity) lines.push(`${name}_bucket${labels(s.attributes, ["le", String(boundary)])} ${cumulative}`)
          }
          lines.push(`${name}_bucket${labels(s.attributes, ["le", "+Inf"])} ${s.state.count}`)
          lines.push(`${name}_sum${labels(s.attributes)} ${number(s.state.sum)}`)
          lines.push(`${name}_count${labels(s.attributes)} ${s.state.count}`)
          break
        default:
          break
      }
    }
  }
  return lines.length === 0 ? "" : lines.join("\n") + "\n"
}
