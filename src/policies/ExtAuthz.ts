/**
 * `extAuthz`: asks an external authorization service whether a request may proceed, as
 * agentgateway's `http/ext_authz.rs`. Gateway phase, route phase and backend phase.
 *
 * gRPC (default, `protocol: {grpc: {context?, metadata?}}`): Envoy's
 * `envoy.service.auth.v3.Authorization/Check` (messages in `sidecar/ExtAuthzProto.ts`, the
 * channel in `sidecar/GrpcUnary.ts`). The `CheckRequest` carries the source and destination
 * addresses, the request (`method`, `path` with query, `host`, `scheme`, `protocol`, the
 * request id), its headers (all of them plus the pseudo-headers `:method`, `:scheme`,
 * `:authority`, `:path` unless `includeRequestHeaders` picks some; repeated values joined with
 * `, `, cookies with `; `), `context` as `context_extensions`, and `metadata` (CEL → Struct) as
 * `metadata_context.filter_metadata` — unset, the JWT claims go under
 * `envoy.filters.http.jwt_authn.jwt_payload` when a JWT was verified, as Envoy does.
 * - `status.code` 0 allows: `ok_response.headers_to_remove` (never pseudo-headers or `host`),
 *   then `headers` (append / add-if-absent / overwrite actions, `:method`, `:path`,
 *   `:authority`/`host` rewrite the request), query parameters to set / remove, and
 *   `response_headers_to_add` onto the response (errors included). `dynamic_metadata` becomes
 *   CEL `extauthz.*`.
 * - Non-zero denies: `denied_response` is the client's answer (status, default 403; headers;
 *   body); without one, 403 `external authorization failed`.
 *
 * HTTP (`protocol: {http: {...}}`): the request method and path (or `path`, CEL) are sent to
 * the service with `includeRequestHeaders` (default `authorization` only), `addRequestHeaders`
 * (CEL) and a body (`body`, CEL, or the request body with `includeRequestBody`, flagged by
 * `x-envoy-auth-partial-body`). A 2xx allows and copies `includeResponseHeaders` onto the
 * request; `metadata` (CEL over request and the service's response) becomes `extauthz.*`.
 * Anything else is the client's answer as the service gave it, except a 401/403 with
 * `redirect` (CEL), which answers 302 to that location.
 *
 * No decision (connection refused, timeout, gRPC error, an unreadable answer): `failureMode`
 * `deny` (default) 403 `external authorization failed`, `allow` lets the request through,
 * `{denyWithStatus: n}` answers n `Authorization service unavailable`. Every call has
 * `EXT_AUTHZ_TIMEOUT_MS`.
 *
 * `includeRequestBody` buffers at most `maxRequestBytes` (default 8192, and never more than
 * `maxBufferSize`) through `RequestBody.readPrefix`, so the upstream still gets the whole body;
 * a larger body is 413 `external authorization failed` unless `allowPartialMessage` sends the
 * prefix (gRPC `size` -1). `packAsBytes` sends `raw_body` instead of the UTF-8 `body`.
 *
 * `cache: {key: [CEL], ttl, maxEntries}` keeps decisions (allow, denial, redirect, an HTTP
 * 401/403) in a bounded LRU keyed by the key expressions' values (null, bool, numbers, strings,
 * bytes; any other value or error is a miss). `ttl` is a duration (`5m`) or CEL evaluated after
 * the decision applied: a duration, a timestamp, or unix seconds. In the last tenth of its life
 * (at most 5 s) one request refreshes an entry while the others still use it. No-decision
 * outcomes are never cached.
 *
 * Nothing of the request (credentials included) is logged; a failed call logs only its gRPC
 * status or error tag at debug level.
 *
 * Deviations: `includeRequestBody: {}` buffers 8192 bytes (upstream's serde gives 0);
 * `denyWithStatus` for HTTP services says `Authorization service unavailable` rather than the
 * transport error; `service` references are not supported.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { randomBytes } from "node:crypto"
import { TLSSocket } from "node:tls"
import * as Cel from "../cel/Cel.ts"
import * as CelContext from "../cel/Context.ts"
import * as Functions from "../cel/Functions.ts"
import * as ConfigError from "../config/ConfigError.ts"
import * as Duration from "../config/Duration.ts"
import { exactlyOneOf, opt, req, unsupported } from "../config/Fields.ts"
import * as Deadline from "../pipeline/Deadline.ts"
import type { BuildEnv, Handler, Middleware } from "../pipeline/Policy.ts"
import * as Policy from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import * as RequestBody from "../pipeline/RequestBody.ts"
import { currentRequest, ProxyRequest, RequestContext } from "../pipeline/RequestContext.ts"
import * as ResponseBody from "../pipeline/ResponseBody.ts"
import * as Tracing from "../observability/Tracing.ts"
import * as Headers from "../shared/headers.ts"
import { BoundedLru } from "../shared/lru.ts"
import * as Proto from "../sidecar/ExtAuthzProto.ts"
import * as GrpcUnary from "../sidecar/GrpcUnary.ts"
import * as ServicePolicies from "../sidecar/ServicePolicies.ts"
import * as BackendTls from "./BackendTls.ts"
import * as Conditional from "./Conditional.ts"
import { bodyBytes, keyPath } from "./DirectResponse.ts"
import * as HeaderExpressions from "./HeaderExpressions.ts"
import * as HeaderModifier from "./HeaderModifier.ts"
import { setAuthority, setPath } from "./Transformations.ts"

/** Deadline of one authorization call (connection, answer and, over HTTP, its body). Upstream: 2 s. */
export const EXT_AUTHZ_TIMEOUT_MS = 2_000

/** Request body bytes sent when `includeRequestBody.maxRequestBytes` is not given. */
export const DEFAULT_MAX_REQUEST_BYTES = 8192

/** Cached decisions when `cache.maxEntries` is not given (or 0). */
export const DEFAULT_CACHE_ENTRIES = 10_000

/** The refresh window of a cached decision: its last tenth, at most this long. */
export const CACHE_REFRESH_MAX_MS = 5_000

/** Body of `denyWithStatus` answers (upstream's text). */
export const UNAVAILABLE_BODY = "Authorization service unavailable"

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

const Str = Schema.String

const PSEUDO_REQUEST: ReadonlySet<string> = new Set([":method", ":scheme", ":authority", ":path"])

const HeaderOrPseudo = Str.check(
  Schema.makeFilter((s: string) =>
    PSEUDO_REQUEST.has(s.toLowerCase()) || HeaderExpressions.isHeaderName(s) ||
    `invalid header name "${s}" (or pseudo-header :method, :scheme, :authority, :path)`
  )
)

const checkHeaderOrPseudo = (name: string): string | undefined =>
  PSEUDO_REQUEST.has(name.toLowerCase()) || HeaderExpressions.isHeaderName(name)
    ? undefined
    : `invalid header name "${name}" (or pseudo-header :method, :scheme, :authority, :path)`

export const SideServicePolicies = ServicePolicies.schema("extAuthz", "the authorization service")

const GrpcProtocol = Schema.Struct({
  context: opt(Schema.Record(Str, Str), "Static values sent as the request's `context_extensions`."),
  metadata: opt(
    Schema.Record(Str, Str),
    "CEL expressions (each giving a map) sent as `metadata_context.filter_metadata`. Unset: the verified JWT claims under `envoy.filters.http.jwt_authn`."
  )
}).annotate({ description: "Envoy's gRPC authorization protocol (`envoy.service.auth.v3.Authorization/Check`)." })

const HttpProtocol = Schema.Struct({
  path: opt(Str, "CEL expression giving the path (and query) of the authorization request. Default: the request's."),
  redirect: opt(Str, "CEL expression giving a URL to redirect to (302) when the service answers 401 or 403."),
  body: opt(Str, "CEL expression giving the authorization request body (strings/bytes as is, other values JSON); replaces `includeRequestBody`."),
  includeResponseHeaders: opt(Schema.Array(HeaderExpressions.HeaderName), "Headers of a 2xx authorization answer copied onto the request sent upstream."),
  addRequestHeaders: opt(
    HeaderExpressions.namedRecord(Str, checkHeaderOrPseudo),
    "Headers added to the authorization request: name (or pseudo-header) → CEL expression."
  ),
  metadata: opt(Schema.Record(Str, Str), "Values exposed to later CEL as `extauthz.<key>`: CEL over the request and the service's `response`.")
}).annotate({ description: "Plain HTTP authorization: a 2xx answer allows." })

const Protocol = Schema.Struct({
  grpc: opt(GrpcProtocol, "Call the authorization service using the gRPC authorization protocol."),
  http: opt(HttpProtocol, "Call the authorization service using HTTP.")
}).check(exactlyOneOf(["grpc", "http"])).annotate({ description: "Protocol used to call the authorization service." })

const FailureMode = Schema.Union([
  Schema.Literals(["allow", "deny"]),
  Schema.Struct({
    denyWithStatus: req(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 })), "HTTP status of the answer (an invalid status answers 403).")
  })
]).annotate({ description: "What happens when the service gives no decision: `deny` (403), `allow`, or `{denyWithStatus: n}`." })

const BodyOptions = Schema.Struct({
  maxRequestBytes: opt(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 4294967295 })), "Most request body bytes sent to the service (default 8192; never more than `maxBufferSize`)."),
  allowPartialMessage: opt(Schema.Boolean, "Send the first `maxRequestBytes` of a larger body instead of answering 413."),
  packAsBytes: opt(Schema.Boolean, "gRPC: send the body as `raw_body` bytes instead of the UTF-8 `body` string.")
}).annotate({ description: "Sending the request body to the authorization service." })

const CacheConfig = Schema.Struct({
  key: req(Schema.Array(Str), "CEL expressions whose values make up the cache key. Empty: nothing is cached."),
  ttl: req(Str, "How long a decision is reused: a duration (`5m`) or CEL giving a duration, a timestamp or unix seconds (evaluated after the decision applied)."),
  maxEntries: opt(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), "Most decisions kept (least recently used evicted); 0 or unset: 10000.")
}).annotate({ description: "Reuses decisions for requests with equal key values. The key must capture everything the service decides on." })

const fields = {
  host: opt(Str, "Address `host:port` of the authorization service."),
  backend: opt(Str, "Name of a top-level `backends` entry that is the authorization service."),
  service: unsupported("extAuthz.service"),
  policies: opt(SideServicePolicies, "Policies used when connecting to the authorization service."),
  protocol: opt(Protocol, "Protocol used to call the service. Default: `{grpc: {}}`."),
  failureMode: opt(FailureMode, "Behaviour when the service is unavailable or gives no decision. Default: `deny`."),
  includeRequestHeaders: opt(
    Schema.Array(HeaderOrPseudo),
    "Request headers (or pseudo-headers) sent to the service. Unset: gRPC sends all, HTTP only `authorization`."
  ),
  includeRequestBody: opt(BodyOptions, "Send (up to a bound) the request body to the service."),
  cache: opt(CacheConfig, "Cache decisions keyed by CEL expressions.")
}

const target = exactlyOneOf(["host", "backend", "service"])

/** The plain form (also the backend-phase form). */
export const Plain = Schema.Struct(fields).check(target).annotate({ description: "Authorizes requests by calling an external authorization service." })
export type Plain = typeof Plain.Type

export const Entry = Schema.Struct({ condition: Conditional.condition, ...fields }).check(target).annotate({
  description: "An external authorization applied when its condition holds."
})

const present = <A>(v: A | null | undefined): v is A => v !== undefined && v !== null

export const Config = Schema.Struct({
  ...fields,
  conditional: opt(Conditional.entries(Entry), "Conditional external authorization: the first entry whose condition holds applies; none: no check.")
}).check(
  Schema.makeFilter((c: { readonly conditional?: unknown; readonly [k: string]: unknown }) => {
    if (!present(c.conditional)) {
      const found = ["host", "backend", "service"].filter((k) => present(c[k]))
      return found.length === 1 || (found.length === 0 ? "expected exactly one of: host, backend, service" : `only one of ${found.join(", ")} may be set`)
    }
    const other = Object.keys(fields).find((k) => k in c)
    return other === undefined || { path: [other], issue: "conditional cannot be combined with other fields" }
  })
).annotate({ description: "Authorizes requests by calling an external authorization service." })
export type Config = typeof Config.Type

interface PlainShape {
  readonly host?: string | null | undefined
  readonly backend?: string | null | undefined
  readonly policies?: typeof SideServicePolicies.Type | null | undefined
  readonly protocol?: typeof Protocol.Type | null | undefined
  readonly failureMode?: typeof FailureMode.Type | null | undefined
  readonly includeRequestHeaders?: ReadonlyArray<string> | null | undefined
  readonly includeRequestBody?: typeof BodyOptions.Type | null | undefined
  readonly cache?: typeof CacheConfig.Type | null | undefined
}

// ---------------------------------------------------------------------------------------------
// Decisions (what is applied, and cached)
// ---------------------------------------------------------------------------------------------

type Metadata = { readonly [k: string]: Proto.Json } | undefined

type Decision =
  | {
    readonly _tag: "Allow"
    readonly headers: ReadonlyArray<Proto.HeaderOption>
    readonly headersToRemove: ReadonlyArray<string>
    readonly query: { readonly set: ReadonlyArray<Proto.QueryParameter>; readonly remove: ReadonlyArray<string> }
    readonly responseHeaders: ReadonlyArray<readonly [string, string]>
    readonly metadata: Metadata
  }
  /** HTTP 2xx: headers copied onto the request (overwriting). */
  | { readonly _tag: "HttpAllow"; readonly headers: ReadonlyArray<readonly [string, string]>; readonly metadata: Metadata }
  /** The client's answer: a gRPC denied response, an HTTP denial, a redirect. */
  | { readonly _tag: "Respond"; readonly status: number; readonly headers: Headers.HeaderMap; readonly body: Uint8Array; readonly metadata: Metadata }
  | { readonly _tag: "Deny"; readonly metadata: Metadata }

const ALLOW_NOTHING: Decision = {
  _tag: "Allow",
  headers: [],
  headersToRemove: [],
  query: { set: [], remove: [] },
  responseHeaders: [],
  metadata: undefined
}

/** JSON from the service as CEL values: ints → BigInt, objects null-prototype (keys stay data). */
const toCel = (value: Proto.Json): unknown => {
  if (typeof value === "number") return Number.isSafeInteger(value) ? BigInt(value) : value
  if (value === null || typeof value !== "object") return value
  if (Array.isArray(value)) return value.map(toCel)
  const out: Record<string, unknown> = Object.create(null)
  for (const [k, v] of Object.entries(value)) out[k] = toCel(v)
  return out
}

const attachMetadata = (ctx: ProxyRequest, metadata: Metadata): void => {
  if (metadata !== undefined && Object.keys(metadata).length > 0) CelContext.attach(ctx, "extauthz", toCel(metadata))
}

/** A valid HTTP status as `StatusCode::from_u16` takes it, else 403. */
const statusOr403 = (n: number): number => (Number.isInteger(n) && n >= 100 && n <= 999 ? n : 403)

const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/

/** Upstream's `resolve_append_action`: 0 defers to the deprecated `append` (default overwrite). */
const actionOf = (h: Proto.HeaderOption): number =>
  h.appendAction !== 0
    ? (h.appendAction >= 0 && h.appendAction <= 3 ? h.appendAction : Proto.AppendAction.APPEND_IF_EXISTS_OR_ADD)
    : h.append === true
    ? Proto.AppendAction.APPEND_IF_EXISTS_OR_ADD
    : Proto.AppendAction.OVERWRITE_IF_EXISTS_OR_ADD

const applyToMap = (headers: Headers.HeaderMap, name: string, value: string, action: number): void => {
  switch (action) {
    case Proto.AppendAction.APPEND_IF_EXISTS_OR_ADD:
      Headers.append(headers, name, value)
      return
    case Proto.AppendAction.ADD_IF_ABSENT:
      if (headers[name] === undefined) headers[name] = value
      return
    case Proto.AppendAction.OVERWRITE_IF_EXISTS:
      if (headers[name] !== undefined) headers[name] = value
      return
    default:
      headers[name] = value
  }
}

/** A header mutation from the service onto the request (upstream `apply_header_option`). */
const applyRequestHeader = (ctx: ProxyRequest, h: Proto.HeaderOption): void => {
  const name = h.key.toLowerCase()
  if (h.value === "" || !FIELD_VALUE.test(h.value)) return
  if (name === ":method") {
    if (HeaderExpressions.isHeaderName(h.value)) ctx.method = h.value
  } else if (name === ":path") setPath(ctx, h.value)
  else if (name === ":authority" || name === "host") {
    if (actionOf(h) !== Proto.AppendAction.OVERWRITE_IF_EXISTS) setAuthority(ctx, h.value)
  } else if (HeaderExpressions.isHeaderName(name)) applyToMap(ctx.headers, name, h.value, actionOf(h))
}

const applyResponseHeader = (res: { status: number; readonly headers: Headers.HeaderMap }, h: Proto.HeaderOption): void => {
  const name = h.key.toLowerCase()
  if (h.value === "" || !FIELD_VALUE.test(h.value)) return
  if (name === ":status") {
    const n = Number(h.value)
    if (/^\d{3}$/.test(h.value) && n >= 100) res.status = n
  } else if (HeaderExpressions.isHeaderName(name)) applyToMap(res.headers, name, h.value, actionOf(h))
}

const QUERY_PART = /^[\x21-\x22\x24-\x25\x27-\x2a\x2c-\x3b\x3d\x3f-\x7e]*$/

/** Query parameters to set (replacing every value of the name) and to remove. */
const editQuery = (ctx: ProxyRequest, set: ReadonlyArray<Proto.QueryParameter>, remove: ReadonlyArray<string>): void => {
  if (set.length === 0 && remove.length === 0) return
  const params = new URLSearchParams(ctx.query)
  for (const name of remove) params.delete(name)
  for (const { key, value } of set) if (key !== "") params.set(key, value)
  const text = params.toString()
  const query = text === "" ? "" : `?${text}`
  if (!QUERY_PART.test(text.replace(/&/g, "")) || query === ctx.query) return
  setPath(ctx, ctx.path + query)
}

const respond = (ctx: ProxyRequest, status: number, headers: Headers.HeaderMap, body: Uint8Array): ProxyResponse => {
  ctx.directResponse = true
  const out = Headers.empty()
  for (const [k, v] of Object.entries(headers)) out[k] = typeof v === "string" ? v : [...v]
  out["content-length"] = String(body.length)
  return new ProxyResponse(status, out, body)
}

/** Applies a decision: undefined to go on, or the client's answer. */
const apply = (ctx: ProxyRequest, d: Decision): Effect.Effect<ProxyResponse | undefined, ProxyError.ProxyError> => {
  attachMetadata(ctx, d.metadata)
  switch (d._tag) {
    case "Allow": {
      for (const name of d.headersToRemove) {
        const lower = name.toLowerCase()
        if (!lower.startsWith(":") && lower !== "host") delete ctx.headers[lower]
      }
      for (const h of d.headers) applyRequestHeader(ctx, h)
      editQuery(ctx, d.query.set, d.query.remove)
      for (const [name, value] of d.responseHeaders) ctx.queueResponseHeader(name, value)
      return Effect.succeed(undefined)
    }
    case "HttpAllow":
      for (const [name, value] of d.headers) ctx.headers[name] = value
      return Effect.succeed(undefined)
    case "Respond":
      return Effect.succeed(respond(ctx, d.status, d.headers, d.body))
    case "Deny":
      return Effect.fail(ProxyError.make({ _tag: "ExtAuthzFailed" }))
  }
}

// ---------------------------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------------------------

interface CacheEntry {
  readonly decision: Decision
  readonly expiresAt: number
  readonly refreshAt: number
  refreshing: boolean
}

/** A key expression's value as part of the key; undefined for values that cannot be one. */
const keyPart = (value: unknown): string | undefined => {
  if (value === null) return "n"
  if (typeof value === "boolean") return value ? "t" : "f"
  if (typeof value === "bigint") return `i${value}`
  if (typeof value === "number") return `d${value}`
  if (typeof value === "string") return `s${value}`
  if (value instanceof Uint8Array) return `b${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64")}`
  if (typeof value === "object") {
    // cel-js boxes uints; valueOf gives the bigint.
    const raw: unknown = value.valueOf()
    if (typeof raw === "bigint") return `u${raw}`
  }
  return undefined
}

const LITERAL_DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h|d))+$/

/** Milliseconds a `ttl` result allows from `now`; undefined when it is not a duration/time. */
const ttlMillis = (value: unknown, now: number): number | undefined => {
  if (value instanceof Date) return value.getTime() - now
  if (typeof value === "bigint") return Number(value) * 1000 - now
  if (typeof value === "number") return Number.isFinite(value) && value >= 0 ? value * 1000 - now : undefined
  if (value !== null && typeof value === "object") {
    if ("seconds" in value && "nanos" in value) return Number(value.seconds) * 1000 + Number(value.nanos) / 1e6
    const raw: unknown = value.valueOf()
    if (typeof raw === "bigint") return Number(raw) * 1000 - now
  }
  return undefined
}

interface Cache {
  readonly key: (ctx: ProxyRequest) => string | undefined
  readonly lookup: (key: string, now: number) => Decision | undefined
  readonly insert: (ctx: ProxyRequest, key: string, decision: Decision, now: number) => void
  readonly programs: ReadonlyArray<Cel.Program>
}

const makeCache = (config: typeof CacheConfig.Type, path: string): Effect.Effect<Cache, ConfigError.ConfigError> =>
  Effect.gen(function*() {
    const keys = yield* Effect.forEach(config.key, (source, i) => Cel.compile(source, `${path}.key[${i}]`))
    const literal = LITERAL_DURATION.test(config.ttl) ? Duration.parseMillis(config.ttl) : undefined
    const ttl = literal === undefined ? yield* Cel.compile(config.ttl, `${path}.ttl`) : undefined
    const capacity = present(config.maxEntries) && config.maxEntries > 0 ? config.maxEntries : DEFAULT_CACHE_ENTRIES
    const store = new BoundedLru<string, CacheEntry>(capacity)
    const key = (ctx: ProxyRequest): string | undefined => {
      if (keys.length === 0) return undefined
      const activation = CelContext.forRequest(ctx)
      const parts: Array<string> = []
      for (const program of keys) {
        const r = program.eval(activation)
        const part = Result.isSuccess(r) ? keyPart(r.success) : undefined
        if (part === undefined) return undefined
        parts.push(part)
      }
      return JSON.stringify(parts)
    }
    const lookup = (k: string, now: number): Decision | undefined => {
      const entry = store.get(k)
      if (entry === undefined) return undefined
      if (entry.expiresAt <= now) {
        store.delete(k)
        return undefined
      }
      if (now < entry.refreshAt || entry.refreshing) return entry.decision
      // This request refreshes the entry; the others keep using it meanwhile.
      entry.refreshing = true
      return undefined
    }
    const insert = (ctx: ProxyRequest, k: string, decision: Decision, now: number): void => {
      const ms = literal ?? (ttl === undefined ? undefined : ttlMillis(ttl.evalValue(CelContext.forRequest(ctx)), now))
      if (ms === undefined || !Number.isFinite(ms) || ms <= 0) return
      const window = Math.min(ms / 10, CACHE_REFRESH_MAX_MS)
      store.set(k, { decision, expiresAt: now + ms, refreshAt: now + ms - window, refreshing: false })
    }
    return { key, lookup, insert, programs: ttl === undefined ? keys : [...keys, ttl] }
  })

// ---------------------------------------------------------------------------------------------
// Request side
// ---------------------------------------------------------------------------------------------

type BodyInclusion =
  | { readonly _tag: "None" }
  | { readonly _tag: "Included"; readonly bytes: Uint8Array; readonly partial: boolean }

const NO_BODY: BodyInclusion = { _tag: "None" }

const bodyIncluder = (options: typeof BodyOptions.Type | null | undefined, env: BuildEnv) => {
  if (!present(options)) return undefined
  const limit = Math.min(present(options.maxRequestBytes) ? options.maxRequestBytes : DEFAULT_MAX_REQUEST_BYTES, env.maxBufferSize)
  const allowPartial = options.allowPartialMessage === true
  return (ctx: ProxyRequest): Effect.Effect<BodyInclusion, ProxyError.ProxyError> =>
    Effect.flatMap(RequestBody.readPrefix(ctx, limit), (prefix) =>
      !prefix.complete && !allowPartial
        ? Effect.fail(ProxyError.make({ _tag: "ExtAuthzFailed", status: 413 }))
        : Effect.succeed<BodyInclusion>({ _tag: "Included", bytes: prefix.bytes, partial: !prefix.complete }))
}

/** Header values as Envoy joins repeated ones. */
const joined = (name: string, value: Headers.HeaderValue): string =>
  typeof value === "string" ? value : value.join(name === "cookie" ? "; " : ", ")

const pseudoValue = (ctx: ProxyRequest, name: string): string | undefined => {
  switch (name) {
    case ":method":
      return ctx.method
    case ":scheme":
      return ctx.scheme
    case ":authority":
      return ctx.authority
    case ":path":
      return ctx.path + ctx.query
  }
  return undefined
}

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/

const requestId = (ctx: ProxyRequest): string => {
  const incoming = Headers.get(ctx.headers, "traceparent")
  if (incoming !== undefined && TRACEPARENT.test(incoming)) return incoming
  const bytes = randomBytes(24).toString("hex")
  return `00-${bytes.slice(0, 32)}-${bytes.slice(32)}-00`
}

const asJson = (value: unknown, depth = 0): Proto.Json | undefined => {
  if (depth > Proto.MAX_STRUCT_DEPTH) return undefined
  if (value === null || typeof value === "boolean" || typeof value === "string") return value
  if (typeof value === "number") return Number.isFinite(value) ? value : null
  if (Array.isArray(value)) {
    const out: Array<Proto.Json> = []
    for (const v of value) {
      const j = asJson(v, depth + 1)
      if (j !== undefined) out.push(j)
    }
    return out
  }
  if (typeof value === "object") {
    const out: { [k: string]: Proto.Json } = Object.create(null)
    for (const [k, v] of Object.entries(value)) {
      const j = asJson(v, depth + 1)
      if (j !== undefined) out[k] = j
    }
    return out
  }
  return undefined
}

const isStruct = (json: Proto.Json | undefined): json is { readonly [k: string]: Proto.Json } =>
  json !== null && typeof json === "object" && !Array.isArray(json)

const asStruct = (celValue: unknown): { readonly [k: string]: Proto.Json } | undefined => {
  const json = asJson(Functions.toJsonValue(celValue))
  return isStruct(json) ? json : undefined
}

// ---------------------------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------------------------

const decodeResponse = (bytes: Uint8Array): Proto.CheckResponse | undefined => {
  try {
    return Proto.decodeCheckResponse(bytes)
  } catch {
    return undefined
  }
}

const decisionOf = (cr: Proto.CheckResponse): Decision => {
  const metadata = cr.dynamicMetadata
  if (cr.code !== 0) {
    const denied = cr.denied
    if (denied === undefined) return { _tag: "Deny", metadata }
    const res = { status: statusOr403(denied.status), headers: Headers.empty() }
    for (const h of denied.headers) applyResponseHeader(res, h)
    return { _tag: "Respond", status: res.status, headers: res.headers, body: Buffer.from(denied.body, "utf8"), metadata }
  }
  const ok = cr.ok
  if (ok === undefined) return metadata === undefined ? ALLOW_NOTHING : { ...ALLOW_NOTHING, metadata }
  const responseHeaders = Headers.empty()
  for (const h of ok.responseHeadersToAdd) {
    const name = h.key.toLowerCase()
    if (HeaderExpressions.isHeaderName(name) && h.value !== "" && FIELD_VALUE.test(h.value)) applyToMap(responseHeaders, name, h.value, actionOf(h))
  }
  const pairs: Array<readonly [string, string]> = []
  for (const [name, value] of Object.entries(responseHeaders)) {
    for (const v of typeof value === "string" ? [value] : value) pairs.push([name, v])
  }
  return {
    _tag: "Allow",
    headers: ok.headers,
    headersToRemove: ok.headersToRemove,
    query: { set: ok.queryParametersToSet, remove: ok.queryParametersToRemove },
    responseHeaders: pairs,
    metadata
  }
}

/** What one call to the service came to. */
type Outcome =
  | { readonly _tag: "Decided"; readonly decision: Decision; readonly cacheable: boolean }
  /** No decision (unreachable, timed out, an error status, an unreadable answer): `failureMode` decides. */
  | { readonly _tag: "Undecided" }
  /** An HTTP denial too large to buffer: the service's answer streams to the client, uncached. */
  | { readonly _tag: "Streamed"; readonly response: ProxyResponse }

const UNDECIDED: Outcome = { _tag: "Undecided" }

const decided = (decision: Decision, cacheable = true): Outcome => ({ _tag: "Decided", decision, cacheable })

/** The CLIENT span of a traced request's call to the authorization service. */
export const SPAN_NAME = "ext_authz"

interface Check {
  /** `span`: the call's span when the request is traced (its context goes to the service). */
  readonly decide: (ctx: ProxyRequest, span: Tracing.ClientSpan | undefined) => Effect.Effect<Outcome, ProxyError.ProxyError>
  /** CEL the check evaluates on the request (so the body is read first when one reads it). */
  readonly programs: ReadonlyArray<Cel.Program>
}

/** `rpc.service` / `rpc.method` of the span: `Proto.METHOD` in OTel's split form. */
const GRPC_SERVICE = "envoy.service.auth.v3.Authorization"
const GRPC_METHOD = "Check"

const grpcCheck = (
  config: PlainShape,
  grpc: typeof GrpcProtocol.Type,
  env: BuildEnv,
  path: string
): Effect.Effect<Check, ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* GrpcUnary.connect(config, env, path)
    const context = Object.entries(grpc.context ?? {})
    const metadata = yield* Effect.forEach(Object.entries(grpc.metadata ?? {}), ([k, source]) =>
      Effect.map(Cel.compile(source, keyPath(`${path}.protocol.grpc.metadata`, k)), (p) => [k, p] as const))
    const explicitMetadata = present(grpc.metadata)
    const include = present(config.includeRequestHeaders) && config.includeRequestHeaders.length > 0
      ? config.includeRequestHeaders.map((h) => h.toLowerCase())
      : undefined
    const readBody = bodyIncluder(config.includeRequestBody, env)
    const packAsBytes = config.includeRequestBody?.packAsBytes === true

    const headersOf = (ctx: ProxyRequest): Array<readonly [string, string]> => {
      const out: Array<readonly [string, string]> = []
      if (include === undefined) {
        for (const name of PSEUDO_REQUEST) out.push([name, pseudoValue(ctx, name) ?? ""])
        for (const [name, value] of Object.entries(ctx.headers)) out.push([name, joined(name, value)])
        return out
      }
      for (const name of include) {
        const value = name.startsWith(":") ? pseudoValue(ctx, name) : ctx.headers[name]
        if (value !== undefined) out.push([name, typeof value === "string" ? value : joined(name, value)])
      }
      return out
    }

    const metadataOf = (ctx: ProxyRequest): Proto.CheckRequest["metadata"] => {
      if (explicitMetadata) {
        const activation = CelContext.forRequest(ctx)
        const out: Array<readonly [string, { readonly [k: string]: Proto.Json }]> = []
        for (const [k, program] of metadata) {
          const r = program.eval(activation)
          const struct = Result.isSuccess(r) ? asStruct(r.success) : undefined
          if (struct !== undefined) out.push([k, struct])
        }
        return out
      }
      const claims = ctx.celExtensions?.jwt
      const payload = claims === undefined ? undefined : asJson(Functions.toJsonValue(claims))
      // Envoy always sends metadata_context; with a verified JWT its claims, as jwt_authn does.
      return payload === undefined ? [] : [["envoy.filters.http.jwt_authn", { jwt_payload: payload }]]
    }

    const build = (ctx: ProxyRequest, body: BodyInclusion): Proto.CheckRequest => {
      const socket = ctx.raw.socket
      const localAddress = socket?.localAddress
      const tls = socket instanceof TLSSocket ? socket : undefined
      const servername = tls?.servername
      const size = body._tag === "None" ? 0 : body.partial ? -1 : body.bytes.length
      return {
        source: {
          address: { address: Functions.canonicalAddress(ctx.sourceAddress), port: ctx.sourcePort },
          principal: tls === undefined ? undefined : new CelContext.SourceVars(ctx).spiffeId
        },
        destination: localAddress === undefined ? undefined : { address: { address: Functions.canonicalAddress(localAddress), port: socket?.localPort ?? 0 } },
        timeMs: performance.timeOrigin + ctx.startTime,
        http: {
          id: requestId(ctx),
          method: ctx.method,
          headers: headersOf(ctx),
          path: ctx.path + ctx.query,
          host: ctx.authority,
          scheme: ctx.scheme,
          size,
          protocol: ctx.version,
          body: body._tag === "Included" && !packAsBytes ? Buffer.from(body.bytes).toString("utf8") : "",
          rawBody: body._tag === "Included" && packAsBytes ? body.bytes : new Uint8Array(0)
        },
        contextExtensions: context,
        metadata: metadataOf(ctx),
        sni: tls === undefined ? undefined : typeof servername === "string" ? servername : ""
      }
    }

    const logFailure = (error: GrpcUnary.GrpcError) =>
      Effect.logDebug(`extAuthz at ${path}: ${client.name} gave no decision (gRPC status ${error.code})`)

    const decide = Effect.fnUntraced(function*(ctx: ProxyRequest, span: Tracing.ClientSpan | undefined) {
      const body = readBody === undefined ? NO_BODY : yield* readBody(ctx)
      const bytes = Proto.encodeCheckRequest(build(ctx, body))
      if (span !== undefined) {
        span.set("rpc.system", "grpc")
        span.set("rpc.service", GRPC_SERVICE)
        span.set("rpc.method", GRPC_METHOD)
        span.set("server.address", client.name)
      }
      const answer = yield* Effect.result(client.unary(Proto.METHOD, bytes, { timeoutMs: EXT_AUTHZ_TIMEOUT_MS, traceparent: span?.traceparent() }))
      if (span !== undefined) span.set("rpc.grpc.status_code", Result.isFailure(answer) ? answer.failure.code : GrpcUnary.Status.OK)
      if (Result.isFailure(answer)) {
        if (span !== undefined) span.error = `gRPC status ${answer.failure.code}`
        yield* logFailure(answer.failure)
        return UNDECIDED
      }
      const response = decodeResponse(answer.success)
      if (response === undefined) {
        yield* Effect.logDebug(`extAuthz at ${path}: ${client.name} sent an unreadable CheckResponse`)
        return UNDECIDED
      }
      return decided(decisionOf(response))
    })
    return { decide, programs: metadata.map(([, p]) => p) }
  })

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

const httpCheck = (
  config: PlainShape,
  http: typeof HttpProtocol.Type,
  env: BuildEnv,
  path: string
): Effect.Effect<Check, ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const at = `${path}.protocol.http`
    const resolved = yield* env.resolveBackend(config, path)
    const call: Handler = yield* env.backendCall(config, path)
    const { host, port } = resolved.target
    const authority = `${host.includes(":") ? `[${host}]` : host}:${port}`
    const optional = (source: string | null | undefined, p: string) =>
      present(source) ? Effect.map(Cel.compile(source, p), (x): Cel.Program | undefined => x) : Effect.succeed(undefined)
    const pathProgram = yield* optional(http.path, `${at}.path`)
    const redirect = yield* optional(http.redirect, `${at}.redirect`)
    const bodyProgram = yield* optional(http.body, `${at}.body`)
    const addHeaders = yield* Effect.forEach(Object.entries(http.addRequestHeaders ?? {}), ([name, source]) =>
      Effect.map(Cel.compile(source, keyPath(`${at}.addRequestHeaders`, name)), (p) => [name.toLowerCase(), p] as const))
    const metadata = yield* Effect.forEach(Object.entries(http.metadata ?? {}), ([k, source]) =>
      Effect.map(Cel.compile(source, keyPath(`${at}.metadata`, k)), (p) => [k, p] as const))
    const copyBack = (http.includeResponseHeaders ?? []).map((h) => h.toLowerCase())
    const include = present(config.includeRequestHeaders) && config.includeRequestHeaders.length > 0
      ? config.includeRequestHeaders.map((h) => h.toLowerCase())
      : ["authorization"]
    const readBody = bodyProgram === undefined ? bodyIncluder(config.includeRequestBody, env) : undefined
    const limit = env.maxBufferSize

    const authzFailed = Effect.fail(ProxyError.make({ _tag: "ExtAuthzFailed" }))

    /** The request to the service, or undefined when a CEL input failed (a denial, as upstream). */
    const build = (ctx: ProxyRequest, body: BodyInclusion): ProxyRequest | undefined => {
      const activation = CelContext.forRequest(ctx)
      let target = ctx.path + ctx.query
      if (pathProgram !== undefined) {
        const r = pathProgram.eval(activation)
        if (Result.isFailure(r) || typeof r.success !== "string" || !r.success.startsWith("/")) return undefined
        target = r.success
      }
      let payload: Uint8Array | undefined
      if (bodyProgram !== undefined) {
        const r = bodyProgram.eval(activation)
        if (Result.isFailure(r)) return undefined
        payload = bodyBytes(r.success)
      } else if (body._tag === "Included") payload = body.bytes
      const headers = Headers.empty()
      headers["host"] = authority
      const q = target.indexOf("?")
      const check = new ProxyRequest(
        ctx.raw,
        ctx.method,
        q < 0 ? target : target.slice(0, q),
        q < 0 ? "" : target.slice(q),
        host,
        authority,
        ctx.scheme,
        ctx.version,
        headers,
        ctx.sourceAddress,
        ctx.sourcePort,
        ctx.startTime
      )
      for (const name of include) {
        if (name === ":method") check.method = ctx.method
        else if (name === ":path") {
          check.path = ctx.path
          check.query = ctx.query
        } else if (name === ":authority") headers["host"] = ctx.authority
        else if (!name.startsWith(":")) {
          const value = ctx.headers[name]
          if (value !== undefined) headers[name] = joined(name, value)
        }
      }
      if (body._tag === "Included") headers["x-envoy-auth-partial-body"] = body.partial ? "true" : "false"
      for (const [name, program] of addHeaders) {
        const r = program.eval(activation)
        const value = Result.isSuccess(r) ? HeaderExpressions.text(r.success) : undefined
        if (name === ":method") {
          if (value !== undefined && HeaderExpressions.isHeaderName(value)) check.method = value
        } else if (name === ":path") {
          if (value !== undefined) setPath(check, value)
        } else if (name === ":authority") {
          if (value !== undefined) headers["host"] = value
        } else if (!name.startsWith(":")) {
          if (value === undefined) delete headers[name]
          else headers[name] = value
        }
      }
      // The side-service gets the same framing as any upstream: a buffered body or none.
      if (payload !== undefined && payload.length > 0) RequestBody.replace(check, payload)
      check.authorityRewritten = true
      return check
    }

    const allowed = (ctx: ProxyRequest, check: ProxyRequest, res: ProxyResponse) =>
      Effect.gen(function*() {
        const headers: Array<readonly [string, string]> = []
        for (const name of copyBack) {
          const value = res.headers[name]
          if (value !== undefined) headers.push([name, typeof value === "string" ? value : value[0]!])
        }
        let meta: { [k: string]: Proto.Json } | undefined
        if (metadata.length > 0) {
          // `response.body` for the metadata expressions; a body over the limit is absent to them.
          yield* Effect.ignore(ResponseBody.read(check, res, limit))
          const activation = CelContext.forResponse(ctx, res)
          const out: { [k: string]: Proto.Json } = Object.create(null)
          for (const [k, program] of metadata) {
            const r = program.eval(activation)
            const json = Result.isSuccess(r) ? asJson(Functions.toJsonValue(r.success)) : undefined
            if (json !== undefined) out[k] = json
          }
          meta = out
        }
        const decision: Decision = { _tag: "HttpAllow", headers, metadata: meta }
        return decision
      })

    /** A non-2xx answer: the redirect, the answer itself, or undefined (a redirect that failed). */
    const denied = (ctx: ProxyRequest, check: ProxyRequest, res: ProxyResponse) =>
      Effect.gen(function*() {
        const cacheable = res.status === 401 || res.status === 403
        if (cacheable && redirect !== undefined) {
          const r = redirect.eval(CelContext.forRequest(ctx))
          const location = Result.isSuccess(r) && typeof r.success === "string" ? HeaderExpressions.text(r.success) : undefined
          if (location === undefined) return undefined
          const headers = Headers.empty()
          headers["location"] = location
          return decided({ _tag: "Respond", status: 302, headers, body: new Uint8Array(0), metadata: undefined })
        }
        const bytes = yield* Effect.orElseSucceed(ResponseBody.read(check, res, limit), () => undefined)
        if (bytes === undefined) {
          const streamed: Outcome = { _tag: "Streamed", response: res }
          return streamed
        }
        return decided({ _tag: "Respond", status: res.status, headers: res.headers, body: bytes, metadata: undefined }, cacheable)
      })

    const exchange = (check: ProxyRequest) =>
      Deadline.within(
        Effect.provideService(call, RequestContext, check),
        EXT_AUTHZ_TIMEOUT_MS,
        () => Effect.fail(ProxyError.make({ _tag: "UpstreamTimeout" }))
      )

    /** The service's exchange is over: whatever of its body was not read is dropped. */
    const release = (check: ProxyRequest) => {
      for (const b of check.openBodies ?? []) b.abort(new Error("authorization answer not used"))
    }

    const decide = Effect.fnUntraced(function*(ctx: ProxyRequest, span: Tracing.ClientSpan | undefined) {
      const body = readBody === undefined ? NO_BODY : yield* readBody(ctx)
      const check = build(ctx, body)
      if (check === undefined) return yield* authzFailed
      if (span !== undefined) {
        check.headers["traceparent"] = span.traceparent()
        span.set("server.address", resolved.name)
        span.set("http.request.method", check.method)
        span.set("url.path", check.path)
      }
      const answer = yield* Effect.result(exchange(check))
      if (span !== undefined) {
        if (Result.isSuccess(answer)) span.set("http.response.status_code", answer.success.status)
        else span.error = answer.failure.reason._tag
      }
      if (Result.isFailure(answer)) {
        release(check)
        yield* Effect.logDebug(`extAuthz at ${path}: ${resolved.name} gave no decision (${answer.failure.reason._tag})`)
        return UNDECIDED
      }
      const res = answer.success
      if (res.status >= 200 && res.status < 300) {
        const decision = yield* allowed(ctx, check, res)
        release(check)
        return decided(decision)
      }
      const outcome = yield* denied(ctx, check, res)
      if (outcome === undefined) {
        release(check)
        return yield* authzFailed
      }
      // A streamed answer hands its open body to the request, whose listener writes or aborts it.
      if (outcome._tag === "Streamed") (ctx.openBodies ??= []).push(...(check.openBodies ?? []))
      else release(check)
      return outcome
    })
    return {
      decide,
      programs: [pathProgram, redirect, bodyProgram, ...addHeaders.map(([, p]) => p)].filter((p): p is Cel.Program => p !== undefined)
    }
  })

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

type Failure = { readonly _tag: "Allow" } | { readonly _tag: "Deny" } | { readonly _tag: "DenyWithStatus"; readonly status: number }

/** `ext_authz.decision` (`allow`, `deny`, or `none` when the service gave none) on the call's span. */
const spanOutcome = (span: Tracing.ClientSpan, outcome: Outcome): void => {
  switch (outcome._tag) {
    case "Undecided":
      span.set("ext_authz.decision", "none")
      span.error ??= "no decision"
      return
    case "Streamed":
      span.set("ext_authz.decision", "deny")
      return
    case "Decided": {
      const d = outcome.decision
      span.set("ext_authz.decision", d._tag === "Allow" || d._tag === "HttpAllow" ? "allow" : "deny")
      if (d._tag === "Respond") span.set("ext_authz.status", d.status)
    }
  }
}

const failureOf = (mode: PlainShape["failureMode"]): Failure => {
  if (!present(mode) || mode === "deny") return { _tag: "Deny" }
  if (mode === "allow") return { _tag: "Allow" }
  return { _tag: "DenyWithStatus", status: statusOr403(mode.denyWithStatus) }
}

const makePlain = (config: PlainShape, env: BuildEnv, path: string): Effect.Effect<Middleware, ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const protocol = config.protocol
    const check = present(protocol) && present(protocol.http)
      ? yield* httpCheck(config, protocol.http, env, path)
      : yield* grpcCheck(config, present(protocol) && present(protocol.grpc) ? protocol.grpc : {}, env, path)
    const cache = present(config.cache) ? yield* makeCache(config.cache, `${path}.cache`) : undefined
    const programs = [...check.programs, ...(cache?.programs ?? [])]
    const readCelBody = CelContext.needsBody(programs) ? CelContext.bodyReader(programs, env.maxBufferSize) : undefined
    const failure = failureOf(config.failureMode)

    const noDecision: Effect.Effect<ProxyResponse | undefined, ProxyError.ProxyError> = failure._tag === "Allow"
      ? Effect.succeed(undefined)
      : Effect.fail(ProxyError.make(
        failure._tag === "Deny" ? { _tag: "ExtAuthzFailed" } : { _tag: "ExtAuthzFailed", status: failure.status, unavailable: true }
      ))

    const traced = (trace: Tracing.RequestTrace, ctx: ProxyRequest) =>
      Tracing.child(trace, SPAN_NAME, (span) => Effect.tap(check.decide(ctx, span), (outcome) => Effect.sync(() => spanOutcome(span, outcome))))

    /** The client's answer, or undefined to go on to `next`. */
    const authorize = Effect.fnUntraced(function*(ctx: ProxyRequest) {
      if (readCelBody !== undefined && ctx.body._tag === "Stream") yield* readCelBody(ctx)
      const key = cache?.key(ctx)
      if (cache !== undefined && key !== undefined) {
        const hit = cache.lookup(key, yield* Clock.currentTimeMillis)
        if (hit !== undefined) return yield* apply(ctx, hit)
      }
      const trace = ctx.trace
      const outcome = yield* (trace === undefined ? check.decide(ctx, undefined) : traced(trace, ctx))
      switch (outcome._tag) {
        case "Undecided":
          return yield* noDecision
        case "Streamed":
          ctx.directResponse = true
          return outcome.response
        case "Decided": {
          // The ttl is evaluated once the decision applied (it may read `extauthz.*`), whatever it was.
          const applied = yield* Effect.exit(apply(ctx, outcome.decision))
          if (cache !== undefined && key !== undefined && outcome.cacheable) {
            cache.insert(ctx, key, outcome.decision, yield* Clock.currentTimeMillis)
          }
          return yield* applied
        }
      }
    })

    return (next: Handler): Handler =>
      Effect.flatMap(currentRequest, (ctx) => Effect.flatMap(authorize(ctx), (answer) => (answer === undefined ? next : Effect.succeed(answer))))
  })

export const policy = Policy.define({
  key: "extAuthz",
  make: Conditional.plainOrConditional(makePlain)
})
