/**
 * Google Cloud tokens for `backendAuth: {gcp}`: a service account's JWT-bearer grant
 * (RFC 7523, Google's "OAuth 2.0 for server to server applications"), signed with `jose`.
 *
 * - Access tokens: assertion `{iss: client_email, scope: cloud-platform, aud: token_uri}`;
 *   ID tokens: `{iss, sub: client_email, target_audience, aud: token_uri}` (Cloud Run, IAP).
 * - The token endpoint is the credential's `token_uri` (Google's by default), which is how a
 *   test points it at a local peer.
 * - Tokens are cached per audience until `TOKEN_REFRESH_MARGIN_MS` before they expire; at most
 *   one refresh per audience is in flight (the others wait for it), and a refresh runs in the
 *   snapshot's scope, so a request that gives up never cancels it for the rest.
 * - Failures are reported without the credential or the endpoint's body (only its status and
 *   OAuth `error` code), as the 500 `backend authentication failed` a client sees says nothing.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Undici from "../backends/Undici.ts"
import * as ConfigError from "../config/ConfigError.ts"
import { BoundedLru } from "../shared/lru.ts"
import * as BoundedBody from "../shared/BoundedBody.ts"
import * as Json from "../shared/Json.ts"

type Jose = typeof import("jose")

/** Refresh this long before a token expires (Google's client libraries use 5 min). */
export const TOKEN_REFRESH_MARGIN_MS = 5 * 60_000
/** Lifetime of the signed assertion (Google's maximum: 1 h). */
export const ASSERTION_LIFETIME_S = 3600
/** One token request, connect to last byte. */
export const TOKEN_FETCH_TIMEOUT_MS = 10_000
/** Largest token response accepted. */
export const TOKEN_RESPONSE_MAX_BYTES = 64 * 1024
/** Audiences whose ID tokens are kept (one per destination host without a configured audience). */
export const TOKEN_CACHE_ENTRIES = 256
/** Used when a token response gives no lifetime. */
export const DEFAULT_TOKEN_LIFETIME_MS = 3600_000

export const CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
export const GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
const JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"

export interface ServiceAccount {
  readonly clientEmail: string
  readonly privateKey: string
  readonly privateKeyId: string | undefined
  readonly tokenUri: string
}

/** Parses ADC JSON; the reason never quotes the document (it holds a private key). */
export const parseServiceAccount = (text: string): ServiceAccount | string => {
  let doc: unknown
  try {
    doc = Json.parseBounded(text)
  } catch {
    return "the credential is not valid JSON"
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) return "the credential must be a JSON object"
  const field = (name: string): unknown => (name in doc ? (doc as Record<string, unknown>)[name] : undefined)
  const type = field("type")
  if (type !== "service_account") {
    return `credential type ${JSON.stringify(typeof type === "string" ? type : String(type))} is not supported yet (only "service_account")`
  }
  const clientEmail = field("client_email")
  const privateKey = field("private_key")
  const privateKeyId = field("private_key_id")
  const tokenUri = field("token_uri")
  if (typeof clientEmail !== "string" || clientEmail === "") return "the credential has no client_email"
  if (typeof privateKey !== "string" || !privateKey.includes("PRIVATE KEY")) return "the credential has no PEM private_key"
  if (tokenUri !== undefined && typeof tokenUri !== "string") return "the credential's token_uri must be a string"
  const uri = tokenUri ?? GOOGLE_TOKEN_URI
  let parsed: URL
  try {
    parsed = new URL(uri)
  } catch {
    return "the credential's token_uri is not a URL"
  }
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") return "the credential's token_uri must be http or https"
  return { clientEmail, privateKey, privateKeyId: typeof privateKeyId === "string" ? privateKeyId : undefined, tokenUri: uri }
}

interface Cached {
  readonly token: string
  readonly refreshAt: number
}

export type TokenKind = "accessToken" | "idToken"

export interface TokenSource {
  /** A cached token for `audience` ("" for access tokens) that needs no refresh yet. */
  readonly cached: (audience: string) => string | undefined
  /** Fetches a token for `audience`, or joins the fetch in flight. */
  readonly refresh: (audience: string) => Effect.Effect<string, string>
}

const readBody = (body: AsyncIterable<unknown> & { destroy(): void }): Promise<string> =>
  BoundedBody.readText(body, TOKEN_RESPONSE_MAX_BYTES, () => new Error(`token response over ${TOKEN_RESPONSE_MAX_BYTES} bytes`))

const oauthError = (text: string): string => {
  try {
    const doc: unknown = Json.parseBounded(text)
    if (typeof doc === "object" && doc !== null && "error" in doc && typeof doc.error === "string" && /^[\w.-]{1,64}$/.test(doc.error)) return ` (${doc.error})`
  } catch {
    // not JSON: nothing safe to report
  }
  return ""
}

/** The `exp` of a JWT, in ms, without verifying it (Google signed it; we only schedule a refresh). */
const expiryOf = (jwt: string): number | undefined => {
  const part = jwt.split(".")[1]
  if (part === undefined) return undefined
  try {
    const claims: unknown = Json.parseBounded(Buffer.from(part, "base64url").toString("utf8"))
    return typeof claims === "object" && claims !== null && "exp" in claims && typeof claims.exp === "number" ? claims.exp * 1000 : undefined
  } catch {
    return undefined
  }
}

export const make = (account: ServiceAccount, kind: TokenKind, path: string): Effect.Effect<TokenSource, ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const jose: Jose = yield* Effect.promise(() => import("jose"))
    const key = yield* Effect.tryPromise({
      try: () => jose.importPKCS8(account.privateKey, "RS256"),
      catch: () => ConfigError.make(path, "the credential's private_key is not a PKCS#8 RSA private key")
    })
    const clock = yield* Clock.clockWith(Effect.succeed)
    const now = () => clock.currentTimeMillisUnsafe()
    const scope = yield* Effect.scope
    const cache = new BoundedLru<string, Cached>(TOKEN_CACHE_ENTRIES)
    const inFlight = new Map<string, Deferred.Deferred<string, string>>()

    const fetchToken = (audience: string, at: number): Effect.Effect<Cached, string> =>
      Effect.tryPromise({
        try: async (signal) => {
          const iat = Math.floor(at / 1000)
          const claims: Record<string, unknown> = kind === "accessToken"
            ? { scope: CLOUD_PLATFORM_SCOPE }
            : { sub: account.clientEmail, target_audience: audience }
          const assertion = await new jose.SignJWT(claims)
            .setProtectedHeader({ alg: "RS256", typ: "JWT", ...(account.privateKeyId === undefined ? {} : { kid: account.privateKeyId }) })
            .setIssuer(account.clientEmail)
            .setAudience(account.tokenUri)
            .setIssuedAt(iat)
            .setExpirationTime(iat + ASSERTION_LIFETIME_S)
            .sign(key)
          const res = await Undici.request(account.tokenUri, {
            method: "POST",
            headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
            body: new URLSearchParams({ grant_type: JWT_BEARER, assertion }).toString(),
            signal: AbortSignal.any([signal, AbortSignal.timeout(TOKEN_FETCH_TIMEOUT_MS)]),
            headersTimeout: TOKEN_FETCH_TIMEOUT_MS,
            bodyTimeout: TOKEN_FETCH_TIMEOUT_MS
          })
          const text = await readBody(res.body)
          if (res.statusCode !== 200) throw new Error(`token endpoint answered ${res.statusCode}${oauthError(text)}`)
          let doc: unknown
          try {
            doc = Json.parseBounded(text)
          } catch {
            throw new Error("token endpoint answered with invalid JSON")
          }
          if (typeof doc !== "object" || doc === null) throw new Error("token endpoint answered with no token")
          const field = kind === "accessToken" ? "access_token" : "id_token"
          const token = field in doc ? (doc as Record<string, unknown>)[field] : undefined
          if (typeof token !== "string" || token === "" || /[\r\n]/.test(token)) throw new Error(`token endpoint answered without ${field}`)
          const expiresIn = "expires_in" in doc && typeof doc.expires_in === "number" ? doc.expires_in * 1000 : undefined
          const expiresAt = kind === "idToken" ? (expiryOf(token) ?? at + DEFAULT_TOKEN_LIFETIME_MS) : at + (expiresIn ?? DEFAULT_TOKEN_LIFETIME_MS)
          const lifetime = expiresAt - at
          // A token shorter-lived than the margin is still used for half its life.
          const refreshAt = lifetime > 2 * TOKEN_REFRESH_MARGIN_MS ? expiresAt - TOKEN_REFRESH_MARGIN_MS : at + Math.max(0, lifetime / 2)
          return { token, refreshAt }
        },
        catch: (cause) => (cause instanceof Error ? cause.message : "token request failed")
      })

    const refresh = (audience: string): Effect.Effect<string, string> =>
      Effect.suspend(() => {
        const current = inFlight.get(audience)
        if (current !== undefined) return Deferred.await(current)
        const done = Deferred.makeUnsafe<string, string>()
        inFlight.set(audience, done)
        const run = fetchToken(audience, now()).pipe(
          Effect.map((cached) => {
            cache.set(audience, cached)
            return cached.token
          }),
          Effect.ensuring(Effect.sync(() => inFlight.delete(audience))),
          Deferred.into(done)
        )
        return Effect.andThen(Effect.forkIn(run, scope), Deferred.await(done))
      })

    const cached = (audience: string): string | undefined => {
      const hit = cache.get(audience)
      return hit !== undefined && now() < hit.refreshAt ? hit.token : undefined
    }
    return { cached, refresh }
  })
