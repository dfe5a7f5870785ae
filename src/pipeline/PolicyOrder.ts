/**
 * THE place that fixes policy order (agentgateway's httpproxy.rs order). Lists read from the
 * outermost middleware to the innermost: earlier entries see the request first and the
 * response last. A policy missing from a list cannot run in that phase.
 *
 * @since 0.1.0
 */
import type { PolicyKey } from "./Policy.ts"

/**
 * Identity first, then the decision that reads it: authentication policies precede
 * authorization in both the gateway and the route phase.
 */
const authentication: ReadonlyArray<PolicyKey> = ["oidc", "jwtAuth", "basicAuth", "apiKey", "extAuthz", "authorization"]

/** Before route selection, on the listener's / gateway's own policies. */
export const gatewayPhase: ReadonlyArray<PolicyKey> = [
  // CORS first: a preflight must be answered before authentication can reject it, and
  // CORS headers are queued so they also reach responses rejected further in.
  "cors",
  ...authentication,
  "extProc",
  "transformations"
]

/** After route selection, on the merged route policies. */
export const routePhase: ReadonlyArray<PolicyKey> = [
  // The request timeout covers every policy after it and the upstream call.
  "timeout",
  "cors",
  // Upstream runs it in the jwtAuth slot; before every authentication policy here so route
  // `authorization` rules see its `jwt.*` claims. Its well-known documents answer before any
  // other authentication could reject them.
  "mcpAuthentication",
  ...authentication,
  // Rate limits count only requests that passed authentication and authorization.
  "localRateLimit",
  "remoteRateLimit",
  "buffer",
  "extProc",
  "transformations",
  "csrf",
  // Selected here (before any short-circuit below) so a direct response still gets it,
  // while a request rejected above does not.
  "responseHeaderModifier",
  "requestHeaderModifier",
  "urlRewrite",
  "requestRedirect",
  "delay",
  "directResponse",
  // Innermost: mirrors and retries wrap only the backend attempt.
  "requestMirror",
  "retry"
]

/** Per backend attempt, on the merged backend policies. */
export const backendPhase: ReadonlyArray<PolicyKey> = [
  "responseHeaderModifier",
  "authorization",
  "extAuthz",
  "backendAuth",
  "transformations",
  "requestHeaderModifier",
  "requestRedirect",
  "a2a"
]

/**
 * Backend policies that configure the backend instead of wrapping the request: they are
 * consumed where the backend is built (`Snapshot.buildBackend`: the upstream pool's TLS, the
 * MCP backend's authorizer), never built as middlewares.
 */
export const backendConnection: ReadonlySet<string> = new Set<string>(["backendTLS", "mcpAuthorization"])

/**
 * Route-level keys that are backend policies: written on a route, they are copied onto every
 * backend reference of that route (agentgateway's `split_policies_for_target`).
 */
export const backendClass: ReadonlySet<PolicyKey> = new Set<PolicyKey>([
  "backendTLS",
  "backendTunnel",
  "backendAuth",
  "mcpAuthorization",
  "mcpGuardrails",
  "a2a",
  "ai"
])
