/**
 * The MCP wire envelope the gateway needs, on Effect Schema: JSON-RPC 2.0 messages with only
 * the fields a multiplexer reads (`id`, `method`, `params`, `result`, `error`). Everything else
 * passes through untouched (the envelope is checked, the original object forwarded), so the gateway is agnostic of
 * protocol versions and of fields it does not route on.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import * as Json from "../shared/Json.ts"

/** Protocol versions a client may negotiate (MCP-Protocol-Version header and initialize). */
export const KNOWN_VERSIONS: ReadonlyArray<string> = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]
export const LATEST_VERSION = "2025-11-25"
/** The spec: a server without the header assumes this one. */
export const DEFAULT_VERSION = "2025-03-26"

export type Id = string | number

const IdSchema = Schema.Union([Schema.String, Schema.Number])
const Params = Schema.optional(Schema.Record(Schema.String, Schema.Unknown))

/** One JSON-RPC message, any direction. Batches (arrays) are rejected: removed in 2025-06-18. */
export const Message = Schema.Struct({
  jsonrpc: Schema.Literal("2.0"),
  id: Schema.optional(Schema.Union([IdSchema, Schema.Null])),
  method: Schema.optional(Schema.String),
  params: Params,
  result: Schema.optional(Schema.Unknown),
  error: Schema.optional(Schema.Struct({ code: Schema.Number, message: Schema.String, data: Schema.optional(Schema.Unknown) }))
})
export type Message = typeof Message.Type

/** Checks the envelope only; the original object is kept, so unknown fields pass through. */
/**
 * `Schema.is(Message)` written out: every message on the hot path goes through this, and the
 * generic check walks every key of `params` (≈ 1.3 % of the gateway's CPU per tools/call in
 * bench/mcp). Same acceptance as the schema; test/mcp checks both agree.
 */
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)
export const isMessage = (value: unknown): value is Message => {
  if (!isObject(value) || value["jsonrpc"] !== "2.0") return false
  const id = value["id"]
  if (id !== undefined && id !== null && typeof id !== "string" && typeof id !== "number") return false
  const method = value["method"]
  if (method !== undefined && typeof method !== "string") return false
  const params = value["params"]
  if (params !== undefined && !isObject(params)) return false
  const error = value["error"]
  if (error !== undefined) {
    if (!isObject(error) || typeof error["code"] !== "number" || typeof error["message"] !== "string") return false
  }
  return true
}

export interface Request {
  readonly jsonrpc: "2.0"
  readonly id: Id
  readonly method: string
  readonly params?: Record<string, unknown> | undefined
}
export interface Notification {
  readonly jsonrpc: "2.0"
  readonly method: string
  readonly params?: Record<string, unknown> | undefined
}
export interface ErrorObject {
  readonly code: number
  readonly message: string
  readonly data?: unknown
}
export interface Response {
  readonly jsonrpc: "2.0"
  readonly id: Id | null
  readonly result?: unknown
  readonly error?: ErrorObject | undefined
}

export type Classified =
  | { readonly _tag: "Request"; readonly message: Request }
  | { readonly _tag: "Notification"; readonly message: Notification }
  | { readonly _tag: "Response"; readonly message: Response }

const isRequest = (m: Message): m is Message & Request => m.method !== undefined && m.id !== undefined && m.id !== null
const isNotification = (m: Message): m is Message & Notification => m.method !== undefined && (m.id === undefined || m.id === null)
const isResponse = (m: Message): m is Message & Response => m.method === undefined && m.id !== undefined && (m.result !== undefined || m.error !== undefined)

/**
 * Decodes and classifies a parsed JSON value; undefined when it is not one JSON-RPC message.
 * The message is the parsed object itself, not a copy (two copies per call were ≈ 1 µs of a
 * `tools/call`): nothing else holds it.
 */
export const classify = (value: unknown): Classified | undefined => {
  if (Array.isArray(value)) return undefined
  if (!isMessage(value)) return undefined
  if (isRequest(value)) return { _tag: "Request", message: value }
  if (isNotification(value)) return { _tag: "Notification", message: value }
  if (isResponse(value)) return { _tag: "Response", message: value }
  return undefined
}

/**
 * Deepest nesting a message may have (`Json.MAX_NESTING`): checked on the text before it is
 * parsed, since `JSON.parse` of a deep document blocks the event loop, and messages are
 * re-serialised with `JSON.stringify`, which overflows the stack around 10,000 levels. Real MCP
 * payloads stay far below this.
 */
export const MAX_NESTING = Json.MAX_NESTING

const NOT_JSON: unique symbol = Symbol("NOT_JSON")

/** The parsed text, or NOT_JSON when it is not JSON or nested deeper than MAX_NESTING. */
const decode = (text: string): unknown => {
  if (Json.nestsDeeperThan(text, MAX_NESTING)) return NOT_JSON
  try {
    return JSON.parse(text)
  } catch {
    return NOT_JSON
  }
}

/** One JSON-RPC message from text; undefined when it is not JSON, not a message, or nested deeper than MAX_NESTING. */
export const parse = (text: string): Classified | undefined => {
  const value = decode(text)
  return value === NOT_JSON ? undefined : classify(value)
}

/** `parse` of a request body's bytes, decoded as UTF-8 in place (a view, not a copy). */
export const parseBytes = (bytes: Uint8Array): Classified | undefined =>
  parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"))

/**
 * What an upstream sent that is not a usable message. `id` is set when it still looks like the
 * answer to one of our requests (an object with an id and no method), so that request fails at
 * once instead of waiting for an answer that was already dropped.
 */
export interface Invalid {
  readonly _tag: "Invalid"
  readonly id: Id | undefined
}

/** `parse` for upstream traffic: a refused message that answers a request is reported, not silently dropped. */
export const parseUpstream = (text: string): Classified | Invalid => {
  const value = decode(text)
  const classified = value === NOT_JSON ? undefined : classify(value)
  if (classified !== undefined) return classified
  // Unparsed (too deep) text still tells whose answer it was, read without parsing it.
  const id = value === NOT_JSON ? Json.topLevelScalar(text, "id") : field(value, "id")
  const method = value === NOT_JSON ? Json.topLevelScalar(text, "method") : field(value, "method")
  const answers = (typeof id === "number" || typeof id === "string") && method === undefined
  return { _tag: "Invalid", id: answers ? id : undefined }
}

export const ErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** rmcp's code for an MCP-Protocol-Version header that contradicts the body. */
  HeaderMismatch: -32020,
  /** The SDK's generic server error (its 409 for a second GET stream). */
  ServerError: -32000
} as const

/** A SEP-2243 header value: `=?base64?<b64>?=` wraps one that is not safe printable ASCII. */
export const headerValue = (raw: string): string => {
  const wrapped = /^=\?base64\?([A-Za-z0-9+/]*={0,2})\?=$/.exec(raw)
  return wrapped === null ? raw : Buffer.from(wrapped[1]!, "base64").toString("utf8")
}

/** What `Mcp-Name` mirrors for a method: the tool's or prompt's name, the resource's URI (read, subscribe, unsubscribe); undefined for other methods. */
export const mirroredName = (method: string, params: Record<string, unknown> | undefined): unknown =>
  method === "tools/call" || method === "prompts/get"
    ? field(params, "name")
    : method === "resources/read" || method === "resources/subscribe" || method === "resources/unsubscribe"
    ? field(params, "uri")
    : undefined

/**
 * Why a request's `Mcp-Method`/`Mcp-Name` headers (SEP-2243) contradict its body, or undefined.
 * Either may be absent (clients before 2026-07-28 need not send them); one that is present must
 * match, so nothing that routes or authorizes on headers sees another method or name than the
 * gateway does.
 */
export const headerMismatch = (message: Classified, method: string | undefined, name: string | undefined): string | undefined => {
  if (method !== undefined) {
    const body = message._tag === "Response" ? undefined : message.message.method
    if (headerValue(method) !== body) return "Mcp-Method header does not match the request body"
  }
  if (name !== undefined) {
    const body = message._tag === "Response" ? undefined : mirroredName(message.message.method, message.message.params)
    if (typeof body !== "string" || headerValue(name) !== body) return "Mcp-Name header does not match the request body"
  }
  return undefined
}

export const errorResponse = (id: Id | null, code: number, message: string, data?: unknown): Response => ({
  jsonrpc: "2.0",
  id,
  error: data === undefined ? { code, message } : { code, message, data }
})

export const resultResponse = (id: Id | null, result: unknown): Response => ({ jsonrpc: "2.0", id, result })

/** A JSON object's field, if the value is an object. */
export const field = (value: unknown, key: string): unknown =>
  typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>)[key] : undefined

export const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)
