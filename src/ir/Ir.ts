/**
 * The runtime IR: plain immutable data the config front-ends (binds, gateways + routes, and
 * later the shorthands and xDS) normalise into. Policies are already merged per attachment
 * point; nothing here is compiled yet (that is `state/Snapshot.ts`).
 *
 * @since 0.1.0
 */
import type { BackendPolicies, FilterOrPolicy, GatewayPolicy, RouteMatch } from "../config/LocalConfig.ts"

export interface Snapshot {
  readonly binds: ReadonlyArray<Bind>
  readonly settings: Settings
  /**
   * Named backends with a host target, by name, for policies that reference a backend on their
   * own (`requestMirror.backend: {backend: name}`); `policies` are the backend's own merged with
   * those targeted at it.
   */
  readonly backends: ReadonlyMap<string, BackendRef>
}

export interface Settings {
  readonly adminAddr: string
  readonly statsAddr: string
  readonly readinessAddr: string
  readonly logFormat: "text" | "json"
  readonly logLevel: string
  readonly accessLogRemove: ReadonlyArray<string>
  /** `frontendPolicies.accessLog.filter` (or the deprecated `config.logging.filter`). */
  readonly accessLogFilter?: Expression | undefined
  /** `frontendPolicies.accessLog.add` (or `config.logging.fields.add`), in config order. */
  readonly accessLogAdd?: ReadonlyArray<NamedExpression> | undefined
  /** `config.metrics.remove`: metric names left out of the exposition. */
  readonly metricsRemove?: ReadonlyArray<string> | undefined
  /** `config.metrics.fields.add`, in config order. */
  readonly metricsAdd?: ReadonlyArray<NamedExpression> | undefined
  /** `config.sensitiveHeaders`, lower-cased: redacted wherever logs could show them. */
  readonly sensitiveHeaders?: ReadonlyArray<string> | undefined
  readonly maxBufferSize: number
  readonly http1MaxHeaders: number
  readonly http1IdleTimeoutMs: number
  /** REQUEST_BODY_IDLE_TIMEOUT: longest pause in a request body being read before 408; 0: no limit. */
  readonly requestBodyIdleTimeoutMs: number
  /** RESPONSE_SEND_TIMEOUT: longest time a response waits for the client to take any byte; 0: no limit. */
  readonly responseSendTimeoutMs: number
  /** `frontendPolicies.tls.handshakeTimeout`: a client still handshaking after this long is disconnected. */
  readonly tlsHandshakeTimeoutMs: number
  readonly connectTimeoutMs: number
  readonly poolIdleTimeoutMs: number
  readonly poolMaxSize: number | undefined
  readonly keepalive: boolean
  readonly terminationDeadlineMs: number
  readonly terminationMinDeadlineMs: number
  /** `config.mcp.sessionTtl`: idle MCP sessions are closed after this long. */
  readonly mcpSessionTtlMs: number
  /** `config.session.key` / `SESSION_KEY`: 64 hex chars sealing MCP session ids (undefined: a random per-process key). */
  readonly sessionKey: string | undefined
  /** `WORKER_THREADS` / `config.workerThreads`: data-plane worker processes (1: no cluster). Read at start only. */
  readonly workerThreads: number
  /** `frontendPolicies.tracing` or `config.tracing`; undefined: tracing off (no per-request work). */
  readonly tracing?: TracingSettings | undefined
}

/** A CEL expression from the config and the field path it came from (for errors). */
export interface Expression {
  readonly source: string
  readonly path: string
}

export interface NamedExpression extends Expression {
  readonly name: string
}

export interface TracingSettings {
  readonly protocol: "grpc" | "http"
  /** Collector base URL (`http://host:port` or `https://…`). */
  readonly endpoint: string
  /** OTLP/HTTP path appended to `endpoint`. */
  readonly path: string
  readonly headers: Readonly<Record<string, string>>
  /** Probability (0–1) that a request without an incoming trace starts one. */
  readonly randomSampling: number
  /** Probability (0–1) that a request whose incoming `traceparent` is sampled is traced. */
  readonly clientSampling: number
  /** `frontendPolicies.tracing.attributes` / `config.tracing.fields.add`: CEL span attributes, in config order. */
  readonly attributes?: ReadonlyArray<NamedExpression> | undefined
  /** `frontendPolicies.tracing.remove` / `config.tracing.fields.remove`: default span attributes left out. */
  readonly remove?: ReadonlyArray<string> | undefined
}

export interface Bind {
  readonly key: string
  readonly port: number
  readonly protocol: "HTTP" | "HTTPS"
  readonly listeners: ReadonlyArray<Listener>
}

export interface TlsFiles {
  readonly cert: string
  readonly key: string
  readonly root: string | undefined
  readonly cipherSuites: ReadonlyArray<string> | undefined
  readonly minVersion: "TLSv1.2" | "TLSv1.3" | undefined
  readonly maxVersion: "TLSv1.2" | "TLSv1.3" | undefined
}

export interface Listener {
  readonly key: string
  readonly name: string
  /** The `gateway` field of logs and metrics. */
  readonly gatewayName: string
  /** "" serves every host. */
  readonly hostname: string
  readonly protocol: "HTTP" | "HTTPS"
  readonly tls: TlsFiles | undefined
  readonly policies: GatewayPolicy
  readonly routes: ReadonlyArray<Route>
  /** Config path, for errors found while compiling. */
  readonly path: string
}

export interface Route {
  readonly key: string
  readonly name: string
  readonly namespace: string
  readonly ruleName: string | undefined
  readonly hostnames: ReadonlyArray<string>
  readonly matches: ReadonlyArray<RouteMatch>
  /** Merged route-phase policies (most specific replaces). */
  readonly policies: FilterOrPolicy
  readonly backends: ReadonlyArray<BackendRef>
  readonly path: string
}

export interface HostTarget {
  readonly _tag: "Host"
  /** Host name or IP literal (without brackets). */
  readonly host: string
  readonly port: number
  /** True when `host` is a DNS name: the Host header is then rewritten to it. */
  readonly isHostname: boolean
}

/** How the gateway reaches one MCP target. */
export type McpTransport =
  | {
    readonly _tag: "Stdio"
    readonly cmd: string
    readonly args: ReadonlyArray<string>
    readonly env: Readonly<Record<string, string>>
    readonly clearEnv: boolean
  }
  /** `tls`: an `https://` target (verified as the MCP backend's `backendTLS` says, else against the system roots). */
  | { readonly _tag: "StreamableHttp"; readonly target: HostTarget; readonly path: string; readonly tls: boolean }
  | { readonly _tag: "Sse"; readonly target: HostTarget; readonly path: string; readonly tls: boolean }
  /** A REST API described by an OpenAPI document (loaded when the snapshot is built). */
  | {
    readonly _tag: "OpenApi"
    readonly target: HostTarget
    readonly schema: string | { readonly file: string } | { readonly url: string }
    /** `https://` host, or a named backend / target with `backendTLS`. */
    readonly tls: boolean
  }

/**
 * One target's own policies (inline, `policies[]` targeting its section, the named host backend
 * it goes through), applied to that target's HTTP requests only; `mcpAuthorization` accumulates
 * with the backend's rules for its items.
 */
export type McpTargetPolicies = Pick<BackendPolicies, "requestHeaderModifier" | "backendTLS" | "backendAuth" | "mcpAuthorization">

export interface McpTarget {
  /** Validated: no `_` or `+` (the naming delimiters). */
  readonly name: string
  readonly transport: McpTransport
  readonly path: string
  readonly policies?: McpTargetPolicies | undefined
}

/** An MCP backend: the gateway terminates MCP and federates `targets`. */
export interface McpBackend {
  readonly _tag: "Mcp"
  readonly targets: ReadonlyArray<McpTarget>
  readonly stateful: boolean
  readonly prefixMode: "conditional" | "always" | "never"
  readonly failureMode: "failClosed" | "failOpen"
  readonly dnsRebindingProtection: boolean
}

export interface BackendRef {
  /** Backend name as logged: `/<routeKey>/backend<i>` inline, `/<name>` for named backends. */
  readonly name: string
  readonly weight: number
  readonly target: HostTarget | McpBackend
  /** Merged backend policies (first found wins). */
  readonly policies: BackendPolicies
  readonly path: string
}
