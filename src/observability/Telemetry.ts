/**
 * The per-snapshot part of logs and metrics, compiled once when a config is loaded: the access
 * log's `filter` and `add` expressions, the custom metric labels (`config.metrics.fields.add`),
 * `config.metrics.remove`, and which headers are sensitive.
 *
 * Secrets never reach a log line or a label: every `add` field and metric label is evaluated
 * against a `LogActivation`, whose request and response header maps show sensitive values
 * (credentials, cookies, API keys, `config.sensitiveHeaders`) as `<redacted>`. The default log
 * fields carry no header values, and `http.path` has no query string.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Cel from "../cel/Cel.ts"
import * as CelContext from "../cel/Context.ts"
import * as Functions from "../cel/Functions.ts"
import * as ConfigError from "../config/ConfigError.ts"
import type * as Ir from "../ir/Ir.ts"
import type { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import type { ProxyRequest } from "../pipeline/RequestContext.ts"
import * as Headers from "../shared/headers.ts"
import { reservedLabels } from "./Metrics.ts"
import type * as Tracing from "./Tracing.ts"

/** Headers redacted whatever the config says: the credentials HTTP and the auth policies use. */
export const DEFAULT_SENSITIVE_HEADERS: ReadonlyArray<string> = ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"]

export const REDACTED = "<redacted>"

/** The MCP session header: when listed as sensitive, the `mcp.session.id` log field goes too. */
const SESSION_HEADER = "mcp-session-id"

export interface Field {
  readonly name: string
  readonly program: Cel.Program
}

export interface Telemetry {
  /** `accessLog.filter`: a request is logged only when it is `true`. */
  readonly filter: Cel.Program | undefined
  /** `accessLog.add`, in config order. */
  readonly add: ReadonlyArray<Field>
  /** Default fields left out: `remove`, fields `add` replaces, and `mcp.session.id` when the session header is sensitive. */
  readonly removed: ReadonlyArray<string>
  /** `config.metrics.fields.add`, in config order. */
  readonly metricLabels: ReadonlyArray<Field>
  /** `config.metrics.remove`. */
  readonly removedMetrics: ReadonlySet<string>
  /** Lower-cased sensitive header names. */
  readonly sensitive: ReadonlySet<string>
  /** Copies a header map with sensitive values replaced (the same map when it has none). */
  readonly redact: CelContext.HeaderView
  /** The request span's custom attributes and removals; undefined when tracing has none. */
  readonly span: Tracing.SpanFields | undefined
}

const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/

const redactor = (sensitive: ReadonlySet<string>): CelContext.HeaderView => (headers) => {
  let out: Headers.HeaderMap | undefined
  for (const name of sensitive) {
    const value = headers[name]
    if (value === undefined) continue
    if (out === undefined) {
      out = Headers.empty()
      for (const [k, v] of Object.entries(headers)) out[k] = v
    }
    out[name] = Array.isArray(value) ? value.map(() => REDACTED) : REDACTED
  }
  return out ?? headers
}

export const compile = (settings: Ir.Settings): Effect.Effect<Telemetry, ConfigError.ConfigError> =>
  Effect.gen(function*() {
    const filterSource = settings.accessLogFilter
    const filter = filterSource === undefined ? undefined : yield* Cel.compileBool(filterSource.source, filterSource.path)
    const add: Array<Field> = []
    for (const f of settings.accessLogAdd ?? []) add.push({ name: f.name, program: yield* Cel.compile(f.source, f.path) })
    const metricLabels: Array<Field> = []
    for (const f of settings.metricsAdd ?? []) {
      if (!LABEL_NAME.test(f.name) || f.name.startsWith("__")) {
        return yield* Effect.fail(ConfigError.make(f.path, `invalid metric label name "${f.name}" (expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with __)`))
      }
      if (reservedLabels.has(f.name)) {
        return yield* Effect.fail(ConfigError.make(f.path, `metric label "${f.name}" is a built-in label`))
      }
      metricLabels.push({ name: f.name, program: yield* Cel.compile(f.source, f.path) })
    }
    const sensitive = new Set([...DEFAULT_SENSITIVE_HEADERS, ...(settings.sensitiveHeaders ?? [])])
    const removed = new Set([...settings.accessLogRemove, ...add.map((f) => f.name)])
    if (sensitive.has(SESSION_HEADER)) removed.add("mcp.session.id")
    const redact = redactor(sensitive)
    const spanAdd: Array<Field> = []
    for (const f of settings.tracing?.attributes ?? []) spanAdd.push({ name: f.name, program: yield* Cel.compile(f.source, f.path) })
    const spanRemove = settings.tracing?.remove ?? []
    return {
      filter,
      add,
      removed: [...removed],
      metricLabels,
      removedMetrics: new Set(settings.metricsRemove ?? []),
      sensitive,
      redact,
      span: spanAdd.length === 0 && spanRemove.length === 0 ? undefined : { add: spanAdd, remove: new Set(spanRemove), redact }
    }
  })

/** What a CEL field puts in a log line: strings, numbers and booleans as they are, others as JSON; null and errors nothing. */
export const logValue = (value: unknown): string | number | boolean | object | undefined => {
  if (value === undefined || value === null) return undefined
  if (typeof value === "string" || typeof value === "boolean") return value
  if (typeof value === "number") return value
  if (typeof value === "bigint") return Number(value)
  const json = Functions.toJsonValue(value)
  return json === null || json === undefined ? undefined : typeof json === "object" ? json : String(json)
}

/** A label value: only strings count (upstream's rule); anything else is `unknown`. */
const labelValue = (value: unknown): string | undefined => (typeof value === "string" && value !== "" ? value : undefined)

/** Per finished request: whether to log, the added fields and the custom label values. */
export const evaluate = (
  t: Telemetry,
  ctx: ProxyRequest,
  res: ProxyResponse
): { readonly log: boolean; readonly fields: ReadonlyArray<readonly [string, unknown]>; readonly labels: ReadonlyArray<string | undefined> | undefined } => {
  const filter = t.filter
  const log = filter === undefined ? true : filter.evalBool(CelContext.forResponse(ctx, res))
  if (t.add.length === 0 && t.metricLabels.length === 0) return { log, fields: [], labels: undefined }
  const activation = new CelContext.LogActivation(ctx, res, t.redact)
  const fields: Array<readonly [string, unknown]> = []
  if (log) {
    for (const f of t.add) {
      const value = logValue(f.program.evalValue(activation))
      if (value !== undefined) fields.push([f.name, value])
    }
  }
  const labels = t.metricLabels.length === 0 ? undefined : t.metricLabels.map((f) => labelValue(f.program.evalValue(activation)))
  return { log, fields, labels }
}

/** The empty telemetry of a snapshot without any of these settings. */
export const none: Telemetry = {
  filter: undefined,
  add: [],
  removed: [],
  metricLabels: [],
  removedMetrics: new Set(),
  sensitive: new Set(DEFAULT_SENSITIVE_HEADERS),
  redact: redactor(new Set(DEFAULT_SENSITIVE_HEADERS)),
  span: undefined
}
