/**
 * The one interface every MCP target implements (stdio, Streamable HTTP, and later legacy SSE
 * and OpenAPI): a JSON-RPC connection to one server for one gateway session. The session
 * (Session.ts) owns it through a Scope: closing the session's scope closes the connection
 * (kills the process group, DELETEs the upstream session). See src/mcp/README.md.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Ir from "../ir/Ir.ts"
import type { ProxyRequest } from "../pipeline/RequestContext.ts"
import type * as Headers from "../shared/headers.ts"
import type * as McpSchema from "./McpSchema.ts"

/** A failure talking to one target; surfaces as JSON-RPC -32603 with `message`. */
export class UpstreamError extends Data.TaggedError("UpstreamError")<{
  readonly target: string
  /** What the client may be told: text the gateway wrote, never a library's or a peer's. */
  readonly message: string
  /** An HTTP status the upstream answered with, relayed as is (§2.4 "Errors"). */
  readonly status?: number | undefined
  readonly body?: string | undefined
  /** The underlying cause (socket errors name internal addresses): for the gateway's log only. */
  readonly detail?: string | undefined
}> {}

/** What the client's JSON-RPC error says about a failed target (security.md: no upstream internals). */
export const clientMessage = (e: UpstreamError): string => `failed to send message: ${e.target}: ${e.message}`

/** Logs a failed target with its cause, which the client never sees. */
export const logFailure = (e: UpstreamError): Effect.Effect<void> =>
  Effect.logWarning(`MCP target ${e.target}: ${e.message}${e.detail === undefined ? "" : `: ${e.detail}`}`)

/** A connection-level failure: a fixed message for the client, the cause kept for the log. */
export const connectionFailed = (target: string, cause: unknown): UpstreamError =>
  new UpstreamError({ target, message: "upstream connection failed", detail: cause instanceof Error ? cause.message : String(cause) })

/** The Host header value and URL origin of an HTTP target (the scheme's default port left out). */
export const httpOrigin = (t: Ir.HostTarget, tls: boolean): { readonly host: string; readonly origin: string } => {
  const name = t.host.includes(":") ? `[${t.host}]` : t.host
  const host = t.port === (tls ? 443 : 80) ? name : `${name}:${t.port}`
  return { host, origin: `${tls ? "https" : "http"}://${host}` }
}

/** What a call carries besides the message. */
export interface CallContext {
  /** Downstream request headers to forward (HTTP transports; `mcp-session-id` etc. already removed). */
  readonly headers: Headers.HeaderMap | undefined
  /** The protocol version negotiated with the client (sent as MCP-Protocol-Version upstream). */
  readonly protocolVersion: string | undefined
  /** The downstream request, for per-target policies that read it (backendAuth passthrough: its validated JWT). */
  readonly request?: ProxyRequest | undefined
  /**
   * Set by a target policy that signs each request exactly as it is sent (backendAuth `aws`,
   * through TargetPolicies): the HTTP transports call it last, with the request they are about
   * to send, and send the headers it leaves. A failure means the request is not sent.
   */
  readonly sign?: ((request: OutgoingRequest) => Effect.Effect<void, UpstreamError>) | undefined
}

/**
 * Sends a request whose body is `text` (a JSON message): as is, or, when the call carries a
 * signer, as the exact bytes the signature covers, after signing (a signing failure sends nothing).
 */
export const sendSigned = <A>(
  call: CallContext | undefined,
  method: string,
  path: string,
  headers: Headers.HeaderMap,
  text: string,
  send: (body: string | Buffer) => Effect.Effect<A, UpstreamError>
): Effect.Effect<A, UpstreamError> => {
  const sign = call?.sign
  if (sign === undefined) return send(text)
  const body = Buffer.from(text, "utf8")
  return Effect.andThen(sign({ method, path, headers, body }), send(body))
}

/** An HTTP request a transport is about to send, for `CallContext.sign`. */
export interface OutgoingRequest {
  readonly method: string
  /** Path and query exactly as sent. */
  readonly path: string
  /** The headers to send (lower-case names, `host` set); the signer edits them in place. */
  readonly headers: Headers.HeaderMap
  /** The whole body as sent, or undefined for none. */
  readonly body: Uint8Array | undefined
}

/**
 * Backpressure from the consumer of server-initiated messages: when `deliver` returns a
 * function, the upstream stops reading and calls it with its `resume`.
 */
export type Pause = (resume: () => void) => void

/** Where an upstream hands what the server sends on its own. */
export interface Inbound {
  /** A server notification or server→client request (ids are the upstream's own). */
  readonly deliver: (message: McpSchema.Request | McpSchema.Notification) => Pause | undefined
  /** The connection is gone (process exited, stream failed). */
  readonly closed: (reason: string) => void
  /**
   * The context of a request the transport sends outside any client call: the DELETE that
   * ends an upstream session, the GET that opens a legacy SSE target's stream. It is the call
   * the session ends on (the client's DELETE, the end of a stateless request) when there is
   * one, else a context without a downstream request (idle expiry, shutdown, a legacy SSE
   * client's stream closing, connecting). Target policies edit it like any call's.
   */
  readonly ownCall: () => Effect.Effect<CallContext, UpstreamError>
  /**
   * Whether the session ends in this snapshot only: a config reload handed it to the next one,
   * which resumes it from its sealed id, so closing must keep the upstream session (no DELETE).
   */
  readonly handedOver: () => boolean
}

export interface Upstream {
  readonly target: string
  /** Sends a request (the upstream's own id space) and succeeds with the matching response. */
  readonly request: (
    method: string,
    params: Record<string, unknown> | undefined,
    call: CallContext
  ) => Effect.Effect<McpSchema.Response, UpstreamError>
  /** Sends a notification, or the client's response to a server→client request. */
  readonly send: (message: McpSchema.Notification | McpSchema.Response, call: CallContext) => Effect.Effect<void, UpstreamError>
  /** Opens the transport's own server→client channel (Streamable HTTP GET), if it has one. */
  readonly listen: (call: CallContext) => Effect.Effect<void>
  /** Whether the target can send server-initiated messages at all (false: OpenAPI, answered locally). */
  readonly serverMessages: boolean
  /**
   * What another replica needs to reconnect: the upstream session id (`null`: none, the
   * server is stateless), or `undefined` when the connection cannot be resumed (stdio).
   */
  readonly resumeToken: () => string | null | undefined
}

/** Opens a connection for a session; finalizers go to the given (session) Scope. */
export type Connect = (
  inbound: Inbound,
  /** A resume token from a sealed session id, when resuming on this replica. */
  resume: string | null | undefined
) => Effect.Effect<Upstream, UpstreamError, Scope.Scope>
