/**
 * Header maps as Node keeps them: a record of lower-case names to a string or, for repeated
 * headers, a list, whose prototype chain holds nothing, which keeps `__proto__`/`constructor`
 * header names inert (security.md §5 #15). Used for request headers sent upstream and response headers
 * written downstream, so policies mutate one representation everywhere.
 *
 * @since 0.1.0
 */

export type HeaderValue = string | Array<string>
export type HeaderMap = Record<string, HeaderValue>

/**
 * The constructor of header maps. Its prototype is an empty null-prototype object: no
 * `__proto__` accessor, no `constructor`, nothing inherited, so every header name is an own
 * property (what `Object.create(null)` gives), while V8 keeps the instances' properties in
 * hidden classes; `Object.create(null)` objects start in dictionary mode, which made building,
 * reading and iterating a header map about 3.5× slower (a request and a response map each).
 */
function HeaderRecord(this: object) {}
HeaderRecord.prototype = Object.freeze(Object.create(null))

/** The prototype of every map `empty` makes: as inert as `null` (see `HeaderRecord`). */
export const PROTOTYPE: object = HeaderRecord.prototype

export const empty = (): HeaderMap => new (HeaderRecord as unknown as new() => HeaderMap)()

export const get = (headers: HeaderMap, name: string): string | undefined => {
  const value = headers[name]
  return value === undefined ? undefined : typeof value === "string" ? value : value.join(", ")
}

export const set = (headers: HeaderMap, name: string, value: string): void => {
  headers[name] = value
}

/** Appends a value, turning a single value into a list (as `add` in a header modifier). */
export const append = (headers: HeaderMap, name: string, value: string): void => {
  const existing = headers[name]
  if (existing === undefined) headers[name] = value
  else if (typeof existing === "string") headers[name] = [existing, value]
  else existing.push(value)
}

export const remove = (headers: HeaderMap, name: string): void => {
  delete headers[name]
}

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy, nor do headers a `Connection`
 * header nominates. `te: trailers` is the one TE value allowed through.
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade"
])

/** A `Connection` value that is only the `keep-alive` or `close` option: the usual case, naming no header. */
const CONNECTION_OPTION = /^\s*(?:keep-alive|close)\s*$/i
const NONE: ReadonlyArray<string> = []

/** Tokens of a `Connection` header that name other headers (not the `close`/`keep-alive` options). */
const nominated = (connection: HeaderValue): ReadonlyArray<string> => {
  if (typeof connection === "string" && CONNECTION_OPTION.test(connection)) return NONE
  const out: Array<string> = []
  for (const token of (typeof connection === "string" ? connection : connection.join(",")).split(",")) {
    const name = token.trim().toLowerCase()
    if (name !== "" && name !== "close" && name !== "keep-alive") out.push(name)
  }
  return out
}

const keepsTrailers = (te: HeaderValue): boolean => (typeof te === "string" ? te : te.join(",")).toLowerCase().includes("trailers")

/**
 * Completes, in place, a map built without the hop-by-hop names: removes the headers the
 * `Connection` value names, and lets `te: trailers` through (the one TE value allowed on).
 */
export const dropNominated = (headers: HeaderMap, connection: HeaderValue | undefined, te?: HeaderValue): void => {
  if (connection !== undefined) for (const name of nominated(connection)) delete headers[name]
  if (te !== undefined && keepsTrailers(te)) headers["te"] = "trailers"
}

/** Copies a header object (undici's response headers), leaving out hop-by-hop headers. */
export const copyEndToEnd = (source: Record<string, string | ReadonlyArray<string> | undefined>): HeaderMap => {
  const out = empty()
  let connection: HeaderValue | undefined
  for (const name in source) {
    const value = source[name]
    if (value === undefined) continue
    if (HOP_BY_HOP.has(name)) {
      if (name === "connection") connection = typeof value === "string" ? value : [...value]
      continue
    }
    out[name] = typeof value === "string" ? value : [...value]
  }
  dropNominated(out, connection)
  return out
}
