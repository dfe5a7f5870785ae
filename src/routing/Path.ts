/**
 * THE path normaliser: applied once per request, in front of routing, authorization and
 * forwarding, so all three see the same string (security.md §0.2, §5 #10–#11). Never
 * `new URL(req.url, base)`: WHATWG parsing turns `//admin` into a host and `%2e%2e` into `..`.
 *
 * RFC 3986: percent-encoded unreserved characters are decoded and other escapes upper-cased
 * (§6.2.2.1–2), dot segments removed (§5.2.4), repeated slashes merged. Encoded `/` and `\`,
 * raw `\`, NUL, fragments and malformed escapes are rejected: they exist to make two parsers
 * disagree.
 *
 * @since 0.1.0
 */

export interface RequestTarget {
  /** Authority of an absolute-form target (`GET http://h/p`), else undefined. */
  readonly authority: string | undefined
  readonly path: string
  /** Query string including `?`, or "". Forwarded as received. */
  readonly query: string
}

export type Normalized = RequestTarget | { readonly error: string }

const HEX = "0123456789ABCDEF"
const isHex = (c: number) => (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102)
const hexVal = (c: number) => (c <= 57 ? c - 48 : (c | 0x20) - 87)
const isUnreserved = (c: number) =>
  (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95 || c === 126

/** Fast path: a path with no escapes, dots-segments, double slashes or backslashes is already normal. */
const SIMPLE = /^(?:\/[A-Za-z0-9\-_~!$&'()*+,;=:@][A-Za-z0-9\-_~!$&'()*+,;=:@.]*)*\/?$/

export const normalizePath = (raw: string): string | { readonly error: string } => {
  if (SIMPLE.test(raw)) return raw
  let decoded = ""
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i)
    if (c === 37 /* % */) {
      const h1 = raw.charCodeAt(i + 1)
      const h2 = raw.charCodeAt(i + 2)
      if (!isHex(h1) || !isHex(h2)) return { error: "malformed percent-encoding in path" }
      const value = hexVal(h1) * 16 + hexVal(h2)
      if (value === 0x2f || value === 0x5c) return { error: "encoded slash or backslash in path" }
      if (value === 0) return { error: "NUL in path" }
      decoded += isUnreserved(value) ? String.fromCharCode(value) : `%${HEX[value >> 4]}${HEX[value & 15]}`
      i += 2
    } else if (c === 92 /* \ */) {
      return { error: "backslash in path" }
    } else if (c < 0x21 || c === 0x7f) {
      return { error: "control character in path" }
    } else {
      decoded += raw[i]
    }
  }
  return removeDotSegments(decoded.replace(/\/{2,}/g, "/"))
}

/** RFC 3986 §5.2.4 on an absolute path; `..` above the root stays at the root. */
const removeDotSegments = (path: string): string => {
  const segments = path.split("/")
  const out: Array<string> = []
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i]!
    if (segment === ".") {
      if (i === segments.length - 1) out.push("")
    } else if (segment === "..") {
      out.pop()
      if (i === segments.length - 1) out.push("")
    } else {
      out.push(segment)
    }
  }
  return "/" + out.join("/")
}

/** Splits and normalises a request-target (origin-form or absolute-form). */
export const normalizeTarget = (url: string): Normalized => {
  if (url.includes("#")) return { error: "fragment in request target" }
  let authority: string | undefined
  let rest = url
  if (url.charCodeAt(0) !== 47 /* / */) {
    const m = /^[hH][tT][tT][pP][sS]?:\/\/([^/?]*)(.*)$/.exec(url)
    if (m === null) return { error: "unsupported request target" }
    authority = m[1]!
    rest = m[2] === "" ? "/" : m[2]!
    if (rest.charCodeAt(0) !== 47) rest = "/" + rest
  }
  const q = rest.indexOf("?")
  const rawPath = q === -1 ? rest : rest.slice(0, q)
  const query = q === -1 ? "" : rest.slice(q)
  const path = normalizePath(rawPath)
  if (typeof path !== "string") return path
  return { authority, path, query }
}
