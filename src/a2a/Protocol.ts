/**
 * What the gateway knows of the A2A wire: which requests are agent-card fetches, which are
 * JSON-RPC calls, and the method vocabularies of both protocol generations (v0.3 slash names,
 * v1.0 PascalCase names; v0.1/v0.2 `tasks/send*` too, as older agents still use them). Nothing
 * here allocates per request beyond the method string it returns.
 *
 * @since 0.1.0
 */
import * as Json from "../shared/Json.ts"

/** Well-known card paths: `agent.json` up to v0.2, `agent-card.json` from v0.3 on. */
export const CARD_SUFFIXES: ReadonlyArray<string> = ["/.well-known/agent-card.json", "/.well-known/agent.json"]

/** The agent-card suffix `path` ends with, or undefined. */
export const cardSuffix = (path: string): string | undefined => {
  for (const suffix of CARD_SUFFIXES) if (path.endsWith(suffix)) return suffix
  return undefined
}

/** What a JSON-RPC method does, for telemetry: the generation it belongs to and what it answers with. */
export interface MethodInfo {
  readonly version: "0.2" | "0.3" | "1.0"
  /** The answer is an SSE stream of events (never inspected). */
  readonly streaming: boolean
  /** A successful result is a Task (v1.0 results carry no `kind`, so this names it). */
  readonly returnsTask: boolean
}

const info = (version: MethodInfo["version"], streaming: boolean, returnsTask: boolean): MethodInfo => ({ version, streaming, returnsTask })

/** Every method of A2A v0.3 and v1.0 JSON-RPC (plus the v0.2 names some agents still serve). */
export const METHODS: ReadonlyMap<string, MethodInfo> = new Map<string, MethodInfo>([
  // v0.3 (specification §7, JSON-RPC binding)
  ["message/send", info("0.3", false, false)],
  ["message/stream", info("0.3", true, false)],
  ["tasks/get", info("0.3", false, true)],
  ["tasks/cancel", info("0.3", false, true)],
  ["tasks/resubscribe", info("0.3", true, false)],
  ["tasks/pushNotificationConfig/set", info("0.3", false, false)],
  ["tasks/pushNotificationConfig/get", info("0.3", false, false)],
  ["tasks/pushNotificationConfig/list", info("0.3", false, false)],
  ["tasks/pushNotificationConfig/delete", info("0.3", false, false)],
  ["agent/getAuthenticatedExtendedCard", info("0.3", false, false)],
  // v0.2 and earlier
  ["tasks/send", info("0.2", false, true)],
  ["tasks/sendSubscribe", info("0.2", true, false)],
  // v1.0 (specification §9, JSON-RPC binding: the gRPC method names)
  ["SendMessage", info("1.0", false, false)],
  ["SendStreamingMessage", info("1.0", true, false)],
  ["GetTask", info("1.0", false, true)],
  ["ListTasks", info("1.0", false, false)],
  ["CancelTask", info("1.0", false, true)],
  ["SubscribeToTask", info("1.0", true, false)],
  ["CreateTaskPushNotificationConfig", info("1.0", false, false)],
  ["GetTaskPushNotificationConfig", info("1.0", false, false)],
  ["ListTaskPushNotificationConfigs", info("1.0", false, false)],
  ["DeleteTaskPushNotificationConfig", info("1.0", false, false)],
  ["GetExtendedAgentCard", info("1.0", false, false)]
])

/** What a JSON-RPC body without a readable `method` is logged as (upstream's word). */
export const UNKNOWN_METHOD = "unknown"

/**
 * Longest method name logged verbatim. Methods outside the vocabularies (extensions) are logged
 * as sent, so a client-chosen string is bounded before it reaches the log.
 */
export const MAX_METHOD_LENGTH = 128

/** `application/json`, `application/a2a+json`, any `+json` type, parameters ignored. */
export const isJsonMediaType = (contentType: string | undefined): boolean => {
  if (contentType === undefined) return false
  const semi = contentType.indexOf(";")
  const media = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase()
  return media === "application/json" || (media.startsWith("application/") && media.endsWith("+json"))
}

export const isEventStream = (contentType: string | undefined): boolean =>
  contentType !== undefined && contentType.trimStart().toLowerCase().startsWith("text/event-stream")

/** An own property of a JSON object, without prototype lookups (`__proto__` is just a key). */
export const field = (value: unknown, key: string): unknown =>
  typeof value === "object" && value !== null && !Array.isArray(value) ? Object.getOwnPropertyDescriptor(value, key)?.value : undefined

/**
 * The `method` of a JSON-RPC request body; `unknown` when the body is not JSON, not a single
 * request object (A2A has no batches), or the method is not a string of bounded length.
 */
export const methodOf = (body: Uint8Array): string => {
  let parsed: unknown
  try {
    parsed = Json.parseBounded(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("utf8"))
  } catch {
    return UNKNOWN_METHOD
  }
  const method = field(parsed, "method")
  return typeof method === "string" && method !== "" && method.length <= MAX_METHOD_LENGTH ? method : UNKNOWN_METHOD
}
