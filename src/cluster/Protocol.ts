/**
 * The messages the primary and its workers exchange over the cluster IPC channel (advanced
 * serialization, so `Infinity` bucket bounds survive). Every message is decoded on arrival: a
 * message that does not decode is ignored, never trusted by shape.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import * as LogLevel from "../observability/LogLevel.ts"

// --- primary → worker ------------------------------------------------------------------------

/** The config text to serve (the first one at start, then each reload); answered with `Loaded`. */
export const Config = Schema.TaggedStruct("Config", {
  seq: Schema.Number,
  /** The source's name for error messages (the file path, `-` or `<inline>`). */
  name: Schema.String,
  text: Schema.String
})

/** Asks for the worker's metric series; answered with `Series`. */
export const Collect = Schema.TaggedStruct("Collect", { seq: Schema.Number })

/** `POST /logging` on the primary's admin API, for every worker. */
export const SetLogLevel = Schema.TaggedStruct("SetLogLevel", { level: Schema.Literals(LogLevel.LEVELS) })

/** Stop accepting, finish in-flight requests within the drain deadline, exit 0. */
export const Drain = Schema.TaggedStruct("Drain", {})

export const ToWorker = Schema.Union([Config, Collect, SetLogLevel, Drain])
export type ToWorker = typeof ToWorker.Type

// --- worker → primary ------------------------------------------------------------------------

/** The outcome of one `Config`: `error` null when the worker now serves it. */
export const Loaded = Schema.TaggedStruct("Loaded", {
  seq: Schema.Number,
  error: Schema.NullOr(Schema.String)
})

const seriesFields = {
  id: Schema.String,
  description: Schema.NullOr(Schema.String),
  attributes: Schema.Record(Schema.String, Schema.String)
}

/** One metric series of a worker, flattened from Effect's snapshot (bigint values as numbers). */
export const WireSeries = Schema.Union([
  Schema.Struct({ type: Schema.Literal("Counter"), ...seriesFields, count: Schema.Number }),
  Schema.Struct({ type: Schema.Literal("Gauge"), ...seriesFields, value: Schema.Number }),
  Schema.Struct({
    type: Schema.Literal("Histogram"),
    ...seriesFields,
    /** [upper bound, cumulative count]. */
    buckets: Schema.Array(Schema.Tuple([Schema.Number, Schema.Number])),
    count: Schema.Number,
    sum: Schema.Number,
    min: Schema.Number,
    max: Schema.Number
  })
])
export type WireSeries = typeof WireSeries.Type

export const Series = Schema.TaggedStruct("Series", { seq: Schema.Number, series: Schema.Array(WireSeries) })

export const ToPrimary = Schema.Union([Loaded, Series])
export type ToPrimary = typeof ToPrimary.Type

export const decodeToWorker = Schema.decodeUnknownOption(ToWorker)
export const decodeToPrimary = Schema.decodeUnknownOption(ToPrimary)
