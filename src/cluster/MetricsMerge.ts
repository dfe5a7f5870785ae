/**
 * One `/metrics` scrape over every worker: each worker sends its registry flattened
 * (`toWire`), the primary adds the series up (`merge`) and renders them with the primary's own.
 *
 * Series with the same name and labels are summed: counters and histograms (buckets, count and
 * sum; min of mins, max of maxes) because each worker counted its own share of the traffic, and
 * gauges because every gauge a worker exports is a per-process quantity (connections, sizes).
 * Process-wide state that must not be multiplied by the worker count (`agentgateway_build_info`,
 * the config-load families) is the primary's: the caller passes those names in `exclude`.
 *
 * @since 0.1.0
 */
import type * as Metric from "effect/Metric"
import type { WireSeries } from "./Protocol.ts"

const num = (value: number | bigint): number => (typeof value === "bigint" ? Number(value) : value)

/** A worker's registry as it crosses the IPC channel (frequency and summary metrics are not exported). */
export const toWire = (snapshots: ReadonlyArray<Metric.Metric.Snapshot>): Array<WireSeries> => {
  const out: Array<WireSeries> = []
  for (const s of snapshots) {
    const base = { id: s.id, description: s.description ?? null, attributes: s.attributes ?? {} }
    switch (s.type) {
      case "Counter":
        out.push({ type: "Counter", ...base, count: num(s.state.count) })
        break
      case "Gauge":
        out.push({ type: "Gauge", ...base, value: num(s.state.value) })
        break
      case "Histogram":
        out.push({
          type: "Histogram",
          ...base,
          buckets: s.state.buckets.map(([bound, count]): readonly [number, number] => [bound, count]),
          count: s.state.count,
          sum: s.state.sum,
          min: s.state.min,
          max: s.state.max
        })
        break
      default:
        break
    }
  }
  return out
}

const seriesKey = (s: WireSeries): string => {
  const names = Object.keys(s.attributes).sort()
  let key = s.id
  for (const n of names) key += `\u0000${n}\u0001${s.attributes[n]}`
  return key
}

interface Acc {
  readonly first: WireSeries
  value: number
  count: number
  sum: number
  min: number
  max: number
  readonly buckets: Map<number, number>
}

/** Sums the workers' series (same name and labels), leaving out the families named in `exclude`. */
export const merge = (workers: ReadonlyArray<ReadonlyArray<WireSeries>>, exclude: ReadonlySet<string>): Array<Metric.Metric.Snapshot> => {
  const acc = new Map<string, Acc>()
  for (const series of workers) {
    for (const s of series) {
      if (exclude.has(s.id)) continue
      const key = seriesKey(s)
      let a = acc.get(key)
      if (a === undefined) {
        a = { first: s, value: 0, count: 0, sum: 0, min: Infinity, max: -Infinity, buckets: new Map() }
        acc.set(key, a)
      } else if (a.first.type !== s.type) {
        // Two workers disagree about a series' type only across versions; the first one wins.
        continue
      }
      switch (s.type) {
        case "Counter":
          a.count += s.count
          break
        case "Gauge":
          a.value += s.value
          break
        case "Histogram":
          a.count += s.count
          a.sum += s.sum
          if (s.count > 0) {
            a.min = Math.min(a.min, s.min)
            a.max = Math.max(a.max, s.max)
          }
          for (const [bound, cumulative] of s.buckets) a.buckets.set(bound, (a.buckets.get(bound) ?? 0) + cumulative)
          break
      }
    }
  }
  const out: Array<Metric.Metric.Snapshot> = []
  for (const a of acc.values()) {
    const s = a.first
    const base = { id: s.id, description: s.description ?? undefined, attributes: s.attributes }
    switch (s.type) {
      case "Counter":
        out.push({ ...base, type: "Counter", state: { count: a.count, incremental: true } })
        break
      case "Gauge":
        out.push({ ...base, type: "Gauge", state: { value: a.value } })
        break
      case "Histogram":
        out.push({
          ...base,
          type: "Histogram",
          state: {
            buckets: [...a.buckets].sort((x, y) => x[0] - y[0]),
            count: a.count,
            sum: a.sum,
            min: a.count > 0 ? a.min : 0,
            max: a.count > 0 ? a.max : 0
          }
        })
        break
    }
  }
  return out
}
