/**
 * The one typed per-request context (Pingora's CTX): what the downstream asked, what the
 * gateway decided so far, and the record the access log and metrics are written from. It is
 * provided to the pipeline as the `RequestContext` service and mutated in place by policies,
 * so a request allocates one of these and no per-policy copies.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type { IncomingMessage } from "node:http"
import type { Extensions as CelExtensions } from "../cel/Context.ts"
import type { A2aLogFields } from "../a2a/Telemetry.ts"
import type { McpLogFields } from "../mcp/Hooks.ts"
import type { RequestTrace } from "../observability/Tracing.ts"
import type * as Headers from "../shared/headers.ts"
import type { ProxyError } from "./ProxyError.ts"
import type { StreamBody } from "./ProxyResponse.ts"
import * as RequestBody from "./RequestBody.ts"

/** Route identity as it appears in logs, metrics and CEL `proxy.*`. */
export interface RouteInfo {
  readonly key: string
  readonly name: string
  readonly namespace: string
  readonly ruleName: string | undefined
  /** `<namespace>/<name>`, as logs, metrics and traces label the route (built once per snapshot). */
  readonly label: string
}

/** Where a request was addressed before a policy rewrote it. */
export interface OriginalUrl {
  readonly authority: string
  readonly host: string
  readonly path: string
  readonly query: string
}

export class ProxyRequest {
  /** Names of the bind / gateway / listener the request arrived on. */
  bind = ""
  gateway = ""
  listener = ""
  route: RouteInfo | undefined = undefined
  /** Name of the backend the request was sent to (`/<route>/backend0`, `/name`, …). */
  backend = ""
  endpoint = ""
  /** Response headers queued by policies for every response, including errors (CORS, rate limits). */
  queuedResponseHeaders: Array<readonly [string, string]> | undefined = undefined
  /** Whether the downstream request carries a body to forward (decided from the raw headers). */
  hasBody = false
  /** The body as it will be sent upstream: untouched stream, or buffered by a policy (RequestBody.ts). */
  body: RequestBody.State = RequestBody.untouched
  /** Set by a policy that chose the authority (urlRewrite): disables the auto host rewrite. */
  authorityRewritten = false
  /**
   * The selected route match's path prefix without its trailing `/` ("" for `/`), or undefined
   * when the route matched by exact path or regex. Prefix rewrites and redirects replace it.
   */
  matchedPrefix: string | undefined = undefined
  /** The selected route match's path pattern as upstream names spans (`/*`, `/api/*`, `/exact`, a regex). */
  pathMatch: string | undefined = undefined
  /** This request's span when tracing is on and it was sampled (observability/Tracing.ts). */
  trace: RequestTrace | undefined = undefined
  /** The request as received, recorded by the first policy that rewrites it (urlRewrite), for logs. */
  originalUrl: OriginalUrl | undefined = undefined
  /**
   * Milliseconds each backend attempt may take until the response head (`timeout.
   * backendRequestTimeout`), recorded by the route phase and applied by the backend call, so it
   * bounds every retry attempt on its own.
   */
  backendRequestTimeoutMs: number | undefined = undefined
  /** Set when a policy, not an upstream, produced the response. */
  directResponse = false
  /** Retries made (the `retry` policy): `retry.attempt` in the log, `agentgateway_retries_total`. */
  retryAttempt: number | undefined = undefined
  /** Response body bytes written downstream so far (`agentgateway_response_bytes_total`). */
  responseBytes = 0
  /** The client took no byte of the response for RESPONSE_SEND_TIMEOUT and was disconnected (listeners/SendWatch.ts). */
  sendTimedOut = false
  /**
   * Who the caller is, as an authentication policy established it (JWT `iss`+`sub`, API key id);
   * MCP sessions are bound to it. undefined: anonymous.
   */
  identity: string | undefined = undefined
  /**
   * The JWT an authentication policy (jwtAuth, mcpAuthentication) validated and stripped from
   * the request, kept only so `backendAuth: {passthrough}` can re-add it upstream.
   */
  validatedJwt: string | undefined = undefined
  /**
   * Set by a backend-phase policy that must sign the request exactly as it is sent (backendAuth
   * `aws`); the host backend call runs it after every other edit (host rewrite included) and
   * clears it, so a retry against another backend never inherits it.
   */
  upstreamSigner: ((ctx: ProxyRequest) => Effect.Effect<void, ProxyError>) | undefined = undefined
  /** MCP fields of the request for logs and metrics (src/mcp/Hooks.ts), set by the MCP frontend. */
  mcp: McpLogFields | undefined = undefined
  /** A2A fields for logs and the `protocol` label (src/a2a/Telemetry.ts), set by the `a2a` policy. */
  a2a: A2aLogFields | undefined = undefined
  /** CEL roots attached by policies as the request goes (`jwt`, `apiKey`, `mcp`, …): cel/Context.ts. */
  celExtensions: CelExtensions | undefined = undefined
  /**
   * Upstream bodies opened for this request. The listener aborts every one it did not write
   * (a retried attempt, a response dropped by a timeout), so no pooled connection is left paused.
   */
  openBodies: Array<StreamBody> | undefined = undefined

  readonly raw: IncomingMessage
  /** Upper-case method. */
  method: string
  /** Normalised path (see routing/Path.ts), used for routing, authorization and forwarding. */
  path: string
  /** Raw query string including the leading `?`, or "". */
  query: string
  /** Host without port, lower-cased. */
  host: string
  /** The authority as received (`Host` header or absolute-form URI). */
  authority: string
  readonly scheme: "http" | "https"
  readonly version: string
  /** Request headers to send upstream; hop-by-hop headers already stripped. */
  readonly headers: Headers.HeaderMap
  readonly sourceAddress: string
  readonly sourcePort: number
  /** `performance.now()` when the request arrived. */
  readonly startTime: number

  constructor(
    raw: IncomingMessage,
    method: string,
    path: string,
    query: string,
    host: string,
    authority: string,
    scheme: "http" | "https",
    version: string,
    headers: Headers.HeaderMap,
    sourceAddress: string,
    sourcePort: number,
    startTime: number
  ) {
    this.raw = raw
    this.method = method
    this.path = path
    this.query = query
    this.host = host
    this.authority = authority
    this.scheme = scheme
    this.version = version
    this.headers = headers
    this.sourceAddress = sourceAddress
    this.sourcePort = sourcePort
    this.startTime = startTime
  }

  queueResponseHeader(name: string, value: string): void {
    ;(this.queuedResponseHeaders ??= []).push([name, value])
  }

  get pathAndQuery(): string {
    return this.path + this.query
  }
}

export class RequestContext extends Context.Service<RequestContext, ProxyRequest>()("agw/pipeline/RequestContext") {}

/** The current request, for middlewares: `Effect.flatMap(currentRequest, (ctx) => …)`. */
export const currentRequest: Effect.Effect<ProxyRequest, never, RequestContext> = Effect.service(RequestContext)
