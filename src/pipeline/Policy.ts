/**
 * The policy contract. A policy is a value: the config key it is attached under and
 * `make(config)`, run once per snapshot inside the snapshot's Scope, which returns a
 * middleware. A middleware wraps the rest of the pipeline: it may answer without calling
 * `next` (CORS preflight, direct response), fail with a `ProxyError` (auth, rate limits), or
 * map over `next` for response-side work (header modifiers). Order is not the policy's
 * business: `PolicyOrder.ts` fixes it for every route.
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { ConfigError } from "../config/ConfigError.ts"
import type { BackendPolicies, FilterOrPolicy } from "../config/LocalConfig.ts"
import type * as Ir from "../ir/Ir.ts"
import type { ProxyError } from "./ProxyError.ts"
import type { ProxyResponse } from "./ProxyResponse.ts"
import type { RequestContext } from "./RequestContext.ts"

export type Handler = Effect.Effect<ProxyResponse, ProxyError, RequestContext>

export type Middleware = (next: Handler) => Handler

/** Every policy key of a route's `policies:` block. */
export type PolicyKey = keyof FilterOrPolicy

/** Config value type of a policy key, with YAML `null` removed. */
export type PolicyConfig<K extends PolicyKey> = NonNullable<FilterOrPolicy[K]>

/**
 * A backend a policy calls on its own (a mirror target; later ext authz, rate-limit and
 * tracing services): upstream's `SimpleLocalBackendSerde` minus `service`.
 */
export interface BackendSpec {
  /** `host:port` (IP or DNS name). */
  readonly host?: string | null | undefined
  /** Name of a top-level `backends` entry. */
  readonly backend?: string | null | undefined
  /**
   * The reference's own connection policies (upstream `SimpleLocalBackendPolicies` of a policy
   * side-service: `backendTLS`, `requestHeaderModifier`…); they win over a named backend's.
   */
  readonly policies?: BackendPolicies | null | undefined
}

/** A backend a policy references, resolved: where it is and its merged policies. */
export interface ResolvedBackend {
  /** As logged: the `host:port` of a `{host}` spec, `/<name>` of a named backend. */
  readonly name: string
  readonly target: Ir.HostTarget
  readonly policies: BackendPolicies
}

/** Snapshot-wide settings a policy may need while it is built. */
export interface BuildEnv {
  /** `frontendPolicies.http.maxBufferSize`: the most a policy may buffer of a body. */
  readonly maxBufferSize: number
  /**
   * The call to a backend a policy references, built like a route's backend call (shared
   * upstream pools, the snapshot's connection settings, a named backend's own policies). The
   * handler sends the `ProxyRequest` it is provided with. Fails with a ConfigError at `path`
   * when the spec does not resolve.
   */
  readonly backendCall: (spec: BackendSpec, path: string) => Effect.Effect<Handler, ConfigError, Scope.Scope>
  /**
   * The same reference resolved but not built, for a policy that opens its own connections (a
   * gRPC side-service, `sidecar/GrpcUnary.ts`): the target and the merged policies (TLS).
   */
  readonly resolveBackend: (spec: BackendSpec, path: string) => Effect.Effect<ResolvedBackend, ConfigError>
}

export interface Policy<K extends PolicyKey> {
  readonly key: K
  readonly make: (
    config: PolicyConfig<K>,
    env: BuildEnv,
    /** Field path of this policy in the config, for error messages. */
    path: string
  ) => Effect.Effect<Middleware, ConfigError, Scope.Scope>
}

export const define = <K extends PolicyKey>(policy: Policy<K>): Policy<K> => policy
