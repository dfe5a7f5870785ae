/**
 * The standalone `config.yaml` of agentgateway as an Effect Schema: the single source of
 * truth for decoding (unknown fields are errors), for the generated
 * `schema/config.schema.json`, and for the typed model `Normalize` turns into the IR.
 *
 * Field names, shapes and defaults follow upstream's schema. Fields upstream accepts that this
 * gateway does not implement yet are declared with `unsupported(...)`, so a config using them
 * is rejected with a message naming the field instead of being half-applied.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import * as A2a from "../policies/A2a.ts"
import * as ApiKey from "../policies/ApiKey.ts"
import * as Authorization from "../policies/Authorization.ts"
import * as BasicAuth from "../policies/BasicAuth.ts"
import * as JwtAuth from "../policies/JwtAuth.ts"
import * as BackendAuth from "../policies/BackendAuth.ts"
import * as McpAuthentication from "../policies/McpAuthentication.ts"
import * as McpAuthorization from "../policies/McpAuthorization.ts"
import * as BackendTls from "../policies/BackendTls.ts"
import * as Cors from "../policies/Cors.ts"
import * as Delay from "../policies/Delay.ts"
import * as DirectResponse from "../policies/DirectResponse.ts"
import * as ExtAuthz from "../policies/ExtAuthz.ts"
import * as HeaderModifier from "../policies/HeaderModifier.ts"
import * as RequestMirror from "../policies/RequestMirror.ts"
import * as Retry from "../policies/Retry.ts"
import * as Timeout from "../policies/Timeout.ts"
import * as Transformations from "../policies/Transformations.ts"
import * as Csrf from "../policies/Csrf.ts"
import * as LocalRateLimit from "../policies/LocalRateLimit.ts"
import * as RemoteRateLimit from "../policies/RemoteRateLimit.ts"
import * as RequestRedirect from "../policies/RequestRedirect.ts"
import * as UrlRewrite from "../policies/UrlRewrite.ts"
import { DurationString, exactlyOneOf, opt, RegexString, req, unsupported } from "./Fields.ts"
import * as Duration from "./Duration.ts"

const Str = Schema.String
const Int = Schema.Int
const Port = Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 }))

// ---------------------------------------------------------------------------------------------
// Route matching
// ---------------------------------------------------------------------------------------------

export const PathMatch = Schema.Struct({
  exact: opt(Str, "Matches the request path exactly (no trailing-slash tolerance)."),
  pathPrefix: opt(Str, "Matches a path prefix on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apiary`."),
  regex: opt(RegexString, "Matches when the regular expression matches the whole path (anchored at both ends).")
}).check(exactlyOneOf(["exact", "pathPrefix", "regex"])).annotate({ description: "How the request path is matched." })

export const ValueMatch = Schema.Struct({
  exact: opt(Str, "Matches the value exactly."),
  regex: opt(RegexString, "Matches when the regular expression matches the whole value.")
}).check(exactlyOneOf(["exact", "regex"])).annotate({ description: "How a header or query value is matched." })

export const HeaderMatch = Schema.Struct({
  name: req(Str, "Header name (case-insensitive); pseudo-headers `:authority`, `:method`, `:scheme`, `:path` are allowed."),
  value: req(ValueMatch, "The value condition; any of the header's values may satisfy it.")
})

export const QueryMatch = Schema.Struct({
  name: req(Str, "Query parameter name (form-url-decoded)."),
  value: req(ValueMatch, "The value condition; a missing parameter never matches.")
})

export const RouteMatch = Schema.Struct({
  path: opt(PathMatch, "Path condition. Default: prefix `/`."),
  method: opt(Str, "HTTP method that must match exactly, e.g. `GET`."),
  headers: opt(Schema.Array(HeaderMatch), "Header conditions; all must match."),
  query: opt(Schema.Array(QueryMatch), "Query parameter conditions; all must match.")
})
export type RouteMatch = typeof RouteMatch.Type

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

const unsupportedPolicies = {
  requestRedirect: opt(RequestRedirect.Config, "Answers with a redirect instead of forwarding the request."),
  urlRewrite: opt(UrlRewrite.Config, "Rewrites the request's path or authority before forwarding."),
  requestMirror: opt(RequestMirror.Config, "Sends a fire-and-forget copy of a share of the requests (without body) to another backend."),
  mcpAuthorization: opt(McpAuthorization.Config, "CEL rules deciding which MCP tools, prompts and resources this route's MCP backends expose (accumulates with backend rules)."),
  mcpGuardrails: unsupported("policy mcpGuardrails"),
  authorization: opt(Authorization.Config, "CEL authorization rules for requests on this route (403 when denied)."),
  mcpAuthentication: opt(McpAuthentication.Config, "OAuth protected resource for MCP (RFC 9728): validates bearer JWTs (401 with `WWW-Authenticate: Bearer resource_metadata=…`) and serves the well-known metadata."),
  a2a: opt(A2a.Config, "Marks this route's traffic as A2A: agent-card URL rewriting and A2A telemetry (copied onto every backend reference)."),
  ai: unsupported("policy ai"),
  backendTLS: opt(BackendTls.Config, "TLS to the backends of this route (copied onto every backend reference)."),
  backendTunnel: unsupported("policy backendTunnel"),
  backendAuth: opt(BackendAuth.Config, "The credential presented to this route's backends (copied onto every backend reference): key, passthrough, aws, gcp, credentials."),
  localRateLimit: opt(LocalRateLimit.Config, "Local rate limits: token buckets kept in this process; 429 when empty."),
  remoteRateLimit: opt(RemoteRateLimit.Config, "Rate limits decided by an Envoy rate limit service (gRPC) or by token buckets in Redis; 429 when over the limit."),
  jwtAuth: opt(JwtAuth.Config, "Authenticates requests with JWT bearer tokens (401 when rejected)."),
  oidc: unsupported("policy oidc"),
  basicAuth: opt(BasicAuth.Config, "Authenticates requests with Basic Auth credentials from an htpasswd user database (401 when rejected)."),
  apiKey: opt(ApiKey.Config, "Authenticates requests with API keys (401 when rejected)."),
  extAuthz: opt(ExtAuthz.Config, "Asks an external authorization service (Envoy ext_authz over gRPC, or HTTP) whether the request may proceed."),
  extProc: unsupported("policy extProc"),
  transformations: opt(Transformations.Config, "CEL edits of the request (before forwarding) and the response: headers, pseudo-headers, body, metadata."),
  csrf: opt(Csrf.Config, "Rejects cross-origin state-changing requests (403) unless same-origin or trusted."),
  buffer: unsupported("policy buffer"),
  timeout: opt(Timeout.Config, "Deadlines for the request (504 `request timeout`) and for each backend attempt (504 `upstream call timeout`)."),
  retry: opt(Retry.Config, "Retries backend attempts that fail to connect or answer one of `codes`."),
  delay: opt(Delay.Config, "Injects a fixed delay before the request is forwarded (fault injection).")
} as const

/** Route-level `policies:` (upstream `FilterOrPolicy`): traffic policies and backend policies. */
export const FilterOrPolicy = Schema.Struct({
  requestHeaderModifier: opt(HeaderModifier.Config, "Adds, sets or removes request headers before forwarding."),
  responseHeaderModifier: opt(HeaderModifier.Config, "Adds, sets or removes response headers (also on direct responses)."),
  directResponse: opt(DirectResponse.Config, "Answers the request directly without calling a backend."),
  cors: opt(Cors.Config, "Cross-origin resource sharing: answers preflights and adds CORS headers."),
  ...unsupportedPolicies
}).annotate({ description: "Policies attached to a route (traffic policies and backend policies)." })
export type FilterOrPolicy = typeof FilterOrPolicy.Type

const gatewayPolicyFields = {
  cors: opt(Cors.Config, "Cross-origin resource sharing, evaluated before route selection."),
  oidc: unsupported("policy oidc"),
  jwtAuth: opt(JwtAuth.Config, "Authenticates requests with JWT bearer tokens, before route selection (401 when rejected)."),
  authorization: opt(Authorization.Config, "CEL authorization rules, evaluated before route selection (403 when denied)."),
  extAuthz: opt(ExtAuthz.Config, "Asks an external authorization service whether the request may proceed, before route selection."),
  extProc: unsupported("policy extProc"),
  transformations: opt(Transformations.Config, "CEL edits of the request and response, applied before route selection."),
  basicAuth: opt(BasicAuth.Config, "Authenticates requests with Basic Auth credentials, before route selection (401 when rejected)."),
  apiKey: opt(ApiKey.Config, "Authenticates requests with API keys, before route selection (401 when rejected).")
} as const

/** Listener / gateway `policies:` (upstream `LocalGatewayPolicy`), run before route selection. */
export const GatewayPolicy = Schema.Struct(gatewayPolicyFields).annotate({
  description: "Gateway-phase policies, evaluated before a route is selected."
})
export type GatewayPolicy = typeof GatewayPolicy.Type

/** Policies on a backend reference or named backend (upstream `LocalBackendPolicies`). */
export const BackendPolicies = Schema.Struct({
  requestHeaderModifier: opt(HeaderModifier.Config, "Adds, sets or removes request headers sent to this backend."),
  responseHeaderModifier: opt(HeaderModifier.Config, "Adds, sets or removes headers of this backend's responses."),
  transformations: opt(Transformations.Config, "CEL edits of the request sent to this backend and of its responses."),
  backendTLS: opt(BackendTls.Config, "TLS used when connecting to this backend."),
  backendAuth: opt(BackendAuth.Config, "The credential presented to this backend: key, passthrough (the validated JWT), aws (SigV4), gcp, credentials."),
  http: unsupported("policy http"),
  tcp: unsupported("policy tcp"),
  backendTunnel: unsupported("policy backendTunnel"),
  requestRedirect: opt(RequestRedirect.Config, "Answers with a redirect instead of forwarding to this backend."),
  health: unsupported("policy health"),
  extAuthz: opt(ExtAuthz.Plain, "Asks an external authorization service whether the request may proceed, after this backend is selected."),
  authorization: opt(Authorization.Config, "CEL authorization rules, evaluated after this backend is selected (403 when denied)."),
  mcpAuthorization: opt(McpAuthorization.Config, "CEL rules deciding which MCP tools, prompts and resources this MCP backend exposes (accumulates with route rules)."),
  mcpGuardrails: unsupported("policy mcpGuardrails"),
  a2a: opt(A2a.Config, "Marks this backend's traffic as A2A: agent-card URL rewriting and A2A telemetry."),
  inferenceRouting: unsupported("policy inferenceRouting"),
  sessionAffinity: unsupported("policy sessionAffinity"),
  ai: unsupported("policy ai")
}).annotate({ description: "Policies applied when calling a backend (first found wins per policy)." })
export type BackendPolicies = typeof BackendPolicies.Type

// ---------------------------------------------------------------------------------------------
// MCP (shape only; the runtime arrives with the MCP gateway)
// ---------------------------------------------------------------------------------------------

const McpTargetConnection = Schema.Struct({
  host: opt(Str, "URL (`https://example.com/mcp`) or `host` with `port` and `path`."),
  port: opt(Port, "Port, when `host` is a bare host name."),
  path: opt(Str, "Path on the target."),
  backend: opt(Str, "Name of a top-level host backend to reach the target through (its host and its policies, such as backendTLS).")
})

/** A field upstream rejects on MCP targets, with its reason. */
const rejected = (what: string, reason: string) =>
  Schema.optionalKey(Schema.Null.annotate({ description: `${what}: not allowed here (${reason})`, message: `${what} is not allowed on an MCP target: ${reason}` }))

const TARGET_WIDE = "it applies to the full target set; set it on the route, the MCP backend or `mcp.policies`, or as a top-level policy targeting the backend with `section: <target name>`"

/** Policies on one MCP target (upstream `SimpleLocalBackendPolicies`): they shape its HTTP requests only. */
export const McpTargetPolicies = Schema.Struct({
  requestHeaderModifier: opt(HeaderModifier.Config, "Adds, sets or removes headers of the requests sent to this target (after the backend's own)."),
  transformations: unsupported("policy transformations on MCP targets"),
  backendTLS: opt(BackendTls.Config, "TLS used when connecting to this target (replaces the MCP backend's `backendTLS` for it)."),
  backendAuth: opt(BackendAuth.Config, "The credential presented to this target: key, passthrough, gcp, aws (each request signed as sent), credentials."),
  http: unsupported("policy http"),
  tcp: unsupported("policy tcp"),
  backendTunnel: unsupported("policy backendTunnel"),
  mcpAuthorization: rejected("mcpAuthorization", TARGET_WIDE),
  mcpGuardrails: rejected("mcpGuardrails", TARGET_WIDE)
}).annotate({ description: "Transport policies of one MCP target." })
export type McpTargetPolicies = typeof McpTargetPolicies.Type

export const McpTarget = Schema.Struct({
  name: req(
    Str.check(Schema.isPattern(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/)),
    "Target name; prefixes tool and prompt names when multiplexing (`_` and `+` are reserved)."
  ),
  stdio: opt(
    Schema.Struct({
      cmd: req(Str, "Command to run."),
      args: opt(Schema.Array(Str), "Arguments."),
      env: opt(Schema.Record(Str, Str), "Extra environment variables."),
      clear_env: opt(Schema.Boolean, "Start from an empty environment.")
    }),
    "An MCP server run as a child process speaking stdio."
  ),
  mcp: opt(McpTargetConnection, "A Streamable HTTP MCP server."),
  sse: opt(McpTargetConnection, "A legacy SSE MCP server."),
  openapi: opt(
    Schema.Struct({
      schema: req(
        Schema.Union([
          Schema.Struct({ file: req(Str, "Path of a JSON or YAML OpenAPI 3 document, read when the config is loaded.") }),
          Str.annotate({ description: "The OpenAPI 3 document itself, as JSON or YAML text." }),
          Schema.Struct({ url: req(Str, "http(s) URL the OpenAPI 3 document is fetched from when the config is loaded.") })
        ]),
        "The OpenAPI document: `{file: path}`, an inline JSON/YAML string, or `{url: u}`."
      ),
      host: opt(Str, "Upstream host of the REST API: `host:port`, or a host name with `port` and `path`."),
      port: opt(Port, "Upstream port, with a bare `host` (then `path` is required too)."),
      path: opt(Str, "Request path, with `host` and `port`, or with `backend`."),
      backend: opt(Str, "Top-level backend to call.")
    }).check(exactlyOneOf(["host", "backend"])).check(
      Schema.makeFilter((t: { readonly host?: string | null; readonly port?: number | null; readonly path?: string | null }) => {
        const set = (v: unknown) => v !== undefined && v !== null
        if (!set(t.host) || set(t.port) === set(t.path)) return undefined
        return set(t.port) ? "port requires path (host, port and path go together)" : "path requires port (host, port and path go together)"
      })
    ),
    "A REST API whose operations become MCP tools."
  ),
  policies: opt(McpTargetPolicies, "Connection policies for this target's HTTP requests (not on stdio targets).")
}).check(exactlyOneOf(["stdio", "mcp", "sse", "openapi"]))

const mcpBackendFields = {
  targets: req(Schema.Array(McpTarget), "The MCP servers federated behind this endpoint."),
  statefulMode: opt(Schema.Literals(["stateless", "stateful"]), "Session handling. Default: stateful."),
  prefixMode: opt(Schema.Literals(["conditional", "always", "never"]), "When tool names get a `<target>_` prefix. Default: conditional."),
  failureMode: opt(Schema.Literals(["failClosed", "failOpen"]), "Whether one failing target fails the request. Default: failClosed."),
  dnsRebindingProtection: opt(Schema.Boolean, "Reject requests whose Host/Origin is not local.")
} as const

export const McpBackend = Schema.Struct(mcpBackendFields)
export type McpBackend = typeof McpBackend.Type

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

const backendKinds = ["host", "backend", "service", "mcp", "ai", "aws", "dynamic", "internal", "routeGroup"] as const

/** A backend reference inside a route (upstream `LocalRouteBackend`). */
export const RouteBackend = Schema.Struct({
  host: opt(Str, "Upstream address `host:port` (IP or DNS name)."),
  backend: opt(Str, "Name of a top-level `backends` entry."),
  mcp: opt(McpBackend, "An MCP multiplexer over one or more targets."),
  service: unsupported("service backends"),
  ai: unsupported("ai backends (LLM gateway)"),
  aws: unsupported("aws backends"),
  dynamic: unsupported("dynamic backends"),
  internal: unsupported("internal backends"),
  routeGroup: unsupported("routeGroup delegation"),
  weight: opt(Int.check(Schema.isGreaterThanOrEqualTo(0)), "Relative weight for load balancing. Default: 1."),
  policies: opt(BackendPolicies, "Policies applied when calling this backend from this route.")
}).check(exactlyOneOf(backendKinds))
export type RouteBackend = typeof RouteBackend.Type

/** A named, reusable backend (upstream `FullLocalBackend`). */
export const NamedBackend = Schema.Struct({
  name: req(Str, "Name the backend is referenced by (`backend: <name>`)."),
  host: opt(Str, "Upstream address `host:port`."),
  mcp: opt(McpBackend, "An MCP multiplexer."),
  ai: unsupported("ai backends (LLM gateway)"),
  aws: unsupported("aws backends"),
  internal: unsupported("internal backends"),
  policies: opt(BackendPolicies, "Policies applied whenever this backend is called.")
}).check(exactlyOneOf(["host", "mcp", "ai", "aws", "internal"]))
export type NamedBackend = typeof NamedBackend.Type

// ---------------------------------------------------------------------------------------------
// Routes, listeners, binds
// ---------------------------------------------------------------------------------------------

const routeFields = {
  name: opt(Str, "Route name. Default: `route<index>`."),
  namespace: opt(Str, "Route namespace. Default: `default`."),
  ruleName: opt(Str, "Rule name within the route, used in logs and metrics."),
  hostnames: opt(Schema.Array(Str), "Host names the route serves: exact or `*.suffix`. Default: all."),
  matches: opt(Schema.Array(RouteMatch), "Match conditions; the route matches if any entry matches. Default: prefix `/`."),
  policies: opt(FilterOrPolicy, "Policies applied to requests on this route."),
  backends: opt(Schema.Array(RouteBackend), "Where matching requests go, chosen by weight.")
} as const

export const Route = Schema.Struct(routeFields)
export type Route = typeof Route.Type

export const TlsServer = Schema.Struct({
  cert: opt(Str, "Path to the PEM certificate chain."),
  key: opt(Str, "Path to the PEM private key."),
  root: opt(Str, "Path to a PEM CA bundle; when set, clients must present a certificate it signed (mTLS)."),
  mode: opt(Schema.Literals(["static", "dynamicCa"]), "Certificate source. Only `static` (the default) is supported yet."),
  cipherSuites: opt(Schema.Array(Str), "Allowed cipher suites (OpenSSL names), in order of preference."),
  minTLSVersion: opt(Schema.Literals(["TLS_V1_2", "TLS_V1_3"]), "Minimum TLS version."),
  minTlsVersion: opt(Schema.Literals(["TLS_V1_2", "TLS_V1_3"]), "Minimum TLS version (alias)."),
  maxTLSVersion: opt(Schema.Literals(["TLS_V1_2", "TLS_V1_3"]), "Maximum TLS version."),
  maxTlsVersion: opt(Schema.Literals(["TLS_V1_2", "TLS_V1_3"]), "Maximum TLS version (alias)."),
  spiffe: unsupported("tls.spiffe"),
  keyExchangeGroups: unsupported("tls.keyExchangeGroups")
}).annotate({ description: "Server TLS settings." })
export type TlsServer = typeof TlsServer.Type

export const ListenerProtocol = Schema.Literals(["HTTP", "HTTPS", "TLS", "TCP", "HBONE"])

export const Listener = Schema.Struct({
  name: opt(Str, "Listener name. Default: `listener<index>`."),
  namespace: opt(Str, "Listener namespace."),
  hostname: opt(Str, "Host this listener serves: exact, `*.suffix`, or empty for all."),
  protocol: opt(ListenerProtocol, "HTTP (default) or HTTPS. TLS, TCP and HBONE are not supported yet."),
  tls: opt(TlsServer, "TLS settings, required for HTTPS."),
  routes: opt(Schema.Array(Route), "HTTP routes."),
  tcpRoutes: unsupported("tcpRoutes"),
  policies: opt(GatewayPolicy, "Gateway-phase policies for this listener.")
})
export type Listener = typeof Listener.Type

export const Bind = Schema.Struct({
  port: opt(Port, "Port to listen on."),
  listeners: req(Schema.Array(Listener), "Listeners sharing this port, selected by Host."),
  tunnelProtocol: opt(
    Schema.Literals(["direct", "hboneWaypoint", "hboneGateway", "proxy", "connect"]),
    "How connections arrive. Only `direct` (the default) is supported yet."
  ),
  mode: opt(Schema.Literals(["standard", "internal"]), "Bind mode. Only `standard` (the default) is supported yet.")
})
export type Bind = typeof Bind.Type

// ---------------------------------------------------------------------------------------------
// gateways + routes (the newer form)
// ---------------------------------------------------------------------------------------------

export const GatewayRefs = Schema.Union([Str, Schema.Array(Str)]).annotate({
  description: "Gateway names (`name` or `name/listener`), one or a list."
})

const GatewayProtocol = Schema.Literals(["HTTP", "HTTPS", "TCP", "TLS"])

export const GatewayListener = Schema.Struct({
  name: opt(Str, "Listener name."),
  hostname: opt(Str, "Host this listener serves."),
  protocol: opt(GatewayProtocol, "HTTP (default) or HTTPS."),
  tls: opt(TlsServer, "TLS settings."),
  ...gatewayPolicyFields
})
export type GatewayListener = typeof GatewayListener.Type

export const Gateway = Schema.Struct({
  port: opt(Port, "Port to listen on (required)."),
  protocol: opt(GatewayProtocol, "HTTP (default) or HTTPS."),
  tls: opt(TlsServer, "TLS settings."),
  listeners: opt(Schema.Array(GatewayListener), "Several listeners on this port, selected by Host."),
  ...gatewayPolicyFields
})
export type Gateway = typeof Gateway.Type

export const AttachedRoute = Schema.Struct({
  gateways: opt(GatewayRefs, "Gateways (or `gateway/listener`) this route attaches to. Default: `default`."),
  ...routeFields
})
export type AttachedRoute = typeof AttachedRoute.Type

// ---------------------------------------------------------------------------------------------
// Targeted policies
// ---------------------------------------------------------------------------------------------

export const PolicyTarget = Schema.Struct({
  gateway: opt(
    Schema.Struct({
      gatewayName: req(Str, "Gateway name (`default` for binds)."),
      gatewayNamespace: req(Str, "Gateway namespace (`default`)."),
      listenerName: opt(Str, "Restrict to one listener."),
      port: opt(Port, "Restrict to one port.")
    }),
    "Targets a gateway or one of its listeners."
  ),
  route: opt(
    Schema.Struct({
      name: req(Str, "Route name."),
      namespace: req(Str, "Route namespace."),
      ruleName: opt(Str, "Restrict to one rule."),
      kind: opt(Str, "Route kind.")
    }),
    "Targets a route."
  ),
  backend: opt(
    Schema.Struct({
      backend: opt(
        Schema.Struct({
          name: req(Str, "Backend name."),
          namespace: req(Str, "Backend namespace."),
          section: opt(Str, "Section.")
        }),
        "A named backend."
      ),
      service: unsupported("service policy targets")
    }),
    "Targets a backend."
  ),
  listenerSet: unsupported("listenerSet policy targets")
}).check(exactlyOneOf(["gateway", "route", "backend", "listenerSet"]))

export const TargetedPolicy = Schema.Struct({
  name: req(Schema.Struct({ name: req(Str, "Policy name."), namespace: req(Str, "Policy namespace.") }), "Policy identity."),
  target: req(PolicyTarget, "What the policy attaches to."),
  phase: opt(Schema.Literals(["route", "gateway"]), "Route (default) or gateway phase."),
  policy: req(FilterOrPolicy, "The policy; exactly one field.")
})
export type TargetedPolicy = typeof TargetedPolicy.Type

// ---------------------------------------------------------------------------------------------
// frontendPolicies, config, mcp shorthand
// ---------------------------------------------------------------------------------------------

export const AccessLogPolicy = Schema.Struct({
  filter: opt(Str, "CEL expression deciding whether a request is logged (an error or a non-boolean: not logged)."),
  add: opt(Schema.Record(Str, Str), "Fields to add, each a CEL expression (an error or null leaves the field out); a name that is also a default field replaces it."),
  remove: opt(Schema.Array(Str), "Default fields to leave out of the access log."),
  otlp: unsupported("accessLog.otlp"),
  database: unsupported("accessLog.database")
})

/** A sampling rate: `true`/`false`, a ratio 0.0–1.0, or the same as a string (CEL is not supported yet). */
export const TracingSampling = Schema.Union([
  Schema.Boolean,
  Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1 })),
  Str.check(
    Schema.makeFilter((s: string) => {
      const t = s.trim()
      if (t === "true" || t === "false") return undefined
      const n = Number(t)
      return (t !== "" && Number.isFinite(n) && n >= 0 && n <= 1) ||
        `sampling "${s}": expected true, false or a ratio between 0.0 and 1.0 (CEL sampling expressions are not supported yet by effect-agentgateway)`
    })
  )
]).annotate({ description: "true/false, or a ratio between 0.0 and 1.0." })

export const RawTracing = Schema.Struct({
  otlpEndpoint: opt(
    Str.check(Schema.makeFilter((s: string) => /^https?:\/\/[^/]/.test(s) || `invalid OTLP endpoint "${s}" (expected an http:// or https:// URL)`)),
    "OTLP collector URL, e.g. `http://localhost:4317`. Tracing is off without it."
  ),
  headers: opt(Schema.Record(Str, Str), "Headers (gRPC metadata) sent with every export, e.g. an API key."),
  otlpProtocol: opt(Schema.Literals(["grpc", "http"]), "OTLP transport. Default: grpc."),
  fields: opt(
    Schema.Struct({
      add: opt(Schema.Record(Str, Str), "Span attributes to add, each a CEL expression (null or an error adds nothing); `span.name` renames the span."),
      remove: opt(Schema.Array(Str), "Default span attributes to leave out.")
    }),
    "Custom span attributes (deprecated upstream in favour of `frontendPolicies.tracing.attributes`/`remove`)."
  ),
  randomSampling: opt(TracingSampling, "Share of requests without an incoming trace that start one. Default: false."),
  clientSampling: opt(TracingSampling, "Share of requests whose incoming `traceparent` is sampled that are traced. Default: true."),
  path: opt(Str, "OTLP/HTTP path. Default: `/v1/traces`.")
})

export const TracingPolicy = Schema.Struct({
  host: opt(Str, "Collector address `host:port` (plain text)."),
  backend: unsupported("frontendPolicies.tracing.backend"),
  service: unsupported("frontendPolicies.tracing.service"),
  policies: unsupported("frontendPolicies.tracing.policies"),
  attributes: opt(Schema.Record(Str, Str), "Span attributes to add to the request span, each a CEL expression evaluated when the request ends (null or an error adds nothing; a default attribute of the same name is replaced); `span.name` renames the span."),
  resources: unsupported("frontendPolicies.tracing.resources"),
  remove: opt(Schema.Array(Str), "Default span attributes to leave out (applied before `attributes`)."),
  filter: unsupported("frontendPolicies.tracing.filter"),
  randomSampling: opt(TracingSampling, "Share of requests without an incoming trace that start one. Default: false."),
  clientSampling: opt(TracingSampling, "Share of requests whose incoming `traceparent` is sampled that are traced. Default: true."),
  path: opt(Str, "OTLP/HTTP path. Default: `/v1/traces`."),
  protocol: opt(Schema.Literals(["grpc", "http"]), "OTLP transport. Default: grpc.")
}).check(exactlyOneOf(["host", "backend", "service"]))

export const FrontendHttp = Schema.Struct({
  maxBufferSize: opt(Int.check(Schema.isGreaterThan(0)), "Largest body buffered when a policy needs it. Default: 2 MiB."),
  http1MaxHeaders: opt(Int.check(Schema.isGreaterThan(0)), "Maximum number of request headers. Default: 100."),
  http1IdleTimeout: opt(DurationString, "Idle keep-alive connection timeout. Default: 10m."),
  http1HeaderCase: unsupported("http.http1HeaderCase"),
  http2WindowSize: unsupported("http.http2WindowSize"),
  http2ConnectionWindowSize: unsupported("http.http2ConnectionWindowSize"),
  http2FrameSize: unsupported("http.http2FrameSize"),
  http2MaxHeaderSize: unsupported("http.http2MaxHeaderSize"),
  http2KeepaliveInterval: unsupported("http.http2KeepaliveInterval"),
  http2KeepaliveTimeout: unsupported("http.http2KeepaliveTimeout"),
  maxConnectionDuration: unsupported("http.maxConnectionDuration")
})

export const FrontendTls = Schema.Struct({
  handshakeTimeout: opt(
    DurationString.check(Schema.makeFilter((s: string) => Duration.parseMillis(s) > 0 || "must be longer than 0s (Node would read 0 as its own 120 s default)")),
    "Maximum time a client has to complete the TLS handshake; the connection is closed after it. Default: 15s."
  ),
  alpn: unsupported("frontendPolicies.tls.alpn"),
  minVersion: unsupported("frontendPolicies.tls.minVersion"),
  maxVersion: unsupported("frontendPolicies.tls.maxVersion"),
  cipherSuites: unsupported("frontendPolicies.tls.cipherSuites"),
  keyExchangeGroups: unsupported("frontendPolicies.tls.keyExchangeGroups")
})

export const FrontendPolicies = Schema.Struct({
  http: opt(FrontendHttp, "Settings for incoming HTTP requests."),
  accessLog: opt(AccessLogPolicy, "Access log settings."),
  logging: opt(AccessLogPolicy, "Access log settings (alias of accessLog)."),
  tls: opt(FrontendTls, "Settings for incoming TLS connections."),
  tcp: unsupported("frontendPolicies.tcp"),
  networkAuthorization: unsupported("frontendPolicies.networkAuthorization"),
  networkExtAuthz: unsupported("frontendPolicies.networkExtAuthz"),
  proxy: unsupported("frontendPolicies.proxy"),
  proxyProtocol: unsupported("frontendPolicies.proxyProtocol"),
  connect: unsupported("frontendPolicies.connect"),
  tracing: opt(TracingPolicy, "Exports a span per request over OTLP.")
})
export type FrontendPolicies = typeof FrontendPolicies.Type

export const RawConfig = Schema.Struct({
  adminAddr: opt(Str, "Admin API address (`ip:port`, `localhost:port` or `off`). Default: `localhost:15000`."),
  statsAddr: opt(Str, "Prometheus metrics address. Default: `[::]:15020`."),
  readinessAddr: opt(Str, "Readiness probe address. Default: `[::]:15021`."),
  enableIpv6: opt(Schema.Boolean, "Whether IPv6 addresses may be used. Default: true."),
  logging: opt(
    Schema.Struct({
      level: opt(Schema.Union([Str, Schema.Array(Str)]), "Log level, e.g. `info` or `debug`."),
      format: opt(Schema.Literals(["text", "json"]), "Access log format. Default: text."),
      filter: opt(Str, "Deprecated upstream (use `frontendPolicies.accessLog.filter`): CEL deciding whether a request is logged."),
      fields: opt(
        Schema.Struct({
          remove: opt(Schema.Array(Str), "Default fields to leave out of the access log."),
          add: opt(Schema.Record(Str, Str), "Fields to add, each a CEL expression.")
        }),
        "Deprecated upstream (use `frontendPolicies.accessLog.add`/`remove`): access log fields."
      ),
      database: unsupported("config.logging.database")
    }),
    "Logging settings."
  ),
  backend: opt(
    Schema.Struct({
      connectTimeout: opt(DurationString, "Upstream connect timeout. Default: 10s."),
      poolIdleTimeout: opt(DurationString, "How long idle upstream connections are kept. Default: 90s."),
      poolMaxSize: opt(Int.check(Schema.isGreaterThan(0)), "Maximum connections per upstream. Default: unlimited."),
      keepalives: opt(
        Schema.Struct({
          enabled: opt(Schema.Boolean, "TCP keep-alive on upstream connections."),
          time: opt(DurationString, "Idle time before the first probe."),
          interval: opt(DurationString, "Interval between probes."),
          retries: opt(Int, "Probes before the connection is dropped.")
        }),
        "TCP keep-alive settings."
      )
    }),
    "Defaults for upstream connections."
  ),
  connectionTerminationDeadline: opt(DurationString, "How long in-flight requests may run after SIGTERM. Default: 5s."),
  connectionMinTerminationDeadline: opt(DurationString, "Minimum drain time after SIGTERM. Default: 0s."),
  session: opt(Schema.Struct({ key: req(Str, "64 hex chars: the AES-256-GCM key sealing session ids.") }), "Session sealing."),
  mcp: opt(Schema.Struct({ sessionTtl: opt(DurationString, "Idle MCP session lifetime. Default: 30m.") }), "MCP settings."),
  workerThreads: opt(Schema.Union([Str, Int]), "Data-plane worker processes: a positive integer or `auto` (one per core); `WORKER_THREADS` overrides. Read at start. Default: 1 (a single process, no cluster)."),
  dns: unsupported("config.dns"),
  localXdsPath: unsupported("config.localXdsPath"),
  modelCatalog: unsupported("config.modelCatalog"),
  database: unsupported("config.database"),
  storage: unsupported("config.storage"),
  caAddress: unsupported("config.caAddress"),
  caAuthToken: unsupported("config.caAuthToken"),
  xdsAddress: unsupported("config.xdsAddress"),
  xdsAuthToken: unsupported("config.xdsAuthToken"),
  spiffe: unsupported("config.spiffe"),
  namespace: unsupported("config.namespace"),
  gateway: unsupported("config.gateway"),
  trustDomain: unsupported("config.trustDomain"),
  additionalTrustDomains: unsupported("config.additionalTrustDomains"),
  skipValidateTrustDomain: unsupported("config.skipValidateTrustDomain"),
  serviceAccount: unsupported("config.serviceAccount"),
  clusterId: unsupported("config.clusterId"),
  network: unsupported("config.network"),
  standardAttributes: unsupported("config.standardAttributes"),
  histograms: unsupported("config.histograms"),
  sensitiveHeaders: opt(
    Schema.Array(Str),
    "Request headers whose values are redacted, besides authorization, proxy-authorization, cookie, set-cookie and x-api-key, wherever the access log could show them (CEL `add` fields); `mcp-session-id` also drops `mcp.session.id`."
  ),
  customFunctions: unsupported("config.customFunctions"),
  tracing: opt(RawTracing, "Exports a span per request over OTLP (deprecated upstream in favour of `frontendPolicies.tracing`)."),
  metrics: opt(
    Schema.Struct({
      remove: opt(Schema.Array(Str), "Metrics left out of /metrics, by name with or without the `agentgateway_` prefix and `_total` suffix."),
      fields: opt(
        Schema.Struct({ add: opt(Schema.Record(Str, Str), "Labels added to the request and MCP metrics, each a CEL expression (an error or a non-string: `unknown`).") }),
        "Custom metric labels."
      )
    }),
    "Metrics settings."
  ),
  hbone: unsupported("config.hbone")
})
export type RawConfig = typeof RawConfig.Type

export const SimpleMcp = Schema.Struct({
  gateways: opt(GatewayRefs, "Attach to these gateways instead of opening a port."),
  port: opt(Port, "Port of the MCP endpoint. Default: 3000."),
  policies: opt(FilterOrPolicy, "Policies on the MCP route."),
  ...mcpBackendFields
})
export type SimpleMcp = typeof SimpleMcp.Type

export const LocalConfig = Schema.Struct({
  config: opt(RawConfig, "Process-wide settings, applied at startup."),
  binds: opt(Schema.Array(Bind), "Ports, each with listeners, routes and backends (the classic form)."),
  gateways: opt(Schema.Record(Str, Gateway), "Named entry points (the newer form); `default` is implicit for routes."),
  routes: opt(Schema.Array(AttachedRoute), "Routes attached to gateways."),
  backends: opt(Schema.Array(NamedBackend), "Named backends referenced by routes."),
  policies: opt(Schema.Array(TargetedPolicy), "Policies attached to gateways, routes or backends by reference."),
  frontendPolicies: opt(FrontendPolicies, "Connection- and observability-level settings for every gateway."),
  mcp: opt(SimpleMcp, "The MCP gateway shorthand."),
  tcpRoutes: unsupported("tcpRoutes"),
  routeGroups: unsupported("routeGroups"),
  services: unsupported("services"),
  workloads: unsupported("workloads"),
  llm: unsupported("llm (the LLM gateway)"),
  ui: unsupported("ui")
}).annotate({
  title: "effect-agentgateway configuration",
  description: "The standalone configuration file, compatible with agentgateway's config.yaml."
})
export type LocalConfig = typeof LocalConfig.Type
