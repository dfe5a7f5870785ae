/**
 * `backendAuth`: the credential the gateway presents to a backend (agentgateway's
 * `http/auth/*`), a backend-phase policy run on every attempt.
 *
 * - `key`: a secret (inline or `{file}`), sent as `Authorization: Bearer <key>` or at `location`
 *   (`{header: {name, prefix?}}`, `{queryParameter}`, `{cookie}`).
 * - `passthrough`: re-adds the JWT that `jwtAuth`/`mcpAuthentication` validated and stripped
 *   (`ctx.validatedJwt`); without one nothing is added.
 * - `aws`: SigV4 (AwsSigV4.ts) with explicit keys or `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/
 *   `AWS_SESSION_TOKEN` read when the snapshot is built; region from config, else
 *   `AWS_REGION`/`AWS_DEFAULT_REGION`, else derived by aws4 from an `amazonaws.com` host. It signs
 *   the request exactly as sent: through `ctx.upstreamSigner`, which the host backend call runs
 *   after every other edit (backend transformations, header modifiers, the host rewrite).
 * - `gcp`: an access token, or an ID token for `audience` (default `https://<destination host>`),
 *   from a service account (GcpToken.ts): `credential`, else the file `GOOGLE_APPLICATION_CREDENTIALS`.
 * - `credentials`: more `{location, key}` pairs, inserted after the main one.
 *
 * MCP backends forward the request's headers to their HTTP and OpenAPI targets, so `key`,
 * `passthrough`, `credentials` and `gcp` (with an explicit `audience` for ID tokens) reach them;
 * `aws` and an audience-less ID token need the final upstream request and are refused there.
 * On an MCP target (mcp/TargetPolicies.ts) both work: the target's transport runs this signer on
 * each request it sends.
 *
 * Secrets never reach logs or error bodies: a failure to obtain a credential is 500 `backend
 * authentication failed` and a log line naming the policy and the cause (never the secret).
 * `SECRET_PATHS` lists its secret fields; test/admin/Redact.test.ts checks config_dump redacts each.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as ConfigError from "../config/ConfigError.ts"
import { opt, req, unsupported, unsupportedMessage } from "../config/Fields.ts"
import { read } from "../listeners/Tls.ts"
import * as Policy from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import * as RequestBody from "../pipeline/RequestBody.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"
import * as AwsSigV4 from "./AwsSigV4.ts"
import * as CredentialLocation from "./CredentialLocation.ts"
import * as GcpToken from "./GcpToken.ts"

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

export const FileOrInline = Schema.Union([
  Schema.String.annotate({ description: "The value itself." }),
  Schema.Struct({ file: req(Schema.String, "Path of a file holding the value (surrounding whitespace trimmed), read when the config is loaded.") })
]).annotate({ description: "A value inline or from a file." })

const KeyWithLocation = Schema.Struct({
  value: req(FileOrInline, "Secret value to send to the backend."),
  location: opt(CredentialLocation.Config, "Where to place the secret in the backend request. Default: `Authorization: Bearer <value>`.")
})

const Gcp = Schema.Union([
  Schema.Struct({
    type: req(Schema.Literal("idToken"), "Fetch an ID token."),
    audience: opt(Schema.String, "Audience for the token. Default: `https://<destination host>`."),
    credential: opt(FileOrInline, "Service-account credential JSON (ADC format). Default: the file named by GOOGLE_APPLICATION_CREDENTIALS.")
  }).annotate({ description: "Fetch an ID token." }),
  Schema.Struct({
    type: opt(Schema.Literal("accessToken"), "Fetch an access token (the default)."),
    credential: opt(FileOrInline, "Service-account credential JSON (ADC format). Default: the file named by GOOGLE_APPLICATION_CREDENTIALS.")
  }).annotate({ description: "Fetch an access token." })
]).annotate({ description: "Authenticate to Google Cloud services with a service account's tokens." })

const serviceName = opt(Schema.String, "AWS SigV4 signing service name (for example `bedrock`, `execute-api`, `s3`). Default: derived from an `amazonaws.com` host.")

const Aws = Schema.Union([
  // Environment credentials first, so a config using a field only they lack names it.
  Schema.Struct({
    serviceName,
    region: opt(Schema.String, "AWS SigV4 signing region. Default: AWS_REGION / AWS_DEFAULT_REGION, else derived from the host."),
    assumeRole: unsupported("backendAuth.aws.assumeRole")
  }).annotate({ description: "Use AWS credentials from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)." }),
  Schema.Struct({
    accessKeyId: req(Schema.String, "AWS access key id."),
    secretAccessKey: req(Schema.String, "AWS secret access key."),
    region: opt(Schema.String, "AWS SigV4 signing region, e.g. `us-east-1`."),
    sessionToken: opt(Schema.String, "Session token of temporary credentials (sent as `x-amz-security-token`)."),
    serviceName
  }).annotate({ description: "Use explicit AWS credentials." })
]).annotate({ description: "Sign backend requests with AWS SigV4." })

export const Credential = Schema.Struct({
  location: req(CredentialLocation.Config, "Where the credential is inserted on the backend request."),
  key: req(FileOrInline, "Credential value.")
}).annotate({ description: "An additional credential to inject on the backend request." })

const KINDS = ["key", "passthrough", "gcp", "aws", "azure", "jwtSign", "oauthTokenExchange", "crossAppAccess"] as const

const Struct = Schema.Struct({
  key: opt(Schema.Union([FileOrInline, KeyWithLocation]), "Send a configured secret: a string or `{file}` (as `Authorization: Bearer <key>`), or `{value, location}`."),
  passthrough: opt(
    Schema.Struct({ location: opt(CredentialLocation.Config, "Where to place the forwarded token. Default: `Authorization: Bearer <token>`.") }),
    "Forward the incoming JWT validated by jwtAuth or mcpAuthentication."
  ),
  gcp: opt(Gcp, "Authenticate to Google Cloud services."),
  aws: opt(Aws, "Sign backend requests with AWS credentials (SigV4)."),
  azure: unsupported("backendAuth.azure"),
  jwtSign: unsupported("backendAuth.jwtSign"),
  oauthTokenExchange: unsupported("backendAuth.oauthTokenExchange"),
  crossAppAccess: unsupported("backendAuth.crossAppAccess"),
  credentials: opt(Schema.Array(Credential), "Additional credentials to inject, after the main one.")
}).check(
  Schema.makeFilter((value: object) => {
    const present = KINDS.filter((k) => k in value && (value as Record<string, unknown>)[k] !== null)
    if (present.length > 1) return `only one of ${present.join(", ")} may be set`
    if (present.length === 0 && !("credentials" in value && (value as Record<string, unknown>)["credentials"] !== null)) {
      return `expected one of: ${KINDS.join(", ")}, credentials`
    }
    return undefined
  })
)

export const Config = Schema.Union([
  Struct,
  Schema.Literal("copilot").check(Schema.makeFilter(() => unsupportedMessage("backendAuth copilot"))).annotate({ description: "Authenticate to GitHub Copilot." })
]).annotate({ description: "The credential presented to the backend: a key, the validated JWT, AWS SigV4 or Google Cloud tokens, plus extra `credentials`." })
export type Config = typeof Config.Type

/**
 * Field paths inside a `backendAuth` value that hold secrets, for config_dump redaction (`[]`:
 * every element of a list). `key` is the secret itself when it is a string.
 */
export const SECRET_PATHS: ReadonlyArray<string> = [
  "key",
  "key.value",
  "credentials[].key",
  "aws.accessKeyId",
  "aws.secretAccessKey",
  "aws.sessionToken",
  "gcp.credential"
]

// ---------------------------------------------------------------------------------------------
// Inserting a credential
// ---------------------------------------------------------------------------------------------

type Insert = (ctx: ProxyRequest, value: string) => void

/** The location's header/query/cookie, written rather than read (an expression cannot be written to). */
const inserter = (location: CredentialLocation.Config, path: string): Effect.Effect<Insert, ConfigError.ConfigError> => {
  if ("header" in location) {
    const name = location.header.name.toLowerCase()
    const prefix = location.header.prefix ?? ""
    return Effect.succeed((ctx, value) => {
      ctx.headers[name] = prefix + value
    })
  }
  if ("queryParameter" in location) {
    const name = location.queryParameter.name
    const encodedName = encodeURIComponent(name)
    const strip = CredentialLocation.make(location, path)
    return Effect.map(strip, (existing): Insert => (ctx, value) => {
      existing.remove(ctx)
      const pair = `${encodedName}=${encodeURIComponent(value)}`
      ctx.query = ctx.query === "" ? `?${pair}` : `${ctx.query}&${pair}`
    })
  }
  if ("cookie" in location) {
    const name = location.cookie.name
    return Effect.map(CredentialLocation.make(location, path), (existing): Insert => (ctx, value) => {
      existing.remove(ctx)
      const cookie = ctx.headers["cookie"]
      const pair = `${name}=${value}`
      ctx.headers["cookie"] = cookie === undefined ? pair : `${typeof cookie === "string" ? cookie : cookie.join("; ")}; ${pair}`
    })
  }
  return Effect.fail(ConfigError.make(`${path}.expression`, "a backend credential cannot be placed by an expression: use header, queryParameter or cookie"))
}

const BEARER: CredentialLocation.Config = CredentialLocation.bearerHeader

/** A header value must not carry CR, LF or NUL (undici would reject the request mid-flight). */
const checkValue = (value: string, path: string): Effect.Effect<string, ConfigError.ConfigError> =>
  value === ""
    ? Effect.fail(ConfigError.make(path, "the credential is empty"))
    : /[\r\n\0]/.test(value)
    ? Effect.fail(ConfigError.make(path, "the credential contains a line break or NUL"))
    : Effect.succeed(value)

const loadValue = (value: typeof FileOrInline.Type, path: string): Effect.Effect<string, ConfigError.ConfigError> =>
  typeof value === "string"
    ? checkValue(value, path)
    : Effect.flatMap(read(value.file, `${path}.file`), (bytes) => checkValue(bytes.toString("utf8").trim(), `${path}.file`))

// ---------------------------------------------------------------------------------------------
// Credential kinds
// ---------------------------------------------------------------------------------------------

/** Applies the credential in place (sync), or returns the effect that does. */
type Apply = (ctx: ProxyRequest) => Effect.Effect<void, ProxyError.ProxyError> | undefined

const authFailed = (policyPath: string, cause: string) =>
  Effect.andThen(
    Effect.logWarning(`backendAuth at ${policyPath}: ${cause}`),
    Effect.fail(ProxyError.make({ _tag: "BackendAuthFailed", cause }))
  )

const env = (name: string): string | undefined => {
  const value = process.env[name]
  return value === undefined || value === "" ? undefined : value
}

type AwsConfig = NonNullable<typeof Struct.Type["aws"]>

const awsSigner = (aws: AwsConfig, maxBufferSize: number, path: string): Effect.Effect<Apply, ConfigError.ConfigError> =>
  Effect.gen(function*() {
    const aws4 = yield* Effect.promise(() => import("aws4"))
    const clock = yield* Clock.clockWith(Effect.succeed)
    const explicit = "accessKeyId" in aws
    const accessKeyId = explicit ? aws.accessKeyId : env("AWS_ACCESS_KEY_ID")
    const secretAccessKey = explicit ? aws.secretAccessKey : env("AWS_SECRET_ACCESS_KEY")
    const sessionToken = (explicit ? aws.sessionToken : env("AWS_SESSION_TOKEN")) ?? undefined
    if (explicit && (accessKeyId === "" || secretAccessKey === "")) return yield* Effect.fail(ConfigError.make(`${path}.aws`, "accessKeyId and secretAccessKey must not be empty"))
    const region = aws.region ?? env("AWS_REGION") ?? env("AWS_DEFAULT_REGION")
    const service = aws.serviceName ?? undefined
    const credentials = accessKeyId === undefined || secretAccessKey === undefined ? undefined : { accessKeyId, secretAccessKey, sessionToken }
    if (credentials === undefined) {
      yield* Effect.logWarning(`backendAuth at ${path}: no AWS credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): requests will fail with 500`)
    }
    const s3 = service === "s3"
    const signNow = (ctx: ProxyRequest, payload: Uint8Array | typeof AwsSigV4.UNSIGNED_PAYLOAD): Effect.Effect<void, ProxyError.ProxyError> => {
      if (credentials === undefined) return authFailed(path, "no AWS credentials")
      for (const name of AwsSigV4.SIGNER_OWNED) delete ctx.headers[name]
      const added = AwsSigV4.sign(aws4, {
        method: ctx.method,
        path: ctx.path + ctx.query,
        headers: ctx.headers,
        payload,
        amzDate: AwsSigV4.amzDate(clock.currentTimeMillisUnsafe()),
        service,
        region,
        credentials
      })
      for (const [name, value] of Object.entries(added)) ctx.headers[name] = value
      return Effect.void
    }
    const tooLarge = Effect.fail(ProxyError.make({ _tag: "BodyTooLarge" }))
    const signer = (ctx: ProxyRequest): Effect.Effect<void, ProxyError.ProxyError> => {
      if (!ctx.hasBody) return signNow(ctx, EMPTY)
      return Effect.flatMap(RequestBody.read(ctx, maxBufferSize), (bytes) =>
        bytes !== undefined ? signNow(ctx, bytes) : s3 ? signNow(ctx, AwsSigV4.UNSIGNED_PAYLOAD) : tooLarge)
    }
    return (ctx) => {
      ctx.upstreamSigner = signer
      return undefined
    }
  })

const EMPTY = new Uint8Array(0)

type GcpConfig = NonNullable<typeof Struct.Type["gcp"]>

const gcpCredential = (gcp: GcpConfig, path: string): Effect.Effect<GcpToken.ServiceAccount, ConfigError.ConfigError> =>
  Effect.gen(function*() {
    const credential = gcp.credential
    let text: string
    let where: string
    if (credential !== undefined && credential !== null) {
      where = typeof credential === "string" ? `${path}.credential` : `${path}.credential.file`
      text = typeof credential === "string" ? credential : (yield* read(credential.file, where)).toString("utf8")
    } else {
      const file = env("GOOGLE_APPLICATION_CREDENTIALS")
      where = `${path}.credential`
      if (file === undefined) {
        return yield* Effect.fail(ConfigError.make(where, "no credential and GOOGLE_APPLICATION_CREDENTIALS is not set (metadata-server credentials are not supported yet)"))
      }
      text = (yield* read(file, where)).toString("utf8")
    }
    const account = GcpToken.parseServiceAccount(text)
    return typeof account === "string" ? yield* Effect.fail(ConfigError.make(where, account)) : account
  })

/** `https://<host without port>` of the request as it is sent. */
const defaultAudience = (ctx: ProxyRequest): string => {
  const host = ctx.headers["host"]
  const value = typeof host === "string" ? host : host?.[0] ?? ctx.host
  return `https://${value.startsWith("[") ? value.slice(0, value.indexOf("]") + 1) : value.replace(/:\d+$/, "")}`
}

const gcpTokens = (gcp: GcpConfig, path: string): Effect.Effect<Apply, ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const gpath = `${path}.gcp`
    const account = yield* gcpCredential(gcp, gpath)
    const idToken = gcp.type === "idToken"
    const source = yield* GcpToken.make(account, idToken ? "idToken" : "accessToken", gpath)
    const fixed = !idToken ? "" : "audience" in gcp && typeof gcp.audience === "string" ? gcp.audience : undefined
    const setToken = (ctx: ProxyRequest, audience: string): Effect.Effect<void, ProxyError.ProxyError> | undefined => {
      const hit = source.cached(audience)
      if (hit !== undefined) {
        ctx.headers["authorization"] = `Bearer ${hit}`
        return undefined
      }
      return Effect.matchEffect(source.refresh(audience), {
        onFailure: (cause) => authFailed(path, `gcp token: ${cause}`),
        onSuccess: (token) =>
          Effect.sync(() => {
            ctx.headers["authorization"] = `Bearer ${token}`
          })
      })
    }
    if (fixed !== undefined) return (ctx) => setToken(ctx, fixed)
    // The audience is the destination, known only once the backend call set the host.
    const late = (ctx: ProxyRequest): Effect.Effect<void, ProxyError.ProxyError> => setToken(ctx, defaultAudience(ctx)) ?? Effect.void
    return (ctx) => {
      ctx.upstreamSigner = late
      return undefined
    }
  })

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/**
 * Whether this `backendAuth`, set on an MCP backend, must run per target rather than once on the
 * downstream request the targets' headers come from: `aws` signs each target's request as sent,
 * and a `gcp` ID token without an audience takes each target's host as its audience. The other
 * kinds only add a header, which every target then gets. Read by `Snapshot.buildBackend`.
 */
export const perMcpTarget = (config: Config): boolean => {
  if (typeof config === "string") return false
  if (config.aws !== undefined && config.aws !== null) return true
  const gcp = config.gcp
  return gcp !== undefined && gcp !== null && gcp.type === "idToken" && !("audience" in gcp && typeof gcp.audience === "string")
}

const main = (config: typeof Struct.Type, maxBufferSize: number, path: string): Effect.Effect<Apply | undefined, ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const key = config.key
    if (key !== undefined && key !== null) {
      const withLocation = typeof key !== "string" && "value" in key
      const value = yield* loadValue(withLocation ? key.value : key, withLocation ? `${path}.key.value` : `${path}.key`)
      const insert = yield* inserter(withLocation ? key.location ?? BEARER : BEARER, `${path}.key.location`)
      return (ctx) => void insert(ctx, value)
    }
    const passthrough = config.passthrough
    if (passthrough !== undefined && passthrough !== null) {
      const insert = yield* inserter(passthrough.location ?? BEARER, `${path}.passthrough.location`)
      return (ctx) => {
        const token = ctx.validatedJwt
        if (token !== undefined) insert(ctx, token)
        return undefined
      }
    }
    if (config.aws !== undefined && config.aws !== null) return yield* awsSigner(config.aws, maxBufferSize, path)
    if (config.gcp !== undefined && config.gcp !== null) return yield* gcpTokens(config.gcp, path)
    return undefined
  })

export const policy = Policy.define({
  key: "backendAuth",
  make: (config, env, path) =>
    Effect.gen(function*() {
      // Decoding already rejected the string form ("copilot").
      if (typeof config === "string") return yield* Effect.fail(ConfigError.make(path, unsupportedMessage("backendAuth copilot")))
      const apply = yield* main(config, env.maxBufferSize, path)
      const extra = yield* Effect.forEach(config.credentials ?? [], (c, i) =>
        Effect.gen(function*() {
          const value = yield* loadValue(c.key, `${path}.credentials[${i}].key`)
          const insert = yield* inserter(c.location, `${path}.credentials[${i}].location`)
          return (ctx: ProxyRequest) => insert(ctx, value)
        }))
      return (next: Policy.Handler): Policy.Handler =>
        Effect.flatMap(currentRequest, (ctx) => {
          const pending = apply?.(ctx)
          for (const insert of extra) insert(ctx)
          return pending === undefined ? next : Effect.andThen(pending, next)
        })
    })
})
