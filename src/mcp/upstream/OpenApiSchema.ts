/**
 * JSON values and local `$ref` resolution for OpenAPI documents.
 *
 * Tool input schemas are handed to MCP clients, which cannot follow references into a document
 * they never see, so every `$ref` a tool uses is inlined. Only local references (`#/…`, RFC 6901
 * pointers) are supported: a gateway fetching other documents named by a schema would let a
 * config file make it read arbitrary files and URLs. Two bounds keep a hostile document from
 * exhausting memory: a reference chain deeper than {@link maxRefDepth} or a cycle is rejected,
 * and the expanded size of all inlined schemas is capped at {@link maxExpandedNodes} (references
 * that fan out expand exponentially, the JSON analogue of the YAML "billion laughs").
 *
 * @since 0.1.0
 */
import { renderPath } from "../../config/ConfigError.ts"

export type Json = null | boolean | number | string | ReadonlyArray<Json> | JsonObject
export interface JsonObject {
  readonly [key: string]: Json
}

/** Longest chain of nested references followed while inlining one value. */
export const maxRefDepth = 64

/** JSON nodes (objects, arrays, scalars) all inlined schemas of one document may expand to. */
export const maxExpandedNodes = 1_000_000

/** Deepest nesting of arrays and objects accepted in a document. */
export const maxNesting = 256

export type Location = ReadonlyArray<string | number>

/** A problem in the document, located by its path inside the document. */
export class DocumentError extends Error {
  readonly at: Location
  readonly reason: string
  constructor(at: Location, reason: string) {
    super(at.length === 0 ? reason : `${renderPath(at)}: ${reason}`)
    this.at = at
    this.reason = reason
  }
}

export const isObject = (value: unknown): value is JsonObject =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** Copies parsed input into plain JSON: drops `undefined`, rejects what JSON cannot hold. */
export const toJson = (value: unknown, at: Location = []): Json => {
  if (at.length > maxNesting) throw new DocumentError([], `document nested deeper than ${maxNesting} levels`)
  if (value === null || typeof value === "boolean" || typeof value === "string") return value
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new DocumentError(at, "numbers must be finite")
    return value
  }
  if (Array.isArray(value)) return value.map((item: unknown, i) => toJson(item, [...at, i]))
  if (typeof value === "object") {
    // Null prototype: keys such as `__proto__` in a document stay plain data.
    const out: Record<string, Json> = Object.create(null)
    for (const [key, item] of Object.entries(value)) {
      if (item !== undefined) out[key] = toJson(item, [...at, key])
    }
    return out
  }
  throw new DocumentError(at, `unsupported value of type ${typeof value}`)
}

/** RFC 6901 pointer of a `#/…` fragment (the fragment itself is percent-encoded, RFC 3986). */
const pointerSegments = (ref: string, at: Location): ReadonlyArray<string> => {
  let fragment: string
  try {
    fragment = decodeURIComponent(ref.slice(1))
  } catch {
    throw new DocumentError(at, `invalid $ref ${JSON.stringify(ref)}: bad percent-encoding`)
  }
  if (fragment === "") return []
  if (!fragment.startsWith("/")) throw new DocumentError(at, `invalid $ref ${JSON.stringify(ref)}: expected a JSON pointer "#/…"`)
  return fragment.slice(1).split("/").map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"))
}

interface Expanded {
  readonly value: Json
  /** Nodes of `value` with shared subtrees counted every time they appear. */
  readonly size: number
}

/**
 * Resolves references of one document. Resolved reference targets are memoised (a target that
 * resolved once contains no cycle), so shared components are inlined by sharing, while the
 * budget counts their full expanded size: that is what serialising a tool list costs.
 */
export class Resolver {
  private readonly memo = new Map<string, Expanded>()
  private readonly active: Array<string> = []
  private expanded = 0
  private readonly document: JsonObject

  constructor(document: JsonObject) {
    this.document = document
  }

  /** The value a reference names, following reference chains; `at` locates the reference. */
  private target(ref: string, at: Location): Json {
    if (!ref.startsWith("#")) {
      throw new DocumentError(at, `unsupported $ref ${JSON.stringify(ref)}: only local references (#/…) are supported`)
    }
    let node: Json = this.document
    for (const segment of pointerSegments(ref, at)) {
      const next: Json | undefined = Array.isArray(node)
        ? /^(0|[1-9]\d*)$/.test(segment) ? node[Number(segment)] : undefined
        : isObject(node) && Object.hasOwn(node, segment) ? node[segment] : undefined
      if (next === undefined) throw new DocumentError(at, `unresolvable $ref ${JSON.stringify(ref)}`)
      node = next
    }
    return node
  }

  private enter(ref: string, at: Location): void {
    if (this.active.includes(ref)) {
      throw new DocumentError(at, `circular $ref ${JSON.stringify(ref)} (via ${this.active.join(" -> ")})`)
    }
    if (this.active.length >= maxRefDepth) {
      throw new DocumentError(at, `$ref chain deeper than ${maxRefDepth} at ${JSON.stringify(ref)}`)
    }
    this.active.push(ref)
  }

  private count(size: number, at: Location): void {
    this.expanded += size
    if (this.expanded > maxExpandedNodes) {
      throw new DocumentError(at, `inlined schemas expand to more than ${maxExpandedNodes} JSON nodes`)
    }
  }

  private expand(value: Json, at: Location): Expanded {
    if (Array.isArray(value)) {
      let size = 1
      const items = value.map((item: Json, i) => {
        const e = this.expand(item, [...at, i])
        size += e.size
        return e.value
      })
      return { value: items, size }
    }
    if (!isObject(value)) return { value, size: 1 }
    const ref = value["$ref"]
    if (typeof ref === "string") {
      const resolved = this.resolveRef(ref, at)
      const siblings = Object.keys(value).filter((k) => k !== "$ref")
      if (siblings.length === 0 || !isObject(resolved.value)) return resolved
      // OpenAPI 3.1 lets a reference carry siblings (description, …); they refine the target.
      const out: Record<string, Json> = Object.assign(Object.create(null), resolved.value)
      let size = resolved.size
      for (const key of siblings) {
        const e = this.expand(value[key]!, [...at, key])
        out[key] = e.value
        size += e.size
      }
      return { value: out, size }
    }
    const out: Record<string, Json> = Object.create(null)
    let size = 1
    for (const [key, item] of Object.entries(value)) {
      const e = this.expand(item, [...at, key])
      out[key] = e.value
      size += e.size
    }
    return { value: out, size }
  }

  private resolveRef(ref: string, at: Location): Expanded {
    const cached = this.memo.get(ref)
    if (cached !== undefined) return cached
    this.enter(ref, at)
    const result = this.expand(this.target(ref, at), at)
    this.active.pop()
    this.memo.set(ref, result)
    return result
  }

  /** `value` with every reference inside it inlined, charged to the document's budget. */
  inline(value: Json, at: Location): Json {
    const e = this.expand(value, at)
    this.count(e.size, at)
    return e.value
  }

  /**
   * Follows references on `value` itself only (a path item, parameter or request body that is a
   * `$ref`), leaving nested schemas to {@link inline}.
   */
  deref(value: Json, at: Location): Json {
    let node = value
    const seen: Array<string> = []
    while (isObject(node) && typeof node["$ref"] === "string") {
      const ref = node["$ref"]
      if (seen.includes(ref)) throw new DocumentError(at, `circular $ref ${JSON.stringify(ref)}`)
      if (seen.length >= maxRefDepth) throw new DocumentError(at, `$ref chain deeper than ${maxRefDepth}`)
      seen.push(ref)
      node = this.target(ref, at)
    }
    return node
  }
}
