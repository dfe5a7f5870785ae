/**
 * The `policies` of a policy side-service (ext authz, rate limit): upstream's
 * `SimpleLocalBackendPolicies`, as far as a side-service call can honour them. `backendTLS` and
 * `requestHeaderModifier` apply (GrpcUnary.ts; HTTP ext authz); the rest is rejected by name.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import { opt, unsupported } from "../config/Fields.ts"
import * as BackendTls from "../policies/BackendTls.ts"
import * as HeaderModifier from "../policies/HeaderModifier.ts"

/** The schema for `<owner>.policies`, described as the policies of `service` (e.g. "the authorization service"). */
export const schema = (owner: string, service: string) =>
  Schema.Struct({
    requestHeaderModifier: opt(HeaderModifier.Config, "Header edits of the calls to the service (gRPC: `add`/`set` become call metadata)."),
    transformations: unsupported(`${owner}.policies.transformations`),
    backendTLS: opt(BackendTls.Config, `TLS used when connecting to ${service}.`),
    backendAuth: unsupported(`${owner}.policies.backendAuth`),
    http: unsupported(`${owner}.policies.http`),
    tcp: unsupported(`${owner}.policies.tcp`),
    backendTunnel: unsupported(`${owner}.policies.backendTunnel`)
  }).annotate({ description: `Policies used when connecting to ${service}.` })
