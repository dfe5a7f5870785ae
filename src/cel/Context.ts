/**
 * The CEL activation of a request: `request`, `response`, `source`, `destination`, `proxy`,
 * `backend`, `env`, and the slots later policies fill (`jwt`, `apiKey`, `basicAuth`, `mcp`,
 * `llm`, `llmRequest`, `extauthz`, `extproc`, `mcpGuardrails`, `metadata`).
 *
 * Built per evaluation and lazy: each root is a small object whose getters read the live
 * `ProxyRequest`, so an expression that reads `request.method` costs one getter and nothing
 * else is materialised. Nothing is cached across evaluations, so a value changed by an earlier
 * policy (a rewritten path, a modified header) is what the next expression sees. Absent values
 * (`jwt` before a JWT policy ran, `request.body` not read, `source.subjectCn` without mTLS) are
 * `undefined`, which CEL reports as a missing key / unknown variable error.
 *
 * @since 0.1.0
 */
import type { Environment } from "@marcbachmann/cel-js"
import * as Effect from "effect/Effect"
import { type Certificate, type PeerCertificate, TLSSocket } from "node:tls"
import * as ProxyError from "../pipeline/ProxyError.ts"
import type { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import * as RequestBody from "../pipeline/RequestBody.ts"
import type { ProxyRequest } from "../pipeline/RequestContext.ts"
import type * as Headers from "../shared/headers.ts"
import type { Program } from "./Cel.ts"
import { canonicalAddress } from "./Functions.ts"

// ---------------------------------------------------------------------------------------------
// Extensions: values policies attach to a request for CEL
// ---------------------------------------------------------------------------------------------

/**
 * Roots a policy fills in as the request goes (`jwt` by jwtAuth, `mcp` by MCP authorization…).
 * Values must already be CEL values: use `Functions.fromJson` on decoded JSON (ints → BigInt).
 */
export type ExtensionName =
  | "jwt"
  | "apiKey"
  | "basicAuth"
  | "mcp"
  | "llm"
  | "llmRequest"
  | "extauthz"
  | "extproc"
  | "mcpGuardrails"
  | "metadata"

export interface Extensions {
  jwt?: unknown
  apiKey?: unknown
  basicAuth?: unknown
  mcp?: unknown
  llm?: unknown
  llmRequest?: unknown
  extauthz?: unknown
  extproc?: unknown
  mcpGuardrails?: unknown
  metadata?: unknown
  /** `backend.type` (`ai`, `mcp`, `static`, `dynamic`, `service`); default `static` once a backend is chosen. */
  backendType?: string
  /** `backend.protocol` (`http`, `tcp`, `a2a`, `mcp`, `llm`); default `http`. */
  backendProtocol?: string
}

/** Attaches (or, with `undefined`, removes) a CEL root value on the request. */
export const attach = <K extends keyof Extensions>(ctx: ProxyRequest, name: K, value: Extensions[K]): void => {
  const ext = (ctx.celExtensions ??= {})
  if (value === undefined) delete ext[name]
  else ext[name] = value
}

// ---------------------------------------------------------------------------------------------
// Roots
// ---------------------------------------------------------------------------------------------

const timestampOf = (startTime: number): Date => new Date(performance.timeOrigin + startTime)

const bytesOfBody = (state: RequestBody.State): Uint8Array | undefined => (state._tag === "Buffered" ? state.bytes : undefined)

/** Builds the header map expressions see in place of the real one (the access log's redacted view). */
export type HeaderView = (headers: Headers.HeaderMap) => Headers.HeaderMap

/** `request.*`. */
export class RequestVars {
  #headers: Headers.HeaderMap | undefined
  private readonly ctx: ProxyRequest
  private readonly view: HeaderView | undefined
  constructor(ctx: ProxyRequest, view?: HeaderView) {
    this.ctx = ctx
    this.view = view
  }
  get method(): string {
    return this.ctx.method
  }
  get uri(): string {
    const ctx = this.ctx
    return `${ctx.scheme}://${ctx.authority}${ctx.path}${ctx.query}`
  }
  /** The authority as received (upstream's `uri.authority()`: may carry a port). */
  get host(): string {
    return this.ctx.authority
  }
  get scheme(): string {
    return this.ctx.scheme
  }
  get path(): string {
    return this.ctx.path
  }
  get pathAndQuery(): string {
    return this.ctx.path + this.ctx.query
  }
  get version(): string {
    return this.ctx.version
  }
  get headers(): Headers.HeaderMap {
    const view = this.view
    return view === undefined ? this.ctx.headers : (this.#headers ??= view(this.ctx.headers))
  }
  get body(): Uint8Array | undefined {
    return bytesOfBody(this.ctx.body)
  }
  get startTime(): Date {
    return timestampOf(this.ctx.startTime)
  }
  /** For `toJson(request)` and logs; the body only when it was buffered. */
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = {
      method: this.method,
      uri: this.uri,
      host: this.host,
      scheme: this.scheme,
      path: this.path,
      pathAndQuery: this.pathAndQuery,
      version: this.version,
      headers: this.headers,
      startTime: this.startTime
    }
    const body = this.body
    if (body !== undefined) out["body"] = body
    return out
  }
}

const bodyOfResponse = (res: ProxyResponse): Uint8Array | undefined => {
  const body = res.body
  if (typeof body === "string") return Buffer.from(body, "utf8")
  if (body instanceof Uint8Array) return body
  // A streamed body is not buffered, so it is not available to CEL.
  return undefined
}

/** `response.*`. */
export class ResponseVars {
  #headers: Headers.HeaderMap | undefined
  private readonly res: ProxyResponse
  private readonly view: HeaderView | undefined
  constructor(res: ProxyResponse, view?: HeaderView) {
    this.res = res
    this.view = view
  }
  get code(): bigint {
    return BigInt(this.res.status)
  }
  get headers(): Headers.HeaderMap {
    const view = this.view
    return view === undefined ? this.res.headers : (this.#headers ??= view(this.res.headers))
  }
  get body(): Uint8Array | undefined {
    return bodyOfResponse(this.res)
  }
  toJSON(): Record<string, unknown> {
    const body = this.body
    return body === undefined ? { code: this.code, headers: this.headers } : { code: this.code, headers: this.headers, body }
  }
}

/**
 * Verified client certificates by connection: parsed once per connection, not per request on
 * it (Node builds a fresh object on every `getPeerCertificate`).
 */
const peerCertificates = new WeakMap<TLSSocket, PeerCertificate | undefined>()

/** The verified client certificate of an mTLS connection, if any. */
const peerCertificate = (ctx: ProxyRequest): PeerCertificate | undefined => {
  const socket: unknown = ctx.raw.socket
  if (!(socket instanceof TLSSocket) || !socket.authorized) return undefined
  if (peerCertificates.has(socket)) return peerCertificates.get(socket)
  const cert = socket.getPeerCertificate()
  const verified = cert !== null && typeof cert === "object" && cert.raw !== undefined ? cert : undefined
  peerCertificates.set(socket, verified)
  return verified
}

/** An Istio-style SPIFFE id, `spiffe://<trust domain>/ns/<namespace>/sa/<service account>` (upstream's `Identity`). */
const ISTIO_SPIFFE = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/

export interface IstioIdentity {
  readonly trustDomain: string
  readonly namespace: string
  readonly serviceAccount: string
}

/** The first URI SAN in the Istio SPIFFE form, as upstream's `TlsInfo.identity`. */
const istioIdentity = (sans: ReadonlyArray<string>): IstioIdentity | undefined => {
  for (const san of sans) {
    const m = ISTIO_SPIFFE.exec(san)
    if (m !== null) return { trustDomain: m[1]!, namespace: m[2]!, serviceAccount: m[3]! }
  }
  return undefined
}

/** `src.identity` of the access log: the verified client's SPIFFE id, as upstream renders it. */
export const sourceIdentity = (ctx: ProxyRequest): string | undefined => {
  const cert = peerCertificate(ctx)
  if (cert === undefined) return undefined
  const id = istioIdentity(subjectAltNames(cert))
  return id === undefined ? undefined : `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`
}

/** RFC 4514-ish rendering of a certificate name (Node gives a record of attribute → value(s)). */
const distinguishedName = (name: Certificate | undefined): string | undefined => {
  if (name === undefined) return undefined
  const parts: Array<string> = []
  for (const [k, v] of Object.entries(name)) {
    for (const value of Array.isArray(v) ? v : [v]) if (typeof value === "string") parts.push(`${k}=${value}`)
  }
  return parts.reverse().join(",")
}

const subjectAltNames = (cert: PeerCertificate): Array<string> => {
  const raw = cert.subjectaltname
  if (raw === undefined || raw === "") return []
  return raw.split(", ").map((entry) => {
    const colon = entry.indexOf(":")
    return colon < 0 ? entry : entry.slice(colon + 1)
  })
}

/** `source.*`. */
export class SourceVars {
  #cert: PeerCertificate | null | undefined = null
  private readonly ctx: ProxyRequest
  constructor(ctx: ProxyRequest) {
    this.ctx = ctx
  }
  private get cert(): PeerCertificate | undefined {
    if (this.#cert === null) this.#cert = peerCertificate(this.ctx)
    return this.#cert
  }
  get address(): string {
    return canonicalAddress(this.ctx.sourceAddress)
  }
  get port(): bigint {
    return BigInt(this.ctx.sourcePort)
  }
  get rawAddress(): string {
    return canonicalAddress(this.ctx.sourceAddress)
  }
  get rawPort(): bigint {
    return BigInt(this.ctx.sourcePort)
  }
  get subjectAltNames(): Array<string> | undefined {
    const cert = this.cert
    return cert === undefined ? undefined : subjectAltNames(cert)
  }
  get identity(): IstioIdentity | undefined {
    const sans = this.subjectAltNames
    return sans === undefined ? undefined : istioIdentity(sans)
  }
  get spiffeId(): string | undefined {
    return this.subjectAltNames?.find((s) => s.startsWith("spiffe://"))
  }
  get issuer(): string | undefined {
    return distinguishedName(this.cert?.issuer)
  }
  get subject(): string | undefined {
    return distinguishedName(this.cert?.subject)
  }
  get subjectCn(): string | undefined {
    const cn = this.cert?.subject?.CN
    return Array.isArray(cn) ? cn[0] : cn
  }
  get certificate(): string | undefined {
    const cert = this.cert
    if (cert === undefined) return undefined
    const b64 = cert.raw.toString("base64").replace(/.{1,64}/g, "$&\n")
    return `-----BEGIN CERTIFICATE-----\n${b64}-----END CERTIFICATE-----\n`
  }
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = { address: this.address, port: this.port }
    if (this.cert !== undefined) {
      const identity = this.identity
      if (identity !== undefined) out["identity"] = identity
      out["subjectAltNames"] = this.subjectAltNames
      out["issuer"] = this.issuer
      out["subject"] = this.subject
      out["subjectCn"] = this.subjectCn
    }
    return out
  }
}

/** `destination.*`. */
export class DestinationVars {
  private readonly ctx: ProxyRequest
  constructor(ctx: ProxyRequest) {
    this.ctx = ctx
  }
  get address(): string | undefined {
    const a = this.ctx.raw.socket?.localAddress
    return a === undefined ? undefined : canonicalAddress(a)
  }
  get port(): bigint | undefined {
    const p = this.ctx.raw.socket?.localPort
    return p === undefined ? undefined : BigInt(p)
  }
  get hostname(): string {
    return this.ctx.host
  }
}

/** `proxy.*`: where the request was accepted and which route took it. */
export class ProxyVars {
  private readonly ctx: ProxyRequest
  constructor(ctx: ProxyRequest) {
    this.ctx = ctx
  }
  get bind(): string {
    return this.ctx.bind
  }
  get gateway(): Record<string, string> | undefined {
    const name = this.ctx.gateway
    return name === "" ? undefined : { name, namespace: "" }
  }
  get listener(): Record<string, string> | undefined {
    const name = this.ctx.listener
    return name === "" ? undefined : { name }
  }
  get route(): Record<string, string> | undefined {
    const route = this.ctx.route
    if (route === undefined) return undefined
    const out: Record<string, string> = { name: route.name, namespace: route.namespace }
    if (route.ruleName !== undefined) out["rule"] = route.ruleName
    return out
  }
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = { bind: this.bind }
    if (this.gateway !== undefined) out["gateway"] = this.gateway
    if (this.listener !== undefined) out["listener"] = this.listener
    if (this.route !== undefined) out["route"] = this.route
    return out
  }
}

/** `backend.*`: set once a backend was chosen (backend-phase policies, response phase). */
export class BackendVars {
  private readonly ctx: ProxyRequest
  constructor(ctx: ProxyRequest) {
    this.ctx = ctx
  }
  get name(): string {
    return this.ctx.backend
  }
  get type(): string {
    return this.ctx.celExtensions?.backendType ?? "static"
  }
  get protocol(): string {
    return this.ctx.celExtensions?.backendProtocol ?? "http"
  }
  toJSON(): Record<string, unknown> {
    return { name: this.name, type: this.type, protocol: this.protocol }
  }
}

/** `env.*`: the Kubernetes identity of the process, from the same variables upstream reads. */
const processEnv: Readonly<Record<string, string>> = (() => {
  const out: Record<string, string> = {}
  const pod = process.env["POD_NAME"]
  const namespace = process.env["POD_NAMESPACE"]
  const gateway = process.env["GATEWAY"]
  if (pod) out["podName"] = pod
  if (namespace) out["namespace"] = namespace
  if (gateway) out["gateway"] = gateway
  return Object.freeze(out)
})()

// ---------------------------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------------------------

/** The activation of the request phase. Build one per evaluation site: it is a few pointers. */
export class RequestActivation {
  #request: RequestVars | undefined
  #source: SourceVars | undefined
  readonly ctx: ProxyRequest
  constructor(ctx: ProxyRequest) {
    this.ctx = ctx
  }
  get request(): RequestVars {
    return (this.#request ??= new RequestVars(this.ctx))
  }
  get source(): SourceVars {
    return (this.#source ??= new SourceVars(this.ctx))
  }
  get destination(): DestinationVars {
    return new DestinationVars(this.ctx)
  }
  get proxy(): ProxyVars {
    return new ProxyVars(this.ctx)
  }
  get backend(): BackendVars | undefined {
    return this.ctx.backend === "" ? undefined : new BackendVars(this.ctx)
  }
  get env(): Readonly<Record<string, string>> {
    return processEnv
  }
  get jwt(): unknown {
    return this.ctx.celExtensions?.jwt
  }
  get apiKey(): unknown {
    return this.ctx.celExtensions?.apiKey
  }
  get basicAuth(): unknown {
    return this.ctx.celExtensions?.basicAuth
  }
  get mcp(): unknown {
    return this.ctx.celExtensions?.mcp
  }
  get llm(): unknown {
    return this.ctx.celExtensions?.llm
  }
  get llmRequest(): unknown {
    return this.ctx.celExtensions?.llmRequest
  }
  get extauthz(): unknown {
    return this.ctx.celExtensions?.extauthz
  }
  get extproc(): unknown {
    return this.ctx.celExtensions?.extproc
  }
  get mcpGuardrails(): unknown {
    return this.ctx.celExtensions?.mcpGuardrails
  }
  get metadata(): unknown {
    return this.ctx.celExtensions?.metadata
  }
}

/** The activation of the response phase: the request's roots plus `response`. */
export class ResponseActivation extends RequestActivation {
  #response: ResponseVars | undefined
  readonly res: ProxyResponse
  constructor(ctx: ProxyRequest, res: ProxyResponse) {
    super(ctx)
    this.res = res
  }
  get response(): ResponseVars {
    return (this.#response ??= new ResponseVars(this.res))
  }
}

/**
 * The activation of access-log fields and metric labels: the response phase's roots, with
 * request and response headers seen through `view` (which redacts credentials), so no
 * expression can copy a secret into a log line or a label.
 */
export class LogActivation extends RequestActivation {
  #request: RequestVars | undefined
  #response: ResponseVars | undefined
  readonly res: ProxyResponse
  private readonly view: HeaderView
  constructor(ctx: ProxyRequest, res: ProxyResponse, view: HeaderView) {
    super(ctx)
    this.res = res
    this.view = view
  }
  override get request(): RequestVars {
    return (this.#request ??= new RequestVars(this.ctx, this.view))
  }
  get response(): ResponseVars {
    return (this.#response ??= new ResponseVars(this.res, this.view))
  }
}

export const forRequest = (ctx: ProxyRequest): RequestActivation => new RequestActivation(ctx)

export const forResponse = (ctx: ProxyRequest, res: ProxyResponse): ResponseActivation => new ResponseActivation(ctx, res)

// ---------------------------------------------------------------------------------------------
// Body: read only when an expression references it
// ---------------------------------------------------------------------------------------------

/** Whether any of `programs` reads `request.body` (and so needs the body buffered first). */
export const needsBody = (programs: Program | ReadonlyArray<Program | undefined> | undefined): boolean => {
  if (programs === undefined) return false
  if ("references" in programs) return programs.references.requestBody
  return programs.some((p) => p !== undefined && p.references.requestBody)
}

const noBody: Effect.Effect<void, ProxyError.ProxyError> = Effect.void

/**
 * Built in `make`: the per-request step that buffers the request body (bounded by `limit`,
 * normally `env.maxBufferSize`) when one of `programs` reads `request.body`, and does nothing
 * otherwise. Over the limit, `request.body` stays absent (its expressions error) and the
 * request still forwards whole, as upstream.
 */
export const bodyReader = (
  programs: Program | ReadonlyArray<Program | undefined> | undefined,
  limit: number
): (ctx: ProxyRequest) => Effect.Effect<void, ProxyError.ProxyError> => {
  if (!needsBody(programs)) return () => noBody
  return (ctx) => (ctx.body._tag === "Stream" ? Effect.asVoid(RequestBody.read(ctx, limit)) : noBody)
}

// ---------------------------------------------------------------------------------------------
// Types, registered once on the shared Environment (Cel.ts)
// ---------------------------------------------------------------------------------------------

export const EXTENSION_ROOTS: ReadonlyArray<ExtensionName> = [
  "jwt",
  "apiKey",
  "basicAuth",
  "mcp",
  "llm",
  "llmRequest",
  "extauthz",
  "extproc",
  "mcpGuardrails",
  "metadata"
]

/** Every root variable an expression may name. */
export const ROOTS: ReadonlySet<string> = new Set<string>([
  "request",
  "response",
  "source",
  "destination",
  "proxy",
  "backend",
  "env",
  ...EXTENSION_ROOTS
])

const HEADERS = "map<string, dyn>"
const TIMESTAMP = "google.protobuf.Timestamp"

export const registerTypes = (env: Environment): void => {
  env.registerType("agw.Request", {
    ctor: RequestVars,
    fields: {
      method: "string",
      uri: "string",
      host: "string",
      scheme: "string",
      path: "string",
      pathAndQuery: "string",
      version: "string",
      headers: HEADERS,
      body: "bytes",
      bodyPrefix: "bytes",
      startTime: TIMESTAMP,
      endTime: TIMESTAMP
    }
  })
  env.registerType("agw.Response", {
    ctor: ResponseVars,
    fields: { code: "int", grpcStatus: "int", headers: HEADERS, body: "bytes", bodyPrefix: "bytes" }
  })
  env.registerType("agw.Source", {
    ctor: SourceVars,
    fields: {
      address: "string",
      port: "int",
      rawAddress: "string",
      rawPort: "int",
      identity: "map<string, string>",
      spiffeId: "string",
      subjectAltNames: "list<string>",
      issuer: "string",
      subject: "string",
      subjectCn: "string",
      certificate: "string",
      unverifiedWorkload: "map<string, string>",
      connectHeaders: HEADERS
    }
  })
  env.registerType("agw.Destination", {
    ctor: DestinationVars,
    fields: { address: "string", port: "int", hostname: "string" }
  })
  env.registerType("agw.Proxy", {
    ctor: ProxyVars,
    fields: {
      bind: "string",
      gateway: "map<string, string>",
      listener: "map<string, string>",
      route: "map<string, string>",
      requestProcessingDuration: "google.protobuf.Duration",
      upstreamDuration: "google.protobuf.Duration",
      responseProcessingDuration: "google.protobuf.Duration"
    }
  })
  env.registerType("agw.Backend", {
    ctor: BackendVars,
    fields: { name: "string", type: "string", protocol: "string" }
  })
  env.registerVariable("request", "agw.Request")
  env.registerVariable("response", "agw.Response")
  env.registerVariable("source", "agw.Source")
  env.registerVariable("destination", "agw.Destination")
  env.registerVariable("proxy", "agw.Proxy")
  env.registerVariable("backend", "agw.Backend")
  env.registerVariable("env", "map<string, string>")
  for (const name of EXTENSION_ROOTS) env.registerVariable(name, "dyn")
}
