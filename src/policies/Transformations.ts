/**
 * `transformations`: CEL-computed edits of the request before it is forwarded and of the
 * response before it is returned (agentgateway's `transformation_cel.rs`). Each side is
 * `{metadata, replace, add, set, remove, body}`, applied in that order; every expression sees
 * the edits made before it (the activation reads the live request / response).
 *
 * - `metadata: {k: CEL}` stores the JSON value of each expression; later CEL (this policy's
 *   other fields, later policies, the response side) reads it as `metadata.k`. An expression
 *   that errors stores nothing.
 * - `replace: CEL` must give a map of header name → string (or number/boolean, or a list for a
 *   repeated header); it replaces every header, then add/set/remove apply on top. Pseudo and
 *   invalid names are skipped. An error or a non-map leaves the headers as they were. On the
 *   request, `Host` always follows the authority: a `host` entry changes it, and without one
 *   it is kept.
 * - `add` appends, `set` overwrites. A value must be a string or bytes that is a valid field
 *   value; anything else (an error, a number, CR/LF) REMOVES the header, as upstream does, so a
 *   failed expression can never let a client-supplied value through under that name.
 * - Pseudo-headers in add/set: `:method`, `:path` (path and query; the path goes through the
 *   one normaliser, routing/Path.ts, and an invalid one is ignored), `:authority` (also `Host`;
 *   it turns off the automatic host rewrite of DNS-named backends, as urlRewrite does) on the
 *   request, `:status` (an integer 100-999) on the response. Elsewhere they are ignored, as
 *   upstream. `host` on the request is the authority too. `:scheme` is refused.
 * - `remove` deletes headers by name (`host` on the request cannot be removed: it is the
 *   authority).
 * - `body: CEL`: a string or bytes is the new body as is, other values their JSON text, `null`
 *   keeps the body, an error empties it. `content-length` follows the new body.
 *
 * Bodies are buffered only when an expression reads them: `request.body` through
 * RequestBody.read, `response.body` (or a response `body` to set) through ResponseBody.read,
 * both bounded by `frontendPolicies.http.maxBufferSize`. Over the limit the body is absent to
 * CEL and goes through untouched: a response `body` expression that reads `response.body` is
 * then not applied (one that does not read it still replaces the body).
 *
 * Known difference: upstream's newest code fails the request when a `body` expression errors;
 * this gateway empties the body, as upstream did before (and as the reference specifies).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as Cel from "../cel/Cel.ts"
import * as CelContext from "../cel/Context.ts"
import * as Functions from "../cel/Functions.ts"
import * as ConfigError from "../config/ConfigError.ts"
import { opt, unsupportedMessage } from "../config/Fields.ts"
import type { BuildEnv, Handler, Middleware } from "../pipeline/Policy.ts"
import * as Policy from "../pipeline/Policy.ts"
import type * as ProxyError from "../pipeline/ProxyError.ts"
import type { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import * as RequestBody from "../pipeline/RequestBody.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"
import * as ResponseBody from "../pipeline/ResponseBody.ts"
import * as Path from "../routing/Path.ts"
import * as Headers from "../shared/headers.ts"
import * as Conditional from "./Conditional.ts"
import { bodyBytes, keyPath } from "./DirectResponse.ts"
import * as HeaderExpressions from "./HeaderExpressions.ts"
import { splitAuthority } from "./UrlRewrite.ts"

const PSEUDO = new Set([":method", ":path", ":authority", ":status"])

const checkTarget = (s: string): string | undefined =>
  PSEUDO.has(s) || HeaderExpressions.isHeaderName(s)
    ? undefined
    : s === ":scheme"
    ? unsupportedMessage("transformations pseudo-header :scheme")
    : `invalid header name "${s}" (or pseudo-header :method, :path, :authority, :status)`

export const Transform = Schema.Struct({
  add: opt(HeaderExpressions.expressionMap(checkTarget), "Headers to append: name (or pseudo-header) → CEL expression."),
  set: opt(HeaderExpressions.expressionMap(checkTarget), "Headers to set, replacing existing values: name (or pseudo-header) → CEL expression."),
  remove: opt(Schema.Array(HeaderExpressions.HeaderName), "Header names to remove."),
  replace: opt(Schema.String, "CEL expression giving the complete header map (name → value or list of values); applied before add/set/remove."),
  body: opt(Schema.String, "CEL expression giving the new body: strings/bytes as is, other values as JSON; null keeps the body, an error empties it."),
  metadata: opt(Schema.Record(Schema.String, Schema.String), "Values to store for later CEL as `metadata.<key>`: key → CEL expression.")
}).annotate({ description: "Edits applied in order: metadata, replace, add, set, remove, body." })
export type Transform = typeof Transform.Type

const sides = {
  request: opt(Transform, "Transform the request before it is forwarded."),
  response: opt(Transform, "Transform the response before it is returned.")
}

export const Entry = Schema.Struct({ condition: Conditional.condition, ...sides }).annotate({
  description: "A transformation applied when its condition holds."
})
export type Entry = typeof Entry.Type

export const Config = Schema.Struct({
  ...sides,
  conditional: opt(Conditional.entries(Entry), "Conditional transformations: the first entry whose condition holds applies.")
}).check(
  Schema.makeFilter((c: { readonly conditional?: unknown; readonly request?: unknown; readonly response?: unknown }) => {
    if (c.conditional === undefined || c.conditional === null) return undefined
    const other = (["request", "response"] as const).find((k) => k in c)
    return other === undefined || { path: [other], issue: "conditional cannot be combined with other fields" }
  })
).annotate({ description: "CEL transformations of requests and responses." })
export type Config = typeof Config.Type

// ---------------------------------------------------------------------------------------------
// Compile
// ---------------------------------------------------------------------------------------------

interface Target {
  readonly name: string
  readonly pseudo: boolean
  readonly program: Cel.Program
}

interface Compiled {
  readonly metadata: ReadonlyArray<readonly [string, Cel.Program]>
  readonly replace: Cel.Program | undefined
  readonly add: ReadonlyArray<Target>
  readonly set: ReadonlyArray<Target>
  readonly remove: ReadonlyArray<string>
  readonly body: Cel.Program | undefined
  readonly programs: ReadonlyArray<Cel.Program>
}

const compileTargets = (map: { readonly [k: string]: string } | null | undefined, path: string) =>
  Effect.forEach(Object.entries(map ?? {}), ([name, source]) =>
    Effect.map(Cel.compile(source, keyPath(path, name)), (program): Target => ({
      name: name.toLowerCase(),
      pseudo: name.startsWith(":"),
      program
    })))

const optional = (source: string | null | undefined, path: string): Effect.Effect<Cel.Program | undefined, ConfigError.ConfigError> =>
  source === undefined || source === null ? Effect.succeed(undefined) : Cel.compile(source, path)

const compileTransform = (t: Transform, path: string): Effect.Effect<Compiled, ConfigError.ConfigError> =>
  Effect.gen(function*() {
    const metadata = yield* Effect.forEach(Object.entries(t.metadata ?? {}), ([k, source]) =>
      Effect.map(Cel.compile(source, keyPath(`${path}.metadata`, k)), (p) => [k, p] as const))
    const replace = yield* optional(t.replace, `${path}.replace`)
    if (replace !== undefined && !(replace.type.startsWith("map") || replace.type.startsWith("dyn"))) {
      return yield* Effect.fail(ConfigError.make(`${path}.replace`, `invalid CEL expression ${JSON.stringify(replace.source)}: must evaluate to a map, not ${replace.type}`))
    }
    const add = yield* compileTargets(t.add, `${path}.add`)
    const set = yield* compileTargets(t.set, `${path}.set`)
    const body = yield* optional(t.body, `${path}.body`)
    const programs = [...metadata.map(([, p]) => p), ...(replace === undefined ? [] : [replace]), ...add.map((x) => x.program), ...set.map((x) => x.program), ...(body === undefined ? [] : [body])]
    return { metadata, replace, add, set, remove: (t.remove ?? []).map((n) => n.toLowerCase()), body, programs }
  })

// ---------------------------------------------------------------------------------------------
// Apply
// ---------------------------------------------------------------------------------------------

const EMPTY = new Uint8Array(0)

const isRecord = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Map)

const entriesOf = (v: unknown): ReadonlyArray<readonly [string, unknown]> | undefined => {
  if (v instanceof Map) return Array.from(v, ([k, x]) => [String(k), x] as const)
  if (isRecord(v)) return Object.entries(v)
  return undefined
}

const metadataOf = (ctx: ProxyRequest): Record<string, unknown> => {
  const current = ctx.celExtensions?.metadata
  if (isRecord(current)) return current
  const fresh: Record<string, unknown> = {}
  CelContext.attach(ctx, "metadata", fresh)
  return fresh
}

const applyMetadata = (ctx: ProxyRequest, c: Compiled, activation: object): void => {
  for (const [key, program] of c.metadata) {
    const r = program.eval(activation)
    // Stored as JSON (upstream keeps a serde_json map), read back as CEL values.
    if (Result.isSuccess(r)) metadataOf(ctx)[key] = Functions.fromJson(Functions.toJsonValue(r.success))
  }
}

/** Fills `headers` from a `replace` result; false when the result is not a map. */
const replaceHeaders = (headers: Headers.HeaderMap, value: unknown, keep: (name: string, value: string) => boolean): boolean => {
  const entries = entriesOf(value)
  if (entries === undefined) return false
  for (const name of Object.keys(headers)) delete headers[name]
  for (const [rawName, v] of entries) {
    if (!HeaderExpressions.isHeaderName(rawName)) continue
    const name = rawName.toLowerCase()
    for (const item of Array.isArray(v) ? v : [v]) {
      const text = HeaderExpressions.scalarText(item)
      if (text !== undefined && keep(name, text)) Headers.append(headers, name, text)
    }
  }
  return true
}

const AUTHORITY = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::(\d{1,5}))?$/
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const QUERY = /^(\?[\x21-\x22\x24-\x7e]*)?$/

const recordOriginal = (ctx: ProxyRequest): void => {
  ctx.originalUrl ??= { authority: ctx.authority, host: ctx.host, path: ctx.path, query: ctx.query }
}

export const setAuthority = (ctx: ProxyRequest, value: string): void => {
  const m = AUTHORITY.exec(value)
  if (m === null || (m[2] !== undefined && Number(m[2]) > 65535)) return
  if (value === ctx.authority) return
  recordOriginal(ctx)
  const host = splitAuthority(value).host
  ctx.authority = value
  ctx.host = (host.startsWith("[") ? host.slice(1, -1) : host).toLowerCase()
  ctx.headers["host"] = value
  ctx.authorityRewritten = true
}

export const setPath = (ctx: ProxyRequest, value: string): void => {
  if (value.charCodeAt(0) !== 47 /* / */) return
  const q = value.indexOf("?")
  const query = q < 0 ? "" : value.slice(q)
  if (!QUERY.test(query)) return
  const path = Path.normalizePath(q < 0 ? value : value.slice(0, q))
  if (typeof path !== "string") return
  recordOriginal(ctx)
  ctx.path = path
  ctx.query = query
}

/** `:status` takes an integer (int, or uint: cel-js boxes those) in 100-999, as `StatusCode::from_u16`. */
const statusOf = (value: unknown): number | undefined => {
  const raw: unknown = value !== null && typeof value === "object" ? value.valueOf() : value
  return typeof raw === "bigint" && raw >= 100n && raw <= 999n ? Number(raw) : undefined
}

const applyRequestTarget = (ctx: ProxyRequest, t: Target, append: boolean, activation: object): void => {
  const r = t.program.eval(activation)
  const value = Result.isSuccess(r) ? HeaderExpressions.text(r.success) : undefined
  if (t.pseudo || t.name === "host") {
    if (value === undefined) return
    if (t.name === ":path") setPath(ctx, value)
    else if (t.name === ":method") {
      if (TOKEN.test(value)) ctx.method = value
    } else if (t.name === ":authority" || t.name === "host") setAuthority(ctx, value)
    return
  }
  if (value === undefined) delete ctx.headers[t.name]
  else if (append) Headers.append(ctx.headers, t.name, value)
  else ctx.headers[t.name] = value
}

const applyResponseTarget = (res: ProxyResponse, t: Target, append: boolean, activation: object): void => {
  const r = t.program.eval(activation)
  if (t.pseudo) {
    if (t.name !== ":status" || Result.isFailure(r)) return
    const status = statusOf(r.success)
    if (status !== undefined) res.status = status
    return
  }
  const value = Result.isSuccess(r) ? HeaderExpressions.text(r.success) : undefined
  if (value === undefined) delete res.headers[t.name]
  else if (append) Headers.append(res.headers, t.name, value)
  else res.headers[t.name] = value
}

const applyRequest = (ctx: ProxyRequest, c: Compiled): void => {
  const activation = CelContext.forRequest(ctx)
  applyMetadata(ctx, c, activation)
  if (c.replace !== undefined) {
    const r = c.replace.eval(activation)
    if (Result.isSuccess(r)) {
      let host: string | undefined
      const before = ctx.authority
      const replaced = replaceHeaders(ctx.headers, r.success, (name, value) => {
        if (name !== "host") return true
        host = value
        return false
      })
      if (replaced) {
        ctx.headers["host"] = before
        if (host !== undefined) setAuthority(ctx, host)
      }
    }
  }
  for (const t of c.add) applyRequestTarget(ctx, t, true, activation)
  for (const t of c.set) applyRequestTarget(ctx, t, false, activation)
  for (const name of c.remove) if (name !== "host") delete ctx.headers[name]
  if (c.body !== undefined) {
    const r = c.body.eval(activation)
    if (Result.isFailure(r)) RequestBody.replace(ctx, EMPTY)
    else if (r.success !== null) RequestBody.replace(ctx, bodyBytes(r.success))
  }
}

const applyResponse = (ctx: ProxyRequest, res: ProxyResponse, c: Compiled, bodyAvailable: boolean): void => {
  const activation = CelContext.forResponse(ctx, res)
  applyMetadata(ctx, c, activation)
  if (c.replace !== undefined) {
    const r = c.replace.eval(activation)
    if (Result.isSuccess(r)) replaceHeaders(res.headers, r.success, () => true)
  }
  for (const t of c.add) applyResponseTarget(res, t, true, activation)
  for (const t of c.set) applyResponseTarget(res, t, false, activation)
  for (const name of c.remove) delete res.headers[name]
  if (c.body !== undefined && (bodyAvailable || !c.body.references.responseBody)) {
    const r = c.body.eval(activation)
    if (Result.isFailure(r)) ResponseBody.replace(res, EMPTY)
    else if (r.success !== null) ResponseBody.replace(res, bodyBytes(r.success))
  }
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

interface Plain {
  readonly request?: Transform | null | undefined
  readonly response?: Transform | null | undefined
}

const makePlain = (config: Plain, env: BuildEnv, path: string): Effect.Effect<Middleware, ConfigError.ConfigError> =>
  Effect.gen(function*() {
    const request = config.request === undefined || config.request === null ? undefined : yield* compileTransform(config.request, `${path}.request`)
    const response = config.response === undefined || config.response === null ? undefined : yield* compileTransform(config.response, `${path}.response`)
    const readRequestBody = request !== undefined && CelContext.needsBody(request.programs)
      ? CelContext.bodyReader(request.programs, env.maxBufferSize)
      : undefined
    const readResponseBody = response !== undefined &&
      (response.body !== undefined || response.programs.some((p) => p.references.responseBody))
    const limit = env.maxBufferSize

    const onResponse = (ctx: ProxyRequest, res: ProxyResponse, c: Compiled): Effect.Effect<ProxyResponse, ProxyError.ProxyError> => {
      if (!readResponseBody) {
        applyResponse(ctx, res, c, true)
        return Effect.succeed(res)
      }
      return Effect.map(ResponseBody.read(ctx, res, limit), (bytes) => {
        applyResponse(ctx, res, c, bytes !== undefined)
        return res
      })
    }

    return (next: Handler): Handler => {
      const forward = (ctx: ProxyRequest): Handler => {
        if (request !== undefined) applyRequest(ctx, request)
        if (response === undefined) return next
        return Effect.flatMap(next, (res) => onResponse(ctx, res, response))
      }
      return Effect.flatMap(currentRequest, (ctx) =>
        readRequestBody !== undefined && ctx.body._tag === "Stream"
          ? Effect.flatMap(readRequestBody(ctx), () => forward(ctx))
          : forward(ctx))
    }
  })

export const policy = Policy.define({
  key: "transformations",
  make: Conditional.plainOrConditional(makePlain)
})
