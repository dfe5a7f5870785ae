/**
 * `mcpAuthentication`: an MCP server as an OAuth 2.0 protected resource (MCP authorization
 * spec, RFC 9728), agentgateway's `mcp/auth.rs`. A route-phase policy, so it works in front of
 * any backend and answers the well-known documents itself.
 *
 * - Tokens are checked by `jwtAuth`'s verifier (`JwtAuth.authenticator`: `kid`, key-bound
 *   algorithms, `iss`, `aud` any-of `audiences`, `exp`): nothing JWT-specific is done here.
 *   Accepted tokens are stripped before the upstream (re-added only by `backendAuth:
 *   {passthrough: {}}`), their claims are CEL `jwt.*`, the caller's identity binds MCP sessions.
 * - Modes: `strict` (default) requires a valid token; `optional` validates a present one;
 *   `permissive` never rejects. A rejection is 401 `{"error":"unauthorized",…}` with
 *   `WWW-Authenticate: Bearer resource_metadata="<base>/.well-known/oauth-protected-resource<path>"`,
 *   `<base>` being the origin of `resourceMetadata.resource` when set, else the request's
 *   (`x-forwarded-proto` honoured).
 * - `GET /.well-known/oauth-protected-resource[/<path>]` (never authenticated): the RFC 9728
 *   document — `resource` (`<base>/<path>`), `authorization_servers` (the issuer; the gateway
 *   itself when a provider adapter rewrites the authorization-server metadata),
 *   `mcp_protocol_version`, `resource_type`, then every `resourceMetadata` key in snake_case
 *   (overriding the computed ones) — with `access-control-allow-origin: *`.
 * - `GET /.well-known/oauth-authorization-server[/<path>]`: the IdP's metadata (RFC 8414
 *   location; Keycloak's `openid-configuration`), fetched at most once per
 *   `AS_METADATA_TTL_MS`, and with a provider: `issuer` set to the gateway URL, Auth0's
 *   `authorization_endpoint` given `?audience=<first audience>` (Auth0 ignores RFC 8707
 *   `resource`), Keycloak's `registration_endpoint` pointed at the gateway's
 *   `…/client-registration`, which relays a registration to Keycloak (which sends no CORS
 *   headers) and adds `access-control-allow-origin: *`.
 *
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Clock from "effect/Clock"
import * as Undici from "../backends/Undici.ts"
import * as ConfigError from "../config/ConfigError.ts"
import { exactlyOneOf, opt, req, unsupported } from "../config/Fields.ts"
import * as Policy from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import * as RequestBody from "../pipeline/RequestBody.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"
import * as Headers from "../shared/headers.ts"
import * as CredentialLocation from "./CredentialLocation.ts"
import * as JwtAuth from "./JwtAuth.ts"
import * as BoundedBody from "../shared/BoundedBody.ts"
import * as Json from "../shared/Json.ts"

// ---------------------------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------------------------

/** Authorization-server metadata is refetched from the IdP at most this often. */
export const AS_METADATA_TTL_MS = 5 * 60_000
/** One call to the IdP, connect to last byte. */
export const IDP_TIMEOUT_MS = 5_000
/** Largest IdP answer relayed (metadata, client registration). */
export const IDP_MAX_BYTES = 256 * 1024
/** Largest client-registration request relayed to Keycloak. */
export const REGISTRATION_MAX_BYTES = 64 * 1024

/** The MCP protocol version the metadata document advertises (upstream's). */
export const MCP_PROTOCOL_VERSION = "2025-06-18"

export const PROTECTED_RESOURCE = "/.well-known/oauth-protected-resource"
export const AUTHORIZATION_SERVER = "/.well-known/oauth-authorization-server"
const CLIENT_REGISTRATION = "/client-registration"

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

const Empty = Schema.Struct({})

export const Provider = Schema.Struct({
  auth0: opt(Empty, "Auth0: the authorization endpoint gets `audience` (Auth0 ignores RFC 8707 `resource`)."),
  keycloak: opt(Empty, "Keycloak: metadata from `openid-configuration`, client registration relayed through the gateway (Keycloak sends no CORS headers)."),
  okta: unsupported("mcpAuthentication provider okta"),
  descope: unsupported("mcpAuthentication provider descope"),
  authentik: unsupported("mcpAuthentication provider authentik"),
  entra: unsupported("mcpAuthentication provider entra")
}).check(exactlyOneOf(["auth0", "keycloak", "okta", "descope", "authentik", "entra"])).annotate({
  description: "Identity provider adapter: rewrites the authorization-server metadata for IdPs that are not spec-compliant."
})

export const Mode = Schema.Literals(["strict", "optional", "permissive"]).annotate({
  description: "`strict` (default): a valid JWT is required (401 starts the client's OAuth flow); `optional`: a present JWT must be valid; `permissive`: never rejects."
})

export const Config = Schema.Struct({
  issuer: req(Schema.String, "Expected token issuer, matched against the JWT `iss` claim; the authorization server advertised to clients."),
  audiences: req(Schema.Array(Schema.String), "Accepted token audiences, matched against the JWT `aud` claim (any of)."),
  provider: opt(Provider, "Identity provider type used to derive MCP authorization metadata and default JWKS URLs."),
  resourceMetadata: req(
    Schema.Record(Schema.String, Schema.Unknown),
    "Protected resource metadata returned to MCP clients (RFC 9728); camelCase keys are served in snake_case (`scopesSupported` → `scopes_supported`)."
  ),
  jwks: opt(JwtAuth.Jwks, "JSON Web Key Set used to verify token signatures. Default: `<issuer>/.well-known/jwks.json` (Keycloak: `<issuer>/protocol/openid-connect/certs`)."),
  mode: opt(Mode, "Controls whether MCP requests must include a valid JWT. Default `strict`."),
  authorizationLocation: opt(CredentialLocation.Config, "Where to read the JWT from. Default: `Authorization: Bearer`."),
  jwtValidationOptions: opt(JwtAuth.ValidationOptions, "Claim requirements to enforce after the token signature is verified."),
  clientId: opt(Schema.String, "OAuth client ID advertised to MCP clients (used by providers without dynamic client registration)."),
  clientSecret: opt(Schema.String, "OAuth client secret for confidential clients (used by the entra provider).")
}).annotate({ description: "Authenticate MCP clients with OAuth bearer JWTs and serve the OAuth protected-resource metadata (RFC 9728)." })
export type Config = typeof Config.Type

/** Field paths inside an `mcpAuthentication` value that hold secrets, for config_dump redaction. */
export const SECRET_PATHS: ReadonlyArray<string> = ["clientSecret"]

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/** heck's `to_snake_case` for metadata keys: `scopesSupported` → `scopes_supported`, `mcpResourceURI` → `mcp_resource_uri`. */
export const snakeCase = (key: string): string =>
  key
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1_$2")
    .replace(/[-\s]+/g, "_")
    .toLowerCase()

const firstHeader = (ctx: ProxyRequest, name: string): string | undefined => {
  const v = ctx.headers[name]
  return v === undefined ? undefined : typeof v === "string" ? v : v[0]
}

/**
 * `scheme://authority` as the client addressed the gateway. `X-Forwarded-Proto` is honoured as
 * upstream does (a TLS-terminating proxy in front), but only to say `https`: a request that
 * reached the gateway over TLS is never described as `http`, so a forged header cannot make a
 * (cacheable, `Access-Control-Allow-Origin: *`) metadata document send clients and their
 * tokens to plaintext (security.md §2.2). `resourceMetadata.resource` fixes the base outright.
 */
const requestBase = (ctx: ProxyRequest): string => {
  const forwarded = firstHeader(ctx, "x-forwarded-proto")?.split(",")[0]?.trim().toLowerCase()
  const scheme = forwarded === "https" ? "https" : ctx.scheme
  return `${scheme}://${ctx.authority}`
}

/** The part of `path` after a well-known prefix, or undefined when `path` is not under it. */
const suffixOf = (path: string, prefix: string): string | undefined =>
  path === prefix ? "" : path.startsWith(prefix) && path.charCodeAt(prefix.length) === 47 /* / */ ? path.slice(prefix.length) : undefined

const json = (status: number, body: string, cors: boolean, ctx: ProxyRequest): ProxyResponse => {
  const headers = Headers.empty()
  headers["content-type"] = "application/json"
  if (cors) addCors(headers, ctx)
  return new ProxyResponse(status, headers, body)
}

/** The documents are public: any origin may read them (unless a route `cors` policy already answered for this origin). */
const addCors = (headers: Headers.HeaderMap, ctx: ProxyRequest): void => {
  if (ctx.queuedResponseHeaders?.some(([name]) => name === "access-control-allow-origin") === true) return
  headers["access-control-allow-origin"] = "*"
  headers["access-control-allow-methods"] = "GET, POST, OPTIONS"
  headers["access-control-allow-headers"] = "content-type, authorization, mcp-protocol-version"
}

const preflight = (ctx: ProxyRequest): ProxyResponse => {
  const headers = Headers.empty()
  addCors(headers, ctx)
  return new ProxyResponse(200, headers, undefined)
}

const readBounded = (body: AsyncIterable<unknown> & { destroy(): void }): Promise<string> =>
  BoundedBody.readText(body, IDP_MAX_BYTES, () => new Error(`answer over ${IDP_MAX_BYTES} bytes`))

interface IdpAnswer {
  readonly status: number
  readonly contentType: string | undefined
  readonly body: string
}

const callIdp = (url: string, method: "GET" | "POST", body: Uint8Array | undefined, contentType: string | undefined): Effect.Effect<IdpAnswer, string> =>
  Effect.tryPromise({
    try: async (signal) => {
      const headers: Record<string, string> = { accept: "application/json" }
      if (contentType !== undefined) headers["content-type"] = contentType
      const res = await Undici.request(url, {
        method,
        headers,
        body: body === undefined ? null : Buffer.from(body),
        signal: AbortSignal.any([signal, AbortSignal.timeout(IDP_TIMEOUT_MS)]),
        headersTimeout: IDP_TIMEOUT_MS,
        bodyTimeout: IDP_TIMEOUT_MS
      })
      const type = res.headers["content-type"]
      return { status: res.statusCode, contentType: Array.isArray(type) ? type[0] : type, body: await readBounded(res.body) }
    },
    catch: (cause) => (cause instanceof Error ? cause.message : String(cause))
  })

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)

/** Authorization-server metadata of the IdP, cached; one fetch at a time. */
class AsMetadata {
  #value: Record<string, unknown> | undefined = undefined
  #fetchedAt = Number.NEGATIVE_INFINITY
  #inFlight: Deferred.Deferred<Record<string, unknown>, string> | undefined = undefined
  private readonly url: string
  private readonly now: () => number
  private readonly scope: Scope.Scope

  constructor(url: string, now: () => number, scope: Scope.Scope) {
    this.url = url
    this.now = now
    this.scope = scope
  }

  readonly get: Effect.Effect<Record<string, unknown>, string> = Effect.suspend(() => {
    const value = this.#value
    if (value !== undefined && this.now() - this.#fetchedAt < AS_METADATA_TTL_MS) return Effect.succeed(value)
    const current = this.#inFlight
    if (current !== undefined) return Deferred.await(current)
    const done = Deferred.makeUnsafe<Record<string, unknown>, string>()
    this.#inFlight = done
    const run = callIdp(this.url, "GET", undefined, undefined).pipe(
      Effect.flatMap((answer) => {
        if (answer.status !== 200) return Effect.fail(`status ${answer.status}`)
        let doc: unknown
        try {
          doc = Json.parseBounded(answer.body)
        } catch {
          return Effect.fail("not JSON")
        }
        if (!isObject(doc)) return Effect.fail("not a JSON object")
        this.#value = doc
        this.#fetchedAt = this.now()
        return Effect.succeed(doc)
      }),
      Effect.ensuring(Effect.sync(() => {
        this.#inFlight = undefined
      })),
      Deferred.into(done)
    )
    return Effect.andThen(Effect.forkIn(run, this.scope), Deferred.await(done))
  })
}

const trimSlash = (s: string) => s.replace(/\/+$/, "")

/** RFC 8414 §3.1: the well-known segment goes between the issuer's origin and its path. */
const rfc8414Url = (issuer: string): string | undefined => {
  try {
    const u = new URL(issuer)
    return `${u.origin}${AUTHORIZATION_SERVER}${trimSlash(u.pathname)}`
  } catch {
    return undefined
  }
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

type ProviderKind = "generic" | "auth0" | "keycloak"

const providerOf = (config: Config): ProviderKind => {
  const p = config.provider
  if (p === undefined || p === null) return "generic"
  return p.auth0 !== undefined && p.auth0 !== null ? "auth0" : "keycloak"
}

const upstreamFailed = (path: string, what: string, cause: string) =>
  Effect.andThen(
    Effect.logWarning(`mcpAuthentication at ${path}: ${what} failed: ${cause}`),
    Effect.fail(ProxyError.make({ _tag: "UpstreamFailed", cause }))
  )

export const policy = Policy.define({
  key: "mcpAuthentication",
  make: (config, _env, path) =>
    Effect.gen(function*() {
      const provider = providerOf(config)
      const issuer = trimSlash(config.issuer)
      const jwks = config.jwks ?? { url: provider === "keycloak" ? `${issuer}/protocol/openid-connect/certs` : `${issuer}/.well-known/jwks.json` }
      const auth = yield* JwtAuth.authenticator(
        {
          mode: config.mode ?? "strict",
          location: config.authorizationLocation ?? CredentialLocation.bearerHeader,
          issuer: config.issuer,
          audiences: config.audiences,
          jwks,
          ...(config.jwtValidationOptions === undefined ? {} : { jwtValidationOptions: config.jwtValidationOptions })
        },
        path
      )
      const resource = config.resourceMetadata["resource"]
      let fixedBase: string | undefined
      if (typeof resource === "string") {
        try {
          fixedBase = new URL(resource).origin
        } catch {
          return yield* Effect.fail(ConfigError.make(`${path}.resourceMetadata.resource`, `"${resource}" is not an absolute URL`))
        }
      }
      const extra: Array<readonly [string, unknown]> = Object.entries(config.resourceMetadata).map(([k, v]) => [snakeCase(k), v])
      const metadataUrl = provider === "keycloak" ? `${issuer}/.well-known/openid-configuration` : rfc8414Url(config.issuer)
      if (metadataUrl === undefined) return yield* Effect.fail(ConfigError.make(`${path}.issuer`, `"${config.issuer}" is not an absolute URL`))
      const clock = yield* Clock.clockWith(Effect.succeed)
      const asMetadata = new AsMetadata(metadataUrl, () => clock.currentTimeMillisUnsafe(), yield* Effect.scope)
      const registrationUrl = `${issuer}/clients-registrations/openid-connect`
      const firstAudience = config.audiences[0]
      const base = (ctx: ProxyRequest) => fixedBase ?? requestBase(ctx)

      const rejectFor = (ctx: ProxyRequest) =>
        Effect.fail(ProxyError.make({ _tag: "McpAuthenticationFailed", resourceMetadata: `${base(ctx)}${PROTECTED_RESOURCE}${ctx.path}` }))

      const protectedResource = (ctx: ProxyRequest, suffix: string): ProxyResponse => {
        const b = base(ctx)
        const doc: Record<string, unknown> = {
          resource: `${b}${suffix}`,
          // With an adapter the client must read the rewritten metadata from us (RFC 8414 from this issuer).
          authorization_servers: [provider === "generic" ? config.issuer : `${b}${suffix}`],
          mcp_protocol_version: MCP_PROTOCOL_VERSION,
          resource_type: "mcp-server"
        }
        for (const [k, v] of extra) doc[k] = v
        return json(200, JSON.stringify(doc), true, ctx)
      }

      const authorizationServer = (ctx: ProxyRequest, suffix: string) =>
        Effect.matchEffect(asMetadata.get, {
          onFailure: (cause) => upstreamFailed(path, `authorization-server metadata from ${metadataUrl}`, cause),
          onSuccess: (original) => {
            const doc: Record<string, unknown> = { ...original }
            if (provider !== "generic") doc["issuer"] = `${base(ctx)}${suffix}`
            const ae = doc["authorization_endpoint"]
            if (provider === "auth0" && typeof ae === "string" && firstAudience !== undefined) {
              doc["authorization_endpoint"] = `${ae}${ae.includes("?") ? "&" : "?"}audience=${encodeURIComponent(firstAudience)}`
            }
            if (provider === "keycloak") doc["registration_endpoint"] = `${requestBase(ctx)}${ctx.path}${CLIENT_REGISTRATION}`
            return Effect.succeed(json(200, JSON.stringify(doc), true, ctx))
          }
        })

      const register = (ctx: ProxyRequest) =>
        Effect.flatMap(RequestBody.read(ctx, REGISTRATION_MAX_BYTES), (body) => {
          if (body === undefined) return Effect.fail(ProxyError.make({ _tag: "BodyTooLarge" }))
          return Effect.matchEffect(callIdp(registrationUrl, "POST", body, firstHeader(ctx, "content-type") ?? "application/json"), {
            onFailure: (cause) => upstreamFailed(path, "client registration", cause),
            onSuccess: (answer) => {
              const res = json(answer.status, answer.body, true, ctx)
              if (answer.contentType !== undefined) res.headers["content-type"] = answer.contentType
              return Effect.succeed(res)
            }
          })
        })

      const wellKnown = (ctx: ProxyRequest): Effect.Effect<ProxyResponse, ProxyError.ProxyError> | undefined => {
        const prm = suffixOf(ctx.path, PROTECTED_RESOURCE)
        if (prm !== undefined) {
          if (ctx.method === "OPTIONS") return Effect.succeed(preflight(ctx))
          return ctx.method === "GET" || ctx.method === "HEAD" ? Effect.succeed(protectedResource(ctx, prm)) : undefined
        }
        const asm = suffixOf(ctx.path, AUTHORIZATION_SERVER)
        if (asm === undefined) return undefined
        if (ctx.method === "OPTIONS") return Effect.succeed(preflight(ctx))
        if (provider === "keycloak" && asm.endsWith(CLIENT_REGISTRATION)) {
          return ctx.method === "POST" ? register(ctx) : undefined
        }
        return ctx.method === "GET" || ctx.method === "HEAD" ? authorizationServer(ctx, asm) : undefined
      }

      const strict = auth.mode === "strict"
      const permissive = auth.mode === "permissive"
      return (next: Policy.Handler): Policy.Handler =>
        Effect.flatMap(currentRequest, (ctx) => {
          // The documents a client reads before it has a token are exempt from validation.
          const known = ctx.path.startsWith("/.well-known/") ? wellKnown(ctx) : undefined
          if (known !== undefined) {
            ctx.directResponse = true
            return known
          }
          const token = auth.extract(ctx)
          if (token === undefined) return strict ? rejectFor(ctx) : next
          const hit = auth.cached(token)
          if (hit !== undefined) {
            auth.accept(ctx, token, hit)
            return next
          }
          return Effect.matchEffect(auth.verify(token), {
            onFailure: () => {
            if (permissive) return next
            auth.discard(ctx)
            return rejectFor(ctx)
          },
            onSuccess: (verified) => {
              auth.accept(ctx, token, verified)
              return next
            }
          })
        })
    })
})
