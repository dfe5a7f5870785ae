/**
 * `jwtAuth`: validates a bearer JWT against trusted issuers (agentgateway's `http/jwt.rs`).
 *
 * - Modes: `strict` (a valid token is required), `optional` (the default: a present token
 *   must be valid), `permissive` (never rejects; a valid token still exposes its claims).
 * - The token header MUST carry a `kid`; the key is looked up across the providers in order
 *   and the token is then checked against that provider's `iss`, `aud` (any-of, when
 *   audiences are configured) and required claims (default `["exp"]`), with `exp`/`nbf`
 *   checked whenever present, and an `iat` later than now refused, within `CLOCK_SKEW_SECONDS`.
 * - Algorithms come from the key, never from the token (RFC 8725 §3.1): each JWK is bound when
 *   imported to the algorithms its type and curve allow, so `none` and HS* (the RS→HS
 *   confusion) can never verify, and a JWK whose `alg` does not fit its key is a config error.
 *   `jku`/`x5u`/`jwk`/`x5c` header parameters are ignored: keys come from config only.
 * - JWKS from a file, inline JSON, or a URL. A URL is fetched when the snapshot is built and
 *   refreshed in the background after its `Cache-Control: max-age` (clamped); a failed fetch
 *   keeps the last good keys and is retried after `JWKS_FAILURE_RETRY_MS`. An unknown `kid`
 *   refetches at most once per `UNKNOWN_KID_COOLDOWN_MS` per provider, so a flood of bogus
 *   `kid`s costs at most one fetch per cooldown (security.md §4).
 * - Verified tokens are kept in a bounded LRU keyed by the token until they expire (and
 *   dropped when a provider's keys change), so signature checks stay off the hot path.
 *
 * On success the credential is removed before forwarding, the claims become CEL `jwt.*`, the
 * caller identity is `jwt:<iss>|<sub>`. A rejection is 401 `authentication failure: <reason>`
 * with a fixed reason: never the token or key material.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
// jose (and the WebCrypto it pulls in: ~14 MiB of resident memory) is loaded by `build`, only
// when a config has a jwtAuth policy.
type Jose = typeof import("jose")
import { createPublicKey, type JsonWebKey, type KeyObject } from "node:crypto"
import { isIP } from "node:net"
import type { Pool } from "undici"
import * as CelContext from "../cel/Context.ts"
import * as Functions from "../cel/Functions.ts"
import type * as Ir from "../ir/Ir.ts"
import * as ConfigError from "../config/ConfigError.ts"
import { opt, req } from "../config/Fields.ts"
import { read } from "../listeners/Tls.ts"
import * as Policy from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"
import { BoundedLru } from "../shared/lru.ts"
import * as BackendTls from "./BackendTls.ts"
import * as CredentialLocation from "./CredentialLocation.ts"
import * as Undici from "../backends/Undici.ts"
import * as BoundedBody from "../shared/BoundedBody.ts"
import * as Json from "../shared/Json.ts"

// ---------------------------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------------------------

/** Leeway on `exp`/`nbf`, as upstream's jsonwebtoken default (60 s). */
export const CLOCK_SKEW_SECONDS = 60
/** An unknown `kid` refetches a JWKS URL at most once per this period (jose's default). */
export const UNKNOWN_KID_COOLDOWN_MS = 30_000
/** A fetched JWKS is kept at least this long, whatever `max-age` says (upstream: 60 s). */
export const JWKS_MIN_TTL_MS = 60_000
/** …and at most this long, so key removals are picked up. */
export const JWKS_MAX_TTL_MS = 24 * 60 * 60_000
/** Kept this long when the response has no `max-age` (jose's `cacheMaxAge`). */
export const JWKS_DEFAULT_TTL_MS = 10 * 60_000
/** A failed fetch is retried after this (upstream: 15 s). */
export const JWKS_FAILURE_RETRY_MS = 15_000
/** One JWKS fetch, connect to last byte. */
export const JWKS_FETCH_TIMEOUT_MS = 5_000
/** Largest JWKS body accepted. */
export const JWKS_MAX_BYTES = 512 * 1024
/** Most keys one JWKS may hold. */
export const JWKS_MAX_KEYS = 256
/** A longer `kid` cannot name a key (it is only a map key; security.md §4 "kid injection"). */
export const MAX_KID_LENGTH = 256
/** Verified tokens kept per policy. */
export const VERIFIED_CACHE_ENTRIES = 4096
/** Longer tokens are verified every time rather than pinned in memory. */
export const MAX_CACHED_TOKEN_LENGTH = 8192
/** A verified token is re-checked at least this often, even if it expires later (or never). */
export const VERIFIED_CACHE_MAX_AGE_MS = 10 * 60_000

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

export const Mode = Schema.Literals(["strict", "optional", "permissive"]).annotate({
  description: "`strict`: a valid JWT is required; `optional` (default): a JWT, when present, must be valid; `permissive`: never rejects, valid JWTs still expose claims."
})

export const Jwks = Schema.Union([
  Schema.Struct({ file: req(Schema.String, "Path of a JWKS JSON file, read when the config is loaded.") }),
  Schema.String.annotate({ description: "The JWKS as inline JSON text." }),
  Schema.Struct({
    url: req(Schema.String, "http(s) URL of the JWKS, fetched when the config is loaded and refreshed in the background."),
    policies: opt(
      Schema.Struct({
        backendTLS: opt(BackendTls.Config, "TLS of the JWKS fetch (an https URL): roots, client certificate, hostname/SAN checks, as for a backend.")
      }).annotate({ description: "Connection policies of the JWKS fetch." }),
      "Connection policies of the JWKS fetch (effect-agentgateway extension; upstream has no field here). Default: Node's CA store."
    )
  })
]).annotate({ description: "JSON Web Key Set used to verify token signatures: inline, from a file, or fetched remotely." })

export const ValidationOptions = Schema.Struct({
  requiredClaims: opt(
    Schema.Array(Schema.String),
    "Claims that must be present: only `exp`, `nbf`, `aud`, `iss`, `sub` are enforced (others are ignored, as upstream). Default `[\"exp\"]`; `[]` requires nothing beyond issuer and audiences."
  )
}).annotate({ description: "Claim requirements enforced after the signature is verified." })

const providerFields = {
  issuer: req(Schema.String, "Expected token issuer. The JWT `iss` claim is required and must match."),
  audiences: opt(Schema.Array(Schema.String), "Accepted token audiences. A non-empty list requires a JWT `aud` claim with one of them."),
  jwks: req(Jwks, "JSON Web Key Set used to verify token signatures. Can be inline, from a file, or fetched remotely."),
  jwtValidationOptions: opt(ValidationOptions, "Claim requirements to enforce after the token signature is verified.")
}

export const Provider = Schema.Struct(providerFields).annotate({ description: "A trusted issuer and its signing keys." })

const commonFields = {
  mode: opt(Mode, "Controls whether requests must include a JWT and how validation failures are handled. Default `optional`."),
  location: opt(CredentialLocation.Config, "Where to read the JWT from. Default: the `Authorization` header with prefix `Bearer `.")
}

export const Config = Schema.Union([
  Schema.Struct({ ...commonFields, providers: req(Schema.Array(Provider), "Trusted issuers and their signing keys.") }).annotate({
    description: "Validate JWTs against one or more trusted token issuers."
  }),
  Schema.Struct({ ...commonFields, ...providerFields }).annotate({ description: "Validate JWTs against a single trusted token issuer." })
]).annotate({ description: "Authenticate requests with JWT bearer tokens; 401 `authentication failure: …` when rejected." })
export type Config = typeof Config.Type

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

interface VerificationKey {
  readonly key: KeyObject
  readonly algorithms: Array<string>
}

type KeySet = ReadonlyMap<string, VerificationKey>

const RSA_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
const EC_ALGORITHM: Readonly<Record<string, string>> = { "P-256": "ES256", "P-384": "ES384", "P-521": "ES512" }
const OKP_ALGORITHMS: Readonly<Record<string, ReadonlyArray<string>>> = { Ed25519: ["EdDSA", "Ed25519"] }

/** The algorithms a JWK may verify, or why it cannot be used. HS* and `none` are never in the list. */
const algorithmsOf = (jwk: Readonly<Record<string, unknown>>): Array<string> | string => {
  const kty = jwk["kty"]
  const crv = typeof jwk["crv"] === "string" ? jwk["crv"] : ""
  let family: ReadonlyArray<string>
  if (kty === "RSA") family = RSA_ALGORITHMS
  else if (kty === "EC") {
    const alg = EC_ALGORITHM[crv]
    if (alg === undefined) return `unsupported EC curve "${crv}"`
    family = [alg]
  } else if (kty === "OKP") {
    const algs = OKP_ALGORITHMS[crv]
    if (algs === undefined) return `unsupported OKP curve "${crv}"`
    family = algs
  } else if (kty === "oct") return "symmetric (kty oct) keys are not accepted: only RSA, EC and OKP public keys"
  else return `unsupported key type ${JSON.stringify(kty)}`
  const alg = jwk["alg"]
  if (alg === undefined) return [...family]
  if (typeof alg !== "string" || !family.includes(alg)) return `alg ${JSON.stringify(alg)} does not fit a ${String(kty)} key`
  return [alg]
}

interface ParsedKeys {
  readonly keys: Map<string, VerificationKey>
  readonly problems: ReadonlyArray<string>
}

/** Imports a JWKS document; every unusable key is a problem (config error locally, skipped remotely). */
const parseJwks = (text: string): ParsedKeys | string => {
  let doc: unknown
  try {
    doc = Json.parseBounded(text)
  } catch (error) {
    return `invalid JWKS JSON: ${error instanceof Error ? error.message : String(error)}`
  }
  if (typeof doc !== "object" || doc === null || !("keys" in doc) || !Array.isArray(doc.keys)) return "a JWKS must be an object with a `keys` array"
  const list: ReadonlyArray<unknown> = doc.keys
  if (list.length > JWKS_MAX_KEYS) return `a JWKS may hold at most ${JWKS_MAX_KEYS} keys`
  const keys = new Map<string, VerificationKey>()
  const problems: Array<string> = []
  list.forEach((entry: unknown, i) => {
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) return void problems.push(`keys[${i}]: not an object`)
    const jwk: Readonly<Record<string, unknown>> = Object.fromEntries(Object.entries(entry))
    // Encryption keys may share a JWKS with signing keys; they never verify a signature.
    if (jwk["use"] !== undefined && jwk["use"] !== "sig") return
    const kid = jwk["kid"]
    if (typeof kid !== "string" || kid === "") return void problems.push(`keys[${i}]: the key has no \`kid\``)
    if (kid.length > MAX_KID_LENGTH) return void problems.push(`keys[${i}]: \`kid\` longer than ${MAX_KID_LENGTH}`)
    if (keys.has(kid)) return void problems.push(`keys[${i}]: duplicate \`kid\` "${kid}"`)
    const algorithms = algorithmsOf(jwk)
    if (typeof algorithms === "string") return void problems.push(`keys[${i}] ("${kid}"): ${algorithms}`)
    const publicJwk: JsonWebKey = {}
    for (const name of ["kty", "crv", "n", "e", "x", "y"]) if (typeof jwk[name] === "string") publicJwk[name] = jwk[name]
    try {
      keys.set(kid, { key: createPublicKey({ key: publicJwk, format: "jwk" }), algorithms })
    } catch (error) {
      problems.push(`keys[${i}] ("${kid}"): invalid key: ${error instanceof Error ? error.message : String(error)}`)
    }
  })
  return { keys, problems }
}

// ---------------------------------------------------------------------------------------------
// Remote JWKS
// ---------------------------------------------------------------------------------------------

const MAX_AGE = /(?:^|,)\s*max-age\s*=\s*"?(\d+)"?\s*(?:,|$)/i
const NO_CACHE = /(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|$)/i

/** How long a fetched JWKS is kept: `Cache-Control: max-age`, clamped to [min, max]. */
export const ttlOf = (cacheControl: string | undefined): number => {
  if (cacheControl === undefined) return JWKS_DEFAULT_TTL_MS
  if (NO_CACHE.test(cacheControl)) return JWKS_MIN_TTL_MS
  const m = MAX_AGE.exec(cacheControl)
  if (m === null) return JWKS_DEFAULT_TTL_MS
  return Math.min(JWKS_MAX_TTL_MS, Math.max(JWKS_MIN_TTL_MS, Number(m[1]) * 1000))
}

interface Fetched {
  readonly text: string
  readonly cacheControl: string | undefined
}

/** Reads the body, destroying it past `JWKS_MAX_BYTES`. */
const readBounded = (body: AsyncIterable<unknown> & { destroy(): void }): Promise<string> =>
  BoundedBody.readText(body, JWKS_MAX_BYTES, () => new Error(`body over ${JWKS_MAX_BYTES} bytes`))

const fetchJwks = (pool: Pool, path: string): Effect.Effect<Fetched, string> =>
  Effect.tryPromise({
    try: (signal) =>
      pool
        .request({
          path,
          method: "GET",
          headers: { accept: "application/json" },
          // A real-time bound on the whole exchange (a trickling body included), independent of
          // the Effect clock.
          signal: AbortSignal.any([signal, AbortSignal.timeout(JWKS_FETCH_TIMEOUT_MS)]),
          headersTimeout: JWKS_FETCH_TIMEOUT_MS,
          bodyTimeout: JWKS_FETCH_TIMEOUT_MS
        })
        .then((res) => {
          if (res.statusCode !== 200) {
            res.body.destroy()
            throw new Error(`status ${res.statusCode}`)
          }
          const cc = res.headers["cache-control"]
          return readBounded(res.body).then((text) => ({ text, cacheControl: Array.isArray(cc) ? cc.join(",") : cc }))
        }),
    catch: (error) => (error instanceof Error ? error.message : String(error))
  })

/** A JWKS URL: its keys (last good), when to refresh next, and at most one fetch at a time. */
class RemoteJwks {
  keys: KeySet = new Map()
  nextRefreshAt = 0
  lastAttemptAt = Number.NEGATIVE_INFINITY
  #inFlight: Deferred.Deferred<void> | undefined = undefined

  readonly url: string
  private readonly pool: Pool
  private readonly requestPath: string
  private readonly now: () => number
  private readonly scope: Scope.Scope
  private readonly policyPath: string
  private readonly onChange: () => void

  constructor(url: string, pool: Pool, requestPath: string, now: () => number, scope: Scope.Scope, policyPath: string, onChange: () => void) {
    this.url = url
    this.pool = pool
    this.requestPath = requestPath
    this.now = now
    this.scope = scope
    this.policyPath = policyPath
    this.onChange = onChange
  }

  private readonly fetchOnce: Effect.Effect<void> = Effect.suspend(() => {
    this.lastAttemptAt = this.now()
    return Effect.matchEffect(fetchJwks(this.pool, this.requestPath), {
      onFailure: (reason) => this.failed(reason),
      onSuccess: (fetched) => {
        const parsed = parseJwks(fetched.text)
        if (typeof parsed === "string") return this.failed(parsed)
        if (parsed.keys.size === 0) return this.failed(`no usable keys${parsed.problems.length > 0 ? ` (${parsed.problems.join("; ")})` : ""}`)
        this.keys = parsed.keys
        this.nextRefreshAt = this.now() + ttlOf(fetched.cacheControl)
        this.onChange()
        return parsed.problems.length === 0
          ? Effect.void
          : Effect.logWarning(`jwtAuth at ${this.policyPath}: JWKS ${this.url}: skipped keys: ${parsed.problems.join("; ")}`)
      }
    })
  })

  private failed(reason: string): Effect.Effect<void> {
    this.nextRefreshAt = this.now() + JWKS_FAILURE_RETRY_MS
    return Effect.logWarning(`jwtAuth at ${this.policyPath}: JWKS fetch from ${this.url} failed (${reason}); keeping ${this.keys.size} last good key(s)`)
  }

  /**
   * Fetches now, or joins the fetch in flight. The fetch runs in the snapshot's scope, so a
   * request that gives up waiting never leaves the others hanging.
   */
  readonly refresh: Effect.Effect<void> = Effect.suspend(() => {
    const current = this.#inFlight
    if (current !== undefined) return Deferred.await(current)
    const done = Deferred.makeUnsafe<void>()
    this.#inFlight = done
    const run = this.fetchOnce.pipe(
      Effect.ensuring(Effect.sync(() => {
        this.#inFlight = undefined
      })),
      Deferred.into(done)
    )
    return Effect.andThen(Effect.forkIn(run, this.scope), Deferred.await(done))
  })

  /** Refetches for an unknown `kid` unless a fetch started within the cooldown. */
  readonly refreshForUnknownKid: Effect.Effect<void> = Effect.suspend(() =>
    this.#inFlight !== undefined || this.now() - this.lastAttemptAt >= UNKNOWN_KID_COOLDOWN_MS ? this.refresh : Effect.void
  )

  /** The background refresher: sleeps until the keys are due, fetches, repeats. */
  readonly refresher: Effect.Effect<never> = Effect.suspend(() => {
    const wait = this.nextRefreshAt - this.now()
    return wait > 0 ? Effect.sleep(wait) : this.refresh
  }).pipe(Effect.forever)
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

const ENFORCEABLE_CLAIMS: ReadonlySet<string> = new Set(["exp", "nbf", "aud", "iss", "sub"])

interface Issuer {
  readonly issuer: string
  readonly audiences: Array<string> | undefined
  readonly requiredClaims: Array<string>
  readonly local: KeySet | undefined
  readonly remote: RemoteJwks | undefined
}

const keysOf = (issuer: Issuer): KeySet => issuer.local ?? issuer.remote?.keys ?? new Map()

/** What a verified token gives every request that presents it again. */
export interface Verified {
  readonly claims: unknown
  readonly identity: string
  readonly validUntil: number
}

const invalid = (what: string) => `the token is invalid: ${what}`

/** A fixed reason for a jose failure: claim names only from a known set, no token content. */
const describe = (JoseErrors: Jose["errors"]) => (error: unknown): string => {
  if (error instanceof JoseErrors.JWTExpired) return invalid("expired")
  if (error instanceof JoseErrors.JWTClaimValidationFailed) {
    const claim = ENFORCEABLE_CLAIMS.has(error.claim) ? error.claim : "a claim"
    if (error.reason === "missing") return invalid(`missing required claim \`${claim}\``)
    if (error.claim === "nbf") return invalid("not yet valid")
    if (error.claim === "iss") return invalid("issuer not accepted")
    if (error.claim === "aud") return invalid("audience not accepted")
    return invalid(`claim \`${claim}\` rejected`)
  }
  if (error instanceof JoseErrors.JOSEAlgNotAllowed) return invalid("algorithm not allowed for its key")
  if (error instanceof JoseErrors.JWSSignatureVerificationFailed) return invalid("signature verification failed")
  return invalid("malformed")
}

const decodePayload = (token: string): unknown => {
  const first = token.indexOf(".")
  const second = token.indexOf(".", first + 1)
  // Re-parsed from the source text so integral claims are exact CEL ints (BigInt).
  return Functions.parseJson(Buffer.from(token.slice(first + 1, second), "base64url").toString("utf8"))
}

const NO_TOKEN = "no bearer token found"
const NO_KID = "the token header does not specify a `kid`"
const UNKNOWN_KID = "token uses an unknown key"
const BAD_HEADER = "the token header is malformed"

interface Verifier {
  readonly verify: (token: string) => Effect.Effect<Verified, string>
  readonly cache: BoundedLru<string, Verified>
}

const makeVerifier = (issuers: ReadonlyArray<Issuer>, now: () => number, jose: Jose): Verifier => {
  const { decodeProtectedHeader, jwtVerify } = jose
  const reason = describe(jose.errors)
  const cache = new BoundedLru<string, Verified>(VERIFIED_CACHE_ENTRIES)
  const remotes = issuers.flatMap((i) => (i.remote === undefined ? [] : [i.remote]))
  const lookup = (kid: string): { readonly issuer: Issuer; readonly key: VerificationKey } | undefined => {
    for (const issuer of issuers) {
      const key = keysOf(issuer).get(kid)
      if (key !== undefined) return { issuer, key }
    }
    return undefined
  }
  const refreshAll = Effect.forEach(remotes, (r) => r.refreshForUnknownKid, { concurrency: "unbounded", discard: true })

  const check = (token: string, issuer: Issuer, key: VerificationKey): Effect.Effect<Verified, string> =>
    Effect.suspend(() => {
      const at = now()
      return Effect.tryPromise({
        try: () =>
          jwtVerify(token, key.key, {
            algorithms: key.algorithms,
            issuer: issuer.issuer,
            ...(issuer.audiences === undefined ? {} : { audience: issuer.audiences }),
            requiredClaims: issuer.requiredClaims,
            clockTolerance: CLOCK_SKEW_SECONDS,
            currentDate: new Date(at)
          }),
        catch: reason
      }).pipe(
        Effect.flatMap(({ payload }) =>
          // jose bounds `iat` only together with a maximum token age: a token "issued" in the
          // future is a clock or issuer fault, or one minted to outlive its key (RFC 8725 §3.10).
          typeof payload.iat === "number" && payload.iat > at / 1000 + CLOCK_SKEW_SECONDS
            ? Effect.fail(invalid("issued in the future"))
            : Effect.try({
              try: (): Verified => {
                const claims = Functions.fromJson(decodePayload(token))
                const sub = typeof payload.sub === "string" ? payload.sub : ""
                const cap = at + VERIFIED_CACHE_MAX_AGE_MS
                const validUntil = typeof payload.exp === "number" ? Math.min(cap, (payload.exp + CLOCK_SKEW_SECONDS) * 1000) : cap
                return { claims, identity: `jwt:${issuer.issuer}|${sub}`, validUntil }
              },
              catch: () => invalid("malformed")
            })
        )
      )
    })

  const verify = (token: string): Effect.Effect<Verified, string> =>
    Effect.suspend(() => {
      let kid: unknown
      try {
        kid = decodeProtectedHeader(token).kid
      } catch {
        return Effect.fail(BAD_HEADER)
      }
      if (typeof kid !== "string" || kid === "") return Effect.fail(NO_KID)
      if (kid.length > MAX_KID_LENGTH) return Effect.fail(UNKNOWN_KID)
      const found = lookup(kid)
      if (found !== undefined) return check(token, found.issuer, found.key)
      if (remotes.length === 0) return Effect.fail(UNKNOWN_KID)
      return Effect.flatMap(refreshAll, () => {
        const again = lookup(kid)
        return again === undefined ? Effect.fail(UNKNOWN_KID) : check(token, again.issuer, again.key)
      })
    })

  return { verify, cache }
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

interface ProviderConfig {
  readonly issuer: string
  readonly audiences?: ReadonlyArray<string> | null | undefined
  readonly jwks: typeof Jwks.Type
  readonly jwtValidationOptions?: typeof ValidationOptions.Type | null | undefined
}

const providersOf = (config: Config): ReadonlyArray<{ readonly provider: ProviderConfig; readonly path: string }> =>
  "providers" in config
    ? config.providers.map((provider, i) => ({ provider, path: `providers[${i}]` }))
    : [{ provider: { issuer: config.issuer, audiences: config.audiences, jwks: config.jwks, jwtValidationOptions: config.jwtValidationOptions }, path: "" }]

const fieldPath = (base: string, sub: string, field: string) => `${base}${sub === "" ? "" : `.${sub}`}.${field}`

const localKeys = (text: string, path: string): Effect.Effect<KeySet, ConfigError.ConfigError> => {
  const parsed = parseJwks(text)
  if (typeof parsed === "string") return Effect.fail(ConfigError.make(path, parsed))
  if (parsed.problems.length > 0) return Effect.fail(ConfigError.make(path, parsed.problems.join("; ")))
  if (parsed.keys.size === 0) return Effect.fail(ConfigError.make(path, "the JWKS has no signing keys"))
  return Effect.succeed(parsed.keys)
}

const remoteJwks = (
  url: string,
  tlsConfig: BackendTls.Config | undefined,
  path: string,
  policyPath: string,
  now: () => number,
  onChange: () => void
) =>
  Effect.gen(function*() {
    let parsed: URL
    try {
      parsed = new URL(url)
    } catch {
      return yield* Effect.fail(ConfigError.make(path, `invalid JWKS URL "${url}"`))
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return yield* Effect.fail(ConfigError.make(path, "a JWKS URL must be http or https"))
    const tlsPath = `${path.slice(0, -".url".length)}.policies.backendTLS`
    if (tlsConfig !== undefined && parsed.protocol !== "https:") {
      return yield* Effect.fail(ConfigError.make(tlsPath, "backendTLS needs an https JWKS URL"))
    }
    const tls = tlsConfig === undefined ? undefined : yield* BackendTls.load(tlsConfig, jwksTarget(parsed), tlsPath)
    const scope = yield* Effect.scope
    // The package entry (it installs `Pool.request`) costs ~5 MiB of heap: loaded only by a
    // config that fetches a JWKS, not by every gateway (the backend pools use the bare Pool).
    const undici = yield* Effect.promise(Undici.load)
    const pool = new undici.Pool(parsed.origin, { connections: 1, connect: { timeout: JWKS_FETCH_TIMEOUT_MS, ...tls?.connect } })
    yield* Effect.addFinalizer(() => Effect.promise(() => pool.destroy()))
    const remote = new RemoteJwks(url, pool, parsed.pathname + parsed.search, now, scope, policyPath, onChange)
    // Loaded with the config (as upstream); a failure here is logged and retried in the
    // background rather than failing the snapshot, so an IdP outage cannot block a reload.
    yield* remote.refresh
    yield* Effect.forkIn(remote.refresher, scope)
    return remote
  })

/** The JWKS origin as a backend target, for backendTLS's name checks. */
const jwksTarget = (url: URL): Ir.HostTarget => {
  const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname
  return { _tag: "Host", host, port: url.port === "" ? 443 : Number(url.port), isHostname: isIP(host) === 0 }
}

/** Builds the policy's verifier; exported for tests that count JWKS fetches. */
export const build = (config: Config, path: string) =>
  Effect.gen(function*() {
    const clock = yield* Clock.clockWith(Effect.succeed)
    const now = () => clock.currentTimeMillisUnsafe()
    // The verified-token cache is created below; a key change empties it.
    let onChange = (): void => {}
    const issuers: Array<Issuer> = []
    for (const { provider, path: sub } of providersOf(config)) {
      const jwksPath = fieldPath(path, sub, "jwks")
      const jwks = provider.jwks
      const required = provider.jwtValidationOptions?.requiredClaims ?? ["exp"]
      const base = {
        issuer: provider.issuer,
        audiences: provider.audiences === undefined || provider.audiences === null || provider.audiences.length === 0 ? undefined : [...provider.audiences],
        requiredClaims: required.filter((c) => ENFORCEABLE_CLAIMS.has(c))
      }
      if (typeof jwks === "string") issuers.push({ ...base, local: yield* localKeys(jwks, jwksPath), remote: undefined })
      else if ("file" in jwks) {
        const text = (yield* read(jwks.file, `${jwksPath}.file`)).toString("utf8")
        issuers.push({ ...base, local: yield* localKeys(text, `${jwksPath}.file`), remote: undefined })
      } else {
        const tls = jwks.policies?.backendTLS ?? undefined
        const remote = yield* remoteJwks(jwks.url, tls, `${jwksPath}.url`, path, now, () => onChange())
        issuers.push({ ...base, local: undefined, remote })
      }
    }
    const jose = yield* Effect.promise(() => import("jose"))
    const verifier = makeVerifier(issuers, now, jose)
    onChange = () => verifier.cache.clear()
    const location = yield* CredentialLocation.make(config.location ?? CredentialLocation.bearerHeader, `${path}.location`)
    return { verifier, location, now, mode: config.mode ?? "optional", remotes: issuers.flatMap((i) => (i.remote === undefined ? [] : [i.remote])) }
  })

/**
 * The validation path shared by `jwtAuth` and `mcpAuthentication` (one verifier, one cache, one
 * way to accept a token), so the MCP policy adds protocol behaviour and no JWT checks of its own.
 */
export interface Authenticator {
  readonly mode: "strict" | "optional" | "permissive"
  /** The token at the configured location, or undefined. */
  readonly extract: (ctx: ProxyRequest) => string | undefined
  /** A verification of this token still valid now, or undefined (expired entries are dropped). */
  readonly cached: (token: string) => Verified | undefined
  /** Verifies a token (and caches the result): a fixed, token-free reason on failure. */
  readonly verify: (token: string) => Effect.Effect<Verified, string>
  /** Strips the credential, exposes the claims as CEL `jwt.*`, sets the identity, keeps the token for passthrough. */
  readonly accept: (ctx: ProxyRequest, token: string, verified: Verified) => void
  /**
   * Strips a rejected credential: it goes nowhere, and the access log (whose CEL fields may
   * show `request.uri`) must not carry a query-parameter token either.
   */
  readonly discard: (ctx: ProxyRequest) => void
}

export const authenticator = (config: Config, path: string): Effect.Effect<Authenticator, ConfigError.ConfigError, Scope.Scope> =>
  Effect.map(build(config, path), ({ verifier, location, now, mode }): Authenticator => ({
    mode,
    extract: location.extract,
    cached: (token) => {
      const hit = verifier.cache.get(token)
      if (hit === undefined) return undefined
      if (now() < hit.validUntil) return hit
      verifier.cache.delete(token)
      return undefined
    },
    verify: (token) =>
      Effect.map(verifier.verify(token), (verified) => {
        if (token.length <= MAX_CACHED_TOKEN_LENGTH) verifier.cache.set(token, verified)
        return verified
      }),
    accept: (ctx, token, verified) => {
      location.remove(ctx)
      CelContext.attach(ctx, "jwt", verified.claims)
      ctx.identity = verified.identity
      ctx.validatedJwt = token
    },
    discard: location.remove
  }))

const fail = (detail: string) => Effect.fail(ProxyError.make({ _tag: "AuthenticationFailed", scheme: "jwt", detail }))

export const policy = Policy.define({
  key: "jwtAuth",
  make: (config, _env, path) =>
    Effect.map(authenticator(config, path), (auth): Policy.Middleware => {
      const missing = auth.mode === "strict" ? fail(NO_TOKEN) : undefined
      const permissive = auth.mode === "permissive"
      return (next) =>
        Effect.flatMap(currentRequest, (ctx) => {
          const token = auth.extract(ctx)
          if (token === undefined) return missing ?? next
          const hit = auth.cached(token)
          if (hit !== undefined) {
            auth.accept(ctx, token, hit)
            return next
          }
          return Effect.matchEffect(auth.verify(token), {
            onFailure: (detail) => {
              if (permissive) return next
              auth.discard(ctx)
              return fail(detail)
            },
            onSuccess: (verified) => {
              auth.accept(ctx, token, verified)
              return next
            }
          })
        })
    })
})
