/**
 * MCP upstream calls in traces: for a traced request, every request the gateway sends to a
 * target (the client's call routed there, each leg of a fan-out, initialize per target) is one
 * CLIENT span `"{method} {target}"`, a child of the request's span, with `mcp.target`,
 * `mcp.method.name`, and `gen_ai.tool.name` (tools/call), `gen_ai.prompt.name` (prompts/get) or
 * `mcp.resource.uri` (resources/read) — the upstream's own, unprefixed names. HTTP targets get
 * the span's context in `traceparent` (and the client's `tracestate`); a JSON-RPC error answer
 * marks the span failed with `rpc.response.status_code`.
 *
 * Untraced requests pay one `undefined` check per upstream request; notifications, responses
 * and the server→client stream are passed through untouched.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Tracing from "../observability/Tracing.ts"
import type { CallContext, Connect, Upstream } from "./Upstream.ts"

const stringParam = (params: Record<string, unknown> | undefined, key: string): string | undefined => {
  const value = params?.[key]
  return typeof value === "string" ? value : undefined
}

const itemAttributes = (span: Tracing.ClientSpan, method: string, params: Record<string, unknown> | undefined): void => {
  switch (method) {
    case "tools/call":
      span.set("gen_ai.tool.name", stringParam(params, "name"))
      span.set("gen_ai.operation.name", "execute_tool")
      return
    case "prompts/get":
      span.set("gen_ai.prompt.name", stringParam(params, "name"))
      return
    case "resources/read":
    case "resources/subscribe":
    case "resources/unsubscribe":
      span.set("mcp.resource.uri", stringParam(params, "uri"))
  }
}

/** The call with the span's trace context in its forwarded headers (a copy: the request's own stay as they are). */
const withContext = (call: CallContext, span: Tracing.ClientSpan): CallContext => {
  const headers = { ...call.headers }
  headers["traceparent"] = span.traceparent()
  const state = span.trace.traceState
  if (state !== undefined) headers["tracestate"] = state
  else delete headers["tracestate"]
  return { ...call, headers }
}

export const traced = (upstream: Upstream): Upstream => {
  const target = upstream.target
  const tracedRequest = (trace: Tracing.RequestTrace, method: string, params: Record<string, unknown> | undefined, call: CallContext) =>
    Tracing.child(trace, `${method} ${target}`, (span) => {
      span.set("mcp.method.name", method)
      span.set("mcp.target", target)
      itemAttributes(span, method, params)
      return Effect.tap(upstream.request(method, params, withContext(call, span)), (response) =>
        Effect.sync(() => {
          const error = response.error
          if (error === undefined) return
          span.set("rpc.response.status_code", error.code)
          span.error = `JSON-RPC error ${error.code}`
        }))
    })
  return {
    target,
    request: (method, params, call) => {
      const trace = call.request?.trace
      return trace === undefined ? upstream.request(method, params, call) : tracedRequest(trace, method, params, call)
    },
    send: (message, call) => upstream.send(message, call),
    listen: (call) => upstream.listen(call),
    serverMessages: upstream.serverMessages,
    resumeToken: () => upstream.resumeToken()
  }
}

/** Every connection `connect` opens, traced. */
export const connect = (connect: Connect): Connect => (inbound, resume) => Effect.map(connect(inbound, resume), traced)
