/**
 * The one error of the request path. Every reason maps to agentgateway's status and short
 * text body in `toResponse`, the only place statuses are decided; bodies never carry upstream
 * internals or stack traces (security.md §0.5 "Beat").
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Response from "./ProxyResponse.ts"

export type ProxyErrorReason =
  | { readonly _tag: "ListenerNotFound" }
  | { readonly _tag: "RouteNotFound" }
  | { readonly _tag: "NoValidBackends" }
  | { readonly _tag: "BackendNotFound"; readonly name: string }
  | { readonly _tag: "InvalidRequest"; readonly detail: string }
  | { readonly _tag: "UpstreamFailed"; readonly cause: unknown }
  | { readonly _tag: "UpstreamTimeout" }
  | { readonly _tag: "RequestTimeout" }
  | { readonly _tag: "RateLimited" }
  /** The remote rate limit service (or its Redis) failed and `failureMode` is failClosed. */
  | { readonly _tag: "RateLimitFailed" }
  | { readonly _tag: "AuthorizationFailed" }
  /**
   * An authentication policy rejected the credential; `detail` is a short fixed reason (never
   * the credential). Basic auth carries the realm of its `WWW-Authenticate` challenge.
   */
  | {
    readonly _tag: "AuthenticationFailed"
    readonly scheme: "jwt" | "apiKey" | "basic"
    readonly detail: string
    readonly realm?: string
  }
  | { readonly _tag: "CsrfFailed" }
  /**
   * `extAuthz` denied without a response of its own, or could not decide under `failureMode:
   * deny`; `status` when the gateway picks another status (413 for a body over
   * `includeRequestBody.maxRequestBytes`). `unavailable`: no decision under `failureMode:
   * {denyWithStatus}`, which answers upstream's "Authorization service unavailable".
   */
  | { readonly _tag: "ExtAuthzFailed"; readonly status?: number; readonly unavailable?: boolean }
  /**
   * `mcpAuthentication` rejected the request: RFC 9728 §5.1's 401 pointing the client at the
   * protected-resource metadata (`resourceMetadata` is that document's URL).
   */
  | { readonly _tag: "McpAuthenticationFailed"; readonly resourceMetadata: string }
  /** `backendAuth` could not produce the backend credential (token endpoint down, no AWS credentials). `cause` is for the log only. */
  | { readonly _tag: "BackendAuthFailed"; readonly cause: unknown }
  | { readonly _tag: "BodyTooLarge" }
  | { readonly _tag: "BodyTimeout" }
  /**
   * A protocol-aware policy could not process what the upstream answered (an A2A agent card
   * that is not JSON or too large); `detail` goes to the log, never to the client.
   */
  | { readonly _tag: "ProcessingFailed"; readonly detail: string }
  | { readonly _tag: "Internal"; readonly cause: unknown }

export class ProxyError extends Data.TaggedError("ProxyError")<{
  readonly reason: ProxyErrorReason
}> {}

/** The JSON body of an `mcpAuthentication` 401. */
export const MCP_UNAUTHORIZED_BODY = `{"error":"unauthorized","error_description":"JWT token required"}`

export const make = (reason: ProxyErrorReason): ProxyError => new ProxyError({ reason })

/** Metric / log `reason` label, named as agentgateway names them. */
export const reasonLabel = (error: ProxyError): string => {
  switch (error.reason._tag) {
    case "ListenerNotFound":
    case "RouteNotFound":
      return "NotFound"
    case "NoValidBackends":
    case "BackendNotFound":
      return "NoHealthyBackend"
    case "InvalidRequest":
      return "InvalidRequest"
    case "UpstreamFailed":
      return "UpstreamFailure"
    case "UpstreamTimeout":
    case "RequestTimeout":
      return "Timeout"
    case "RateLimited":
    case "RateLimitFailed":
      return "RateLimit"
    case "AuthorizationFailed":
    case "CsrfFailed":
      return "Authorization"
    case "McpAuthenticationFailed":
      return "JwtAuth"
    case "BackendAuthFailed":
      return "BackendAuthentication"
    case "ExtAuthzFailed":
      return "ExtAuth"
    case "AuthenticationFailed":
      return error.reason.scheme === "jwt" ? "JwtAuth" : error.reason.scheme === "apiKey" ? "APIKeyAuth" : "BasicAuth"
    case "BodyTooLarge":
    case "BodyTimeout":
      return "InvalidRequest"
    case "ProcessingFailed":
    case "Internal":
      return "Internal"
  }
}

export const toResponse = (error: ProxyError): Response.ProxyResponse => {
  const reason = error.reason
  switch (reason._tag) {
    case "ListenerNotFound":
      return Response.text(404, "listener not found")
    case "RouteNotFound":
      return Response.text(404, "route not found")
    case "NoValidBackends":
      return Response.text(500, "no valid backends")
    case "BackendNotFound":
      return Response.text(500, "backend does not exist")
    case "InvalidRequest":
      return Response.text(400, "invalid request")
    case "UpstreamFailed":
      return Response.text(503, "upstream call failed")
    case "UpstreamTimeout":
      return Response.text(504, "upstream call timeout")
    case "RequestTimeout":
      return Response.text(504, "request timeout")
    case "RateLimited":
      return Response.text(429, "rate limit exceeded")
    case "RateLimitFailed":
      return Response.text(500, "rate limit failed")
    case "AuthorizationFailed":
      return Response.text(403, "authorization failed")
    case "AuthenticationFailed": {
      if (reason.scheme === "jwt") return Response.text(401, `authentication failure: ${reason.detail}`)
      if (reason.scheme === "apiKey") return Response.text(401, `api key authentication failure: ${reason.detail}`)
      const res = Response.text(401, `basic authentication failure: ${reason.detail}`)
      // RFC 7617 §2: the realm is a quoted-string.
      res.headers["www-authenticate"] = `Basic realm="${(reason.realm ?? "Restricted").replace(/["\\]/g, "\\$&")}"`
      return res
    }
    case "CsrfFailed":
      return Response.text(403, "CSRF validation failed")
    case "ExtAuthzFailed":
      return Response.text(reason.status ?? 403, reason.unavailable === true ? "Authorization service unavailable" : "external authorization failed")
    case "McpAuthenticationFailed": {
      // Upstream's fixed body (mcp/auth.rs) for a missing and an invalid token alike.
      const res = Response.text(401, MCP_UNAUTHORIZED_BODY)
      res.headers["content-type"] = "application/json"
      res.headers["www-authenticate"] = `Bearer resource_metadata="${reason.resourceMetadata.replace(/["\\]/g, "\\$&")}"`
      return res
    }
    case "BackendAuthFailed":
      return Response.text(500, "backend authentication failed")
    case "BodyTooLarge":
      return Response.text(413, "request body too large")
    case "BodyTimeout": {
      // The rest of the body may never come: close rather than wait to drain it for keep-alive.
      const response = Response.text(408, "request body timeout")
      response.headers["connection"] = "close"
      return response
    }
    case "ProcessingFailed":
      return Response.text(503, "processing failed")
    case "Internal":
      return Response.text(500, "internal error")
  }
}
