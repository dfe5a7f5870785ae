/**
 * Header maps as Node keeps them: a null-prototype record of lower-case names to a string or,
 * for repeated headers, a list. Null prototypes keep `__proto__`/`constructor` header names
 * inert (security.md §5 #15). Used for request headers sent upstream and response headers
 * written downstream, so policies mutate one representation everywhere.
 *
 * @since 0.1.0
 */

export type HeaderValue = string | Array<string>
export type HeaderMap = Record<string, HeaderValue>

export const empty = (): HeaderMap => Object.create(null) as HeaderMap

/** Copies a Node/undici header object (values string, string[] or number) into a fresh map. */
export const fromNode = (source: Record<string, string | ReadonlyArray<string> | number | undefined>): HeaderMap => {
  const out = empty()
  for (const name in source) {
    const value = source[name]
    if (value === undefined) continue
    out[name] = typeof value === "number" ? String(value) : typeof value === "string" ? value : [...value]
  }
  return out
}

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
const HOP_BY_HOP = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade"
])

export const stripHopByHop = (headers: HeaderMap): void => {
  const connection = headers["connection"]
  if (connection !== undefined) {
    const tokens = typeof connection === "string" ? connection : connection.join(",")
    for (const token of tokens.split(",")) {
      const name = token.trim().toLowerCase()
      if (name !== "") delete headers[name]
    }
  }
  const te = headers["te"]
  for (const name of HOP_BY_HOP) {
    if (name in headers) delete headers[name]
  }
  if (te !== undefined && (typeof te === "string" ? te : te.join(",")).toLowerCase().includes("trailers")) {
    headers["te"] = "trailers"
  }
}
