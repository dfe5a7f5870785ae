/**
 * The policy registry: every implemented policy by its config key. The pipeline looks
 * policies up here; `PolicyOrder.ts` decides where each one runs.
 *
 * @since 0.1.0
 */
import type { Policy, PolicyKey } from "../pipeline/Policy.ts"
import * as Cors from "./Cors.ts"
import * as DirectResponse from "./DirectResponse.ts"
import * as HeaderModifier from "./HeaderModifier.ts"

export type Registry = { readonly [K in PolicyKey]?: Policy<K> }

export const registry: Registry = {
  cors: Cors.policy,
  directResponse: DirectResponse.policy,
  requestHeaderModifier: HeaderModifier.request,
  responseHeaderModifier: HeaderModifier.response
}

export { Cors, DirectResponse, HeaderModifier }
