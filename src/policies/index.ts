/**
 * The policy registry: every implemented policy by its config key. The pipeline looks
 * policies up here; `PolicyOrder.ts` decides where each one runs.
 *
 * @since 0.1.0
 */
import type { Policy, PolicyKey } from "../pipeline/Policy.ts"
import * as A2a from "./A2a.ts"
import * as ApiKey from "./ApiKey.ts"
import * as Authorization from "./Authorization.ts"
import * as BasicAuth from "./BasicAuth.ts"
import * as JwtAuth from "./JwtAuth.ts"
import * as BackendAuth from "./BackendAuth.ts"
import * as McpAuthentication from "./McpAuthentication.ts"
import * as Cors from "./Cors.ts"
import * as DirectResponse from "./DirectResponse.ts"
import * as ExtAuthz from "./ExtAuthz.ts"
import * as HeaderModifier from "./HeaderModifier.ts"
import * as Csrf from "./Csrf.ts"
import * as LocalRateLimit from "./LocalRateLimit.ts"
import * as RemoteRateLimit from "./RemoteRateLimit.ts"
import * as RequestRedirect from "./RequestRedirect.ts"
import * as UrlRewrite from "./UrlRewrite.ts"
import * as Delay from "./Delay.ts"
import * as RequestMirror from "./RequestMirror.ts"
import * as Retry from "./Retry.ts"
import * as Timeout from "./Timeout.ts"
import * as Transformations from "./Transformations.ts"

export type Registry = { readonly [K in PolicyKey]?: Policy<K> }

export const registry: Registry = {
  cors: Cors.policy,
  authorization: Authorization.policy,
  jwtAuth: JwtAuth.policy,
  backendAuth: BackendAuth.policy,
  mcpAuthentication: McpAuthentication.policy,
  apiKey: ApiKey.policy,
  basicAuth: BasicAuth.policy,
  directResponse: DirectResponse.policy,
  extAuthz: ExtAuthz.policy,
  requestHeaderModifier: HeaderModifier.request,
  responseHeaderModifier: HeaderModifier.response,
  requestRedirect: RequestRedirect.policy,
  urlRewrite: UrlRewrite.policy,
  localRateLimit: LocalRateLimit.policy,
  remoteRateLimit: RemoteRateLimit.policy,
  csrf: Csrf.policy,
  timeout: Timeout.policy,
  retry: Retry.policy,
  requestMirror: RequestMirror.policy,
  delay: Delay.policy,
  transformations: Transformations.policy,
  a2a: A2a.policy
}

export { Cors, Csrf, DirectResponse, HeaderModifier, LocalRateLimit, RemoteRateLimit, RequestRedirect, UrlRewrite }
export { Delay, RequestMirror, Retry, Timeout }
export { Transformations }
export { Authorization }
export { ApiKey, BasicAuth, JwtAuth }
export { BackendAuth, McpAuthentication }
export { A2a }
export { ExtAuthz }
