/**
 * Agent-card rewriting: the endpoint URLs an agent advertises point at the agent itself, which a
 * client behind the gateway cannot (and should not) reach, so they are re-anchored at the URL the
 * client used to fetch the card.
 *
 * Every advertised http(s) endpoint is rewritten: v0.3 `url` and `additionalInterfaces[].url`,
 * v1.0 `supportedInterfaces[].url` (a "hybrid" card that carries both shapes gets both). A URL's
 * path relative to the agent's base (where the backend serves the card, minus the well-known
 * suffix) is kept and put under the gateway's base, so with a prefix `urlRewrite` the route's
 * prefix comes back: card at backend `/.well-known/agent-card.json`, fetched as
 * `https://gw.example/api/.well-known/agent-card.json`, turns `http://agent:9999/a2a/jsonrpc`
 * into `https://gw.example/api/a2a/jsonrpc`. A URL outside the agent's base is anchored at the
 * gateway base itself (what upstream does with every v0.3 `url`). Non-http URLs (a gRPC
 * `host:port`) are left alone: the gateway does not carry them.
 *
 * A card signature (v0.3+ `signatures`, JWS over the canonical card) no longer verifies once a
 * URL changed; passing it on would make a verifying client reject the card, or worse teach
 * clients to ignore failures (security.md §3). Stale signatures are therefore removed, and the
 * caller logs it; a card whose URLs were already the gateway's keeps its signatures.
 *
 * @since 0.1.0
 */
import * as Json from "../shared/Json.ts"
import { field } from "./Protocol.ts"

/**
 * Largest agent card read. A card is a small JSON document (a public guide suggests 1 MiB as
 * the cap, security.md §3); a larger answer fails as `processing failed` instead of being
 * buffered without bound.
 */
export const MAX_CARD_BYTES = 1024 * 1024

export interface Anchor {
  /** The agent's URL at the gateway: scheme, authority and path prefix, without trailing `/`. */
  readonly gatewayBase: string
  /** The agent's base path at the backend (`""` for the root), without trailing `/`. */
  readonly backendBase: string
}

export type Result =
  | { readonly _tag: "Rewritten"; readonly bytes: Uint8Array; readonly strippedSignatures: number }
  | { readonly _tag: "Invalid"; readonly detail: string }

const invalid = (detail: string): Result => ({ _tag: "Invalid", detail })

const isObject = (value: unknown): value is object => typeof value === "object" && value !== null && !Array.isArray(value)

const EXPLICIT_PATH = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*\//i

/** The endpoint re-anchored at the gateway, or the URL itself when it is not an http(s) URL. */
export const reanchor = (url: string, anchor: Anchor): string => {
  const parsed = URL.parse(url)
  if (parsed === null || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) return url
  const path = parsed.pathname
  const base = anchor.backendBase
  let rest: string
  if (base === "") rest = path
  else if (path === base || (path.startsWith(base) && path.charCodeAt(base.length) === 47)) rest = path.slice(base.length)
  else rest = ""
  // `http://agent:9999` has the URL path "/" but names no path: keep it that way.
  if (rest === "/" && !EXPLICIT_PATH.test(url)) rest = ""
  return anchor.gatewayBase + rest + parsed.search + parsed.hash
}

/** Rewrites `url` in every interface object of `list`; answers whether any changed. */
const rewriteInterfaces = (list: unknown, anchor: Anchor): boolean => {
  if (!Array.isArray(list)) return false
  let changed = false
  for (const entry of list) {
    if (!isObject(entry)) continue
    const url = field(entry, "url")
    if (typeof url !== "string") continue
    const next = reanchor(url, anchor)
    if (next !== url) {
      Reflect.set(entry, "url", next)
      changed = true
    }
  }
  return changed
}

/** Parses, rewrites and re-serialises a card; `Invalid` when it is not a card this can rewrite. */
export const rewrite = (bytes: Uint8Array, anchor: Anchor): Result => {
  let card: unknown
  try {
    card = Json.parseBounded(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"))
  } catch {
    return invalid("agent card is not valid JSON")
  }
  if (!isObject(card)) return invalid("agent card is not a JSON object")
  const url = field(card, "url")
  const supported = field(card, "supportedInterfaces")
  if (url !== undefined && typeof url !== "string") return invalid("agent card url is not a string")
  if (supported !== undefined && !Array.isArray(supported)) return invalid("agent card supportedInterfaces is not a list")
  if (url === undefined && supported === undefined) return invalid("agent card has neither url nor supportedInterfaces")
  let changed = false
  if (typeof url === "string") {
    const next = reanchor(url, anchor)
    if (next !== url) {
      Reflect.set(card, "url", next)
      changed = true
    }
  }
  if (rewriteInterfaces(field(card, "additionalInterfaces"), anchor)) changed = true
  if (rewriteInterfaces(supported, anchor)) changed = true
  let strippedSignatures = 0
  const signatures = field(card, "signatures")
  if (changed && signatures !== undefined) {
    strippedSignatures = Array.isArray(signatures) ? signatures.length : 1
    Reflect.deleteProperty(card, "signatures")
  }
  return { _tag: "Rewritten", bytes: Buffer.from(JSON.stringify(card), "utf8"), strippedSignatures }
}

/**
 * The agent's base path from the path its card was requested at: the well-known suffix
 * removed, or, for a card served elsewhere (`/agent-card` rewritten to the well-known path),
 * the card document's directory. Never ends with `/`.
 */
export const basePath = (path: string, suffix: string | undefined): string => {
  if (suffix !== undefined && path.endsWith(suffix)) return path.slice(0, path.length - suffix.length)
  const slash = path.lastIndexOf("/")
  return slash <= 0 ? "" : path.slice(0, slash)
}
