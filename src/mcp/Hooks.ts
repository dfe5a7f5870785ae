/**
 * Seams for what other parts of the gateway add to MCP without touching the core:
 * - `Authorizer`: the `mcpAuthorization` policy (a per-item allow predicate). List results
 *   are filtered with it and calls to a denied item answer as if it did not exist.
 * - `McpLogFields`: what the access log and `agentgateway_mcp_requests_total` read from the
 *   request (`mcp.method.name`, `mcp.target`, `gen_ai.tool.name`, `mcp.session.id` as a digest of the session id).
 *
 * @since 0.1.0
 */
import type { ProxyRequest } from "../pipeline/RequestContext.ts"

export type ItemKind = "tool" | "prompt" | "resource"

export interface Item {
  readonly kind: ItemKind
  /** Target name. */
  readonly target: string
  /** The upstream's own name (tools, prompts) or URI (resources), unprefixed. */
  readonly name: string
}

/** Decides per item; must be cheap and must not throw (it runs per list entry). */
export type Authorizer = (item: Item, request: ProxyRequest) => boolean

export const allowAll: Authorizer = () => true

/** Recorded on `ProxyRequest.mcp` by the MCP frontend. */
export interface McpLogFields {
  /** `mcp.method.name` */
  method: string | undefined
  /** `mcp.target` */
  target: string | undefined
  /** `gen_ai.tool.name` (the upstream's name) */
  toolName: string | undefined
  /** `gen_ai.prompt.name` (the upstream's name) */
  promptName?: string | undefined
  /** `mcp.resource.uri` (the upstream's URI) */
  resourceUri?: string | undefined
  /** The session's id (CEL `mcp.sessionId`); never logged: it resumes the session. */
  sessionId: string | undefined
  /** `mcp.session.id` in the access log: `Session.logRef` of the id, set with it. */
  sessionRef?: string | undefined
}
