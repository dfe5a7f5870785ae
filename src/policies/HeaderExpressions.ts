/**
 * Header values computed by CEL (`directResponse.headers`, `transformations` add/set/replace).
 * A value becomes a header only if it is a string or bytes (upstream `as_bytes`) that is a
 * valid field value (RFC 9110 §5.5: no CR, LF, NUL or other controls but HTAB). Anything else
 * — an error, a number, a value with CR/LF — yields `undefined`, so a policy drops the header
 * instead of handing Node or undici a value they would refuse (or a response-splitting one).
 *
 * Strings are sent as their UTF-8 bytes, as upstream sends them; Node writes header strings as
 * latin-1, so the bytes are carried as a latin-1 string.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/** RFC 9110 field-value octets: HTAB, visible ASCII, space, obs-text. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/
const ASCII = /^[\t\x20-\x7e]*$/

const latin1 = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1")

/** The header value of a CEL result, or `undefined` when it cannot be one. */
export const text = (value: unknown): string | undefined => {
  if (typeof value === "string") {
    if (ASCII.test(value)) return value
    const wire = latin1(Buffer.from(value, "utf8"))
    return FIELD_VALUE.test(wire) ? wire : undefined
  }
  if (value instanceof Uint8Array) {
    const wire = latin1(value)
    return FIELD_VALUE.test(wire) ? wire : undefined
  }
  return undefined
}

/** A JSON-ish scalar as a header value (the `replace` map also takes numbers and booleans, as upstream). */
export const scalarText = (value: unknown): string | undefined => {
  if (typeof value === "bigint" || typeof value === "boolean") return String(value)
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : undefined
  return text(value)
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

export const isHeaderName = (s: string): boolean => TOKEN.test(s)

/** A header name (RFC 9110 token). */
export const HeaderName = Schema.String.check(
  Schema.makeFilter((s: string) => TOKEN.test(s) || `invalid header name "${s}"`)
)

/**
 * A map of header name → CEL expression. Keys are checked on the map: a `Schema.Record` with a
 * refined key schema silently drops keys that fail the refinement instead of rejecting them.
 */
export const expressionMap = (checkName: (name: string) => string | undefined) => namedRecord(Schema.String, checkName)

/**
 * A record whose keys are checked by `checkName`. `Schema.Record` with a refined key schema
 * silently drops the keys that fail the refinement (Effect 4.1); this rejects them instead, with
 * the key in the issue path.
 */
export const namedRecord = <V extends Schema.Top>(value: V, checkName: (name: string) => string | undefined) =>
  Schema.Record(Schema.String, value).check(
    Schema.makeFilter((m: { readonly [k: string]: unknown }) => {
      for (const name of Object.keys(m)) {
        const issue = checkName(name)
        if (issue !== undefined) return { path: [name], issue }
      }
      return undefined
    })
  )

export const checkHeaderName = (name: string): string | undefined => (TOKEN.test(name) ? undefined : `invalid header name "${name}"`)
