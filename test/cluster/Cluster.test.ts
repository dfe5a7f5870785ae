/**
 * The pure parts of the cluster: the worker count, the IPC message decoding, and the sum of
 * the workers' metric series (with real Effect metrics in private registries).
 */
import * as Context from "effect/Context"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import parse from "parse-prometheus-text-format"
import { describe, expect, it } from "vitest"
import * as AtomicLines from "../../src/cluster/AtomicLines.ts"
import * as MetricsMerge from "../../src/cluster/MetricsMerge.ts"
import * as Protocol from "../../src/cluster/Protocol.ts"
import * as WorkerCount from "../../src/cluster/WorkerCount.ts"
import * as Prometheus from "../../src/observability/Prometheus.ts"

const noEnv = (_name: string): string | undefined => undefined
const withEnv = (value: string) => (name: string) => (name === "WORKER_THREADS" ? value : undefined)

describe("WorkerCount.resolve", () => {
  it("defaults to 1, reads the config, and lets WORKER_THREADS win", () => {
    expect(WorkerCount.resolve(undefined, noEnv, 8)).toEqual({ count: 1 })
    expect(WorkerCount.resolve(null, noEnv, 8)).toEqual({ count: 1 })
    expect(WorkerCount.resolve(3, noEnv, 8)).toEqual({ count: 3 })
    expect(WorkerCount.resolve("4", noEnv, 8)).toEqual({ count: 4 })
    expect(WorkerCount.resolve(3, withEnv("2"), 8)).toEqual({ count: 2 })
    expect(WorkerCount.resolve(3, withEnv(""), 8)).toEqual({ count: 3 })
  })

  it("auto is the core count (at least 1)", () => {
    expect(WorkerCount.resolve("auto", noEnv, 6)).toEqual({ count: 6 })
    expect(WorkerCount.resolve(1, withEnv("AUTO"), 2)).toEqual({ count: 2 })
    expect(WorkerCount.resolve("auto", noEnv, 0)).toEqual({ count: 1 })
  })

  it("refuses anything else, naming where it came from", () => {
    expect(WorkerCount.resolve(0, noEnv, 8)).toEqual({ path: "config.workerThreads", message: 'must be a positive integer or "auto", got 0' })
    expect(WorkerCount.resolve(1.5, noEnv, 8)).toEqual({ path: "config.workerThreads", message: 'must be a positive integer or "auto", got 1.5' })
    expect(WorkerCount.resolve("many", noEnv, 8)).toEqual({ path: "config.workerThreads", message: 'must be a positive integer or "auto", got "many"' })
    expect(WorkerCount.resolve(2, withEnv("-1"), 8)).toEqual({ path: "WORKER_THREADS", message: 'must be a positive integer or "auto", got "-1"' })
    expect(WorkerCount.resolve(WorkerCount.MAX_WORKERS + 1, noEnv, 8)).toEqual({
      path: "config.workerThreads",
      message: `at most ${WorkerCount.MAX_WORKERS} workers, got ${WorkerCount.MAX_WORKERS + 1}`
    })
  })
})

describe("Protocol", () => {
  it("decodes the messages both sides send and ignores anything else", () => {
    expect(Protocol.decodeToWorker({ _tag: "Config", seq: 1, name: "c.yaml", text: "binds: []" })).toEqual(
      Option.some({ _tag: "Config", seq: 1, name: "c.yaml", text: "binds: []" })
    )
    expect(Protocol.decodeToWorker({ _tag: "SetLogLevel", level: "debug" })).toEqual(Option.some({ _tag: "SetLogLevel", level: "debug" }))
    expect(Option.isNone(Protocol.decodeToWorker({ _tag: "SetLogLevel", level: "loud" }))).toBe(true)
    expect(Option.isNone(Protocol.decodeToWorker({ cmd: "NODE_CLUSTER", act: "online" }))).toBe(true)
    expect(Option.isNone(Protocol.decodeToWorker("Drain"))).toBe(true)
    expect(Protocol.decodeToPrimary({ _tag: "Loaded", seq: 2, error: null })).toEqual(Option.some({ _tag: "Loaded", seq: 2, error: null }))
    expect(Option.isNone(Protocol.decodeToPrimary({ _tag: "Series", seq: 3, series: [{ type: "Counter", id: "x", description: null, attributes: {}, count: "1" }] })))
      .toBe(true)
  })
})

/** One worker's registry: its own Map, as each worker process has its own. */
const workerRegistry = (requests: number, durations: ReadonlyArray<number>, extraLabel?: string) => {
  const context = Context.make(Metric.MetricRegistry, new Map())
  const total = Metric.counter("agentgateway_requests_total", { description: "requests", incremental: true })
  const duration = Metric.histogram("agentgateway_request_duration_seconds", { description: "duration", boundaries: [0.1, 1] })
  const connections = Metric.gauge("agentgateway_open_connections", { description: "open" })
  const build = Metric.gauge("agentgateway_build_info", { description: "build" })
  Metric.withAttributes(total, { route: "r", status: "200" }).updateUnsafe(requests, context)
  if (extraLabel !== undefined) Metric.withAttributes(total, { status: "200", route: extraLabel }).updateUnsafe(1, context)
  for (const d of durations) Metric.withAttributes(duration, { route: "r" }).updateUnsafe(d, context)
  connections.updateUnsafe(2, context)
  Metric.withAttributes(build, { tag: "1.0" }).updateUnsafe(1, context)
  return MetricsMerge.toWire(Metric.snapshotUnsafe(context))
}

describe("MetricsMerge", () => {
  it("sums counters, histograms and gauges of the same series over workers and leaves primary families out", () => {
    const a = workerRegistry(3, [0.05, 0.5])
    const b = workerRegistry(4, [2], "other")
    const merged = MetricsMerge.merge([a, b], new Set(["agentgateway_build_info"]))
    const text = Prometheus.formatSnapshots(merged)
    expect(text).not.toContain("agentgateway_build_info")
    const families = parse(text.replace(/^# TYPE (\S+) histogram$/gm, "# TYPE $1 untyped"))
    const samples = (name: string) => families.find((f) => f.name === name)?.metrics ?? []
    expect(samples("agentgateway_requests_total")).toEqual([
      { labels: { route: "r", status: "200" }, value: "7" },
      { labels: { status: "200", route: "other" }, value: "1" }
    ])
    expect(samples("agentgateway_open_connections")).toEqual([{ value: "4" }])
    expect(text).toContain('agentgateway_request_duration_seconds_bucket{route="r",le="0.1"} 1\n')
    expect(text).toContain('agentgateway_request_duration_seconds_bucket{route="r",le="1"} 2\n')
    expect(text).toContain('agentgateway_request_duration_seconds_bucket{route="r",le="+Inf"} 3\n')
    expect(text).toContain('agentgateway_request_duration_seconds_count{route="r"} 3\n')
    expect(text).toContain('agentgateway_request_duration_seconds_sum{route="r"} 2.55\n')
    const histogram = merged.find((s) => s.type === "Histogram")
    expect(histogram?.type === "Histogram" ? [histogram.state.min, histogram.state.max] : []).toEqual([0.05, 2])
  })

  it("matches series whatever the order of their labels, and one worker alone is unchanged", () => {
    const one = MetricsMerge.toWire(Metric.snapshotUnsafe((() => {
      const context = Context.make(Metric.MetricRegistry, new Map())
      Metric.withAttributes(Metric.counter("c", { incremental: true }), { a: "1", b: "2" }).updateUnsafe(5, context)
      return context
    })()))
    const reordered = one.map((s) => ({ ...s, attributes: { b: "2", a: "1" } }))
    expect(Prometheus.formatSnapshots(MetricsMerge.merge([one, reordered], new Set()))).toBe('# TYPE c counter\nc{a="1",b="2"} 10\n')
    expect(Prometheus.formatSnapshots(MetricsMerge.merge([one], new Set()))).toBe('# TYPE c counter\nc{a="1",b="2"} 5\n')
  })

  it("survives the IPC channel's advanced serialization (Infinity bucket bounds)", () => {
    const wire = workerRegistry(1, [0.5])
    const decoded = Protocol.decodeToPrimary(structuredClone({ _tag: "Series", seq: 1, series: wire }))
    expect(Option.isSome(decoded) && decoded.value._tag === "Series" ? decoded.value.series : undefined).toEqual(wire)
  })
})

describe("AtomicLines.split", () => {
  const text = (chunks: ReadonlyArray<Uint8Array>) => chunks.map((c) => Buffer.from(c).toString())

  it("cuts at line ends into chunks of at most max bytes", () => {
    const bytes = Buffer.from("aaa\nbbb\ncc\ndddd\n")
    expect(text(AtomicLines.split(bytes, 8))).toEqual(["aaa\nbbb\n", "cc\ndddd\n"])
    expect(text(AtomicLines.split(bytes, 7))).toEqual(["aaa\n", "bbb\ncc\n", "dddd\n"])
    expect(text(AtomicLines.split(bytes, 100))).toEqual(["aaa\nbbb\ncc\ndddd\n"])
    expect(text(AtomicLines.split(Buffer.from(""), 8))).toEqual([])
  })

  it("writes a line longer than max whole", () => {
    expect(text(AtomicLines.split(Buffer.from("ab\n0123456789\ncd\n"), 4))).toEqual(["ab\n", "0123456789\n", "cd\n"])
    expect(text(AtomicLines.split(Buffer.from("0123456789"), 4))).toEqual(["0123456789"])
  })

  it("keeps every chunk of a 64 KiB batch within PIPE_BUF", () => {
    const line = `${"x".repeat(199)}\n`
    const chunks = AtomicLines.split(Buffer.from(line.repeat(330)))
    expect(chunks.every((c) => c.length <= AtomicLines.PIPE_BUF && c[c.length - 1] === 0x0a)).toBe(true)
    expect(chunks.reduce((n, c) => n + c.length, 0)).toBe(200 * 330)
  })
})
