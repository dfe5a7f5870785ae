/**
 * JSON from clients and upstreams, bounded before it is parsed. `JSON.parse` accepts any depth:
 * a 2 MiB body of `[[[[…` takes it 0.35–0.9 s here, the event loop blocked for every other
 * request, before any check on the parsed value could run; and the recursive walkers after it
 * (`JSON.stringify`, redaction, CEL conversion) overflow the stack near 10,000 levels. So the
 * text's nesting is scanned first: one linear pass (≈ 0.15 µs for a small MCP message, ≈ 3 ms a
 * MiB) that stops at the first point deeper than the limit.
 *
 * @since 0.1.0
 */

/** Deepest nesting of arrays and objects accepted from a client or an upstream. */
export const MAX_NESTING = 64

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_ARRAY = 0x5b
const CLOSE_ARRAY = 0x5d
const OPEN_OBJECT = 0x7b
const CLOSE_OBJECT = 0x7d

/** The index of the quote closing the string that opens at `start`, or -1. */
const stringEnd = (text: string, start: number): number => {
  for (let i = start + 1; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === BACKSLASH) i++
    else if (c === QUOTE) return i
  }
  return -1
}

/**
 * Whether `text`, read as JSON, opens more than `limit` arrays/objects inside one another.
 * Brackets inside strings do not count. Not a validator: malformed text is left to `JSON.parse`.
 */
export const nestsDeeperThan = (text: string, limit: number): boolean => {
  let depth = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) {
      i = stringEnd(text, i)
      if (i === -1) return false
    } else if (c === OPEN_ARRAY || c === OPEN_OBJECT) {
      if (++depth > limit) return true
    } else if (c === CLOSE_ARRAY || c === CLOSE_OBJECT) depth--
  }
  return false
}

/** Thrown by `parseBounded` for text nested deeper than its limit. */
export class TooDeep extends Error {
  constructor(limit: number) {
    super(`JSON nested deeper than ${limit} levels`)
    this.name = "TooDeep"
  }
}

/** `JSON.parse` (with an optional reviver) after the nesting scan; throws `TooDeep` or `SyntaxError`. */
export const parseBounded = (text: string, limit: number = MAX_NESTING, reviver?: (this: unknown, key: string, value: unknown, context?: { source?: string }) => unknown): unknown => {
  if (nestsDeeperThan(text, limit)) throw new TooDeep(limit)
  return reviver === undefined ? JSON.parse(text) : JSON.parse(text, reviver)
}

const COLON = 0x3a
const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09

const NUMBER_CHAR = /[-+0-9.eE]/

/**
 * Member `key` of the top-level object in `text` when its value is a string or a number, found
 * in one pass without parsing the rest: what can still be read of a message too deep to parse
 * (the id of an answer, so its request fails at once). Undefined otherwise.
 */
export const topLevelScalar = (text: string, key: string): string | number | undefined => {
  let depth = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === OPEN_ARRAY || c === OPEN_OBJECT) depth++
    else if (c === CLOSE_ARRAY || c === CLOSE_OBJECT) depth--
    else if (c === QUOTE) {
      const end = stringEnd(text, i)
      if (end === -1) return undefined
      if (depth === 1) {
        let j = end + 1
        while (j < text.length && isSpace(text.charCodeAt(j))) j++
        if (text.charCodeAt(j) === COLON) {
          let name: unknown
          try {
            name = JSON.parse(text.slice(i, end + 1))
          } catch {
            return undefined
          }
          if (name === key) {
            j++
            while (j < text.length && isSpace(text.charCodeAt(j))) j++
            if (text.charCodeAt(j) === QUOTE) {
              const close = stringEnd(text, j)
              if (close === -1) return undefined
              try {
                const value: unknown = JSON.parse(text.slice(j, close + 1))
                return typeof value === "string" ? value : undefined
              } catch {
                return undefined
              }
            }
            let k = j
            while (k < text.length && NUMBER_CHAR.test(text[k]!)) k++
            const number = k > j ? Number(text.slice(j, k)) : Number.NaN
            return Number.isFinite(number) ? number : undefined
          }
        }
      }
      i = end
    }
  }
  return undefined
}
