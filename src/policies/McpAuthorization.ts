/**
 * `mcpAuthorization`: CEL rules deciding, per MCP tool, prompt and resource, whether a client
 * may see and use it (agentgateway's `mcp/rbac.rs`, reference §2.8). The rules and the decision
 * are `authorization`'s (src/policies/Authorization.ts: the same rule shapes, order and error
 * strictness, compiled and decided by its `compile`/`allows`); only the subject differs: not
 * the request but one item, exposed to CEL as
 * `mcp.{methodName, sessionId, tool|prompt|resource: {target, name}}` next to the request's
 * roots (`request`, `source`, `jwt`, `apiKey`, …). `name` is the upstream's own, unprefixed
 * name (a resource's URI).
 *
 * It is a backend-class policy: set on a route (or `mcp.policies`) it is copied onto every
 * backend reference, and rule sets from the route and the backend accumulate
 * (state/PolicyMerge.ts), so a deny anywhere denies. It wraps no request: the MCP backend is
 * built with the compiled rules as its `Hooks.Authorizer` (state/Snapshot.ts), which every
 * frontend's federation consults (mcp/Fanout.ts): denied items are dropped from lists, and a
 * call to one answers HTTP 400 / JSON-RPC -32602 `Unknown tool: <name>` as if it did not exist.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as CelContext from "../cel/Context.ts"
import type { ConfigError } from "../config/ConfigError.ts"
import { req } from "../config/Fields.ts"
import { allowAll, type Authorizer, type Item } from "../mcp/Hooks.ts"
import type { ProxyRequest } from "../pipeline/RequestContext.ts"
import * as Authorization from "./Authorization.ts"

export const Config = Schema.Struct({
  rules: req(
    Schema.Array(Authorization.Rule),
    "CEL rules over `mcp.tool|prompt|resource.{target,name}` and the request: any true deny or false require hides the item; else any true allow shows it; with no allow rule, it is shown."
  )
}).annotate({ description: "CEL authorization of MCP tools, prompts and resources; a denied item is unlisted and unknown to calls." })
export type Config = typeof Config.Type

/** The `mcp` CEL root for one item (absent fields are left out, so reading them errors). */
const mcpRoot = (item: Item, request: ProxyRequest): Record<string, unknown> => {
  const out: Record<string, unknown> = { [item.kind]: { target: item.target, name: item.name } }
  const fields = request.mcp
  if (fields?.method !== undefined) out["methodName"] = fields.method
  if (fields?.sessionId !== undefined) out["sessionId"] = fields.sessionId
  return out
}

/**
 * The authorizer of one backend reference, built once per snapshot; `allowAll` without rules
 * (so single-target backends keep passing lists through untouched).
 */
export const authorizer = (config: Config | null | undefined, path: string): Effect.Effect<Authorizer, ConfigError> => {
  if (config === undefined || config === null || config.rules.length === 0) return Effect.succeed(allowAll)
  return Effect.map(Authorization.compile(config, path), (rules): Authorizer => (item, request) => {
    const previous = request.celExtensions?.mcp
    CelContext.attach(request, "mcp", mcpRoot(item, request))
    try {
      return Authorization.allows(rules, CelContext.forRequest(request))
    } finally {
      // The item is the subject of this decision only; later CEL (logs, headers) sees what was there.
      CelContext.attach(request, "mcp", previous)
    }
  })
}
