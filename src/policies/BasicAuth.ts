/**
 * `basicAuth`: HTTP Basic authentication (RFC 7617) against an htpasswd user database
 * (agentgateway's `http/basicauth.rs`).
 *
 * The htpasswd text (inline, or `{file}` read when the config is loaded) is parsed once:
 * `user:hash` lines, blank lines and `#` comments skipped. Accepted hashes are bcrypt
 * (`$2a$`/`$2b$`/`$2y$`), Apache MD5 (`$apr1$`, and the MD5-crypt `$1$` it derives from) and
 * `{SHA}` (base64 SHA-1); anything else (DES crypt, `$5$`/`$6$` SHA-crypt, plain text) is a
 * config error naming the line, rather than a user who can never log in. Digests are compared
 * with `timingSafeEqual`. bcrypt is slow on purpose, so successful checks are remembered in a
 * bounded cache keyed by a SHA-256 of user and password (never the password itself).
 *
 * Modes: `strict` requires credentials, `optional` (default) checks present ones. A rejection
 * is 401 `basic authentication failure: no basic authentication credentials found` / `…:
 * invalid credentials` with `WWW-Authenticate: Basic realm="<realm>"` (default `Restricted`).
 * On success the credential is removed, CEL `basicAuth.username` is set and the caller
 * identity is `basic:<user>`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { createHash, timingSafeEqual } from "node:crypto"
import * as CelContext from "../cel/Context.ts"
import { ConfigError } from "../config/ConfigError.ts"
import { opt, req } from "../config/Fields.ts"
import { read } from "../listeners/Tls.ts"
import * as Policy from "../pipeline/Policy.ts"
import * as Bcrypt from "./Bcrypt.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"
import { BoundedLru } from "../shared/lru.ts"
import * as CredentialLocation from "./CredentialLocation.ts"

/** Successful bcrypt checks remembered per policy. */
export const BCRYPT_CACHE_ENTRIES = 1024
/** The realm when none is configured (upstream's default). */
export const DEFAULT_REALM = "Restricted"

export const Config = Schema.Struct({
  htpasswd: req(
    Schema.Union([
      Schema.Struct({ file: req(Schema.String, "Path of an htpasswd file, read when the config is loaded.") }),
      Schema.String.annotate({ description: "The htpasswd content inline." })
    ]),
    "User database in htpasswd format (bcrypt, `$apr1$` MD5 or `{SHA}` entries). Can be inline or loaded from a file."
  ),
  realm: opt(Schema.String, "Realm shown in the `WWW-Authenticate` response header when credentials are missing or invalid. Default `Restricted`."),
  mode: opt(Schema.Literals(["strict", "optional"]), "`strict`: valid credentials are required; `optional` (default): present credentials must be valid."),
  authorizationLocation: opt(CredentialLocation.Config, "Where to read the credentials from. Default: the `Authorization` header with prefix `Basic `.")
}).annotate({ description: "Authenticate requests with Basic Auth credentials from an htpasswd user database." })
export type Config = typeof Config.Type

// ---------------------------------------------------------------------------------------------
// Hashes
// ---------------------------------------------------------------------------------------------

const ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

const to64 = (value: number, chars: number): string => {
  let out = ""
  let v = value
  for (let i = 0; i < chars; i++) {
    out += ITOA64[v & 0x3f]
    v >>>= 6
  }
  return out
}

const md5 = (...parts: ReadonlyArray<Buffer>): Buffer => {
  const h = createHash("md5")
  for (const p of parts) h.update(p)
  return h.digest()
}

/**
 * MD5-crypt (Poul-Henning Kamp's FreeBSD algorithm; Apache's `$apr1$` is the same with another
 * magic string): 1000 rounds of MD5 over password, salt and the previous digest.
 */
export const md5Crypt = (password: string, salt: string, magic: "$1$" | "$apr1$"): string => {
  const pw = Buffer.from(password, "utf8")
  const s = Buffer.from(salt.slice(0, 8), "utf8")
  const m = Buffer.from(magic, "utf8")
  const alternate = md5(pw, s, pw)
  const parts: Array<Buffer> = [pw, m, s]
  for (let left = pw.length; left > 0; left -= 16) parts.push(alternate.subarray(0, Math.min(16, left)))
  for (let i = pw.length; i > 0; i >>= 1) parts.push((i & 1) !== 0 ? Buffer.alloc(1) : pw.subarray(0, 1))
  let digest = md5(...parts)
  for (let i = 0; i < 1000; i++) {
    const round: Array<Buffer> = [(i & 1) !== 0 ? pw : digest]
    if (i % 3 !== 0) round.push(s)
    if (i % 7 !== 0) round.push(pw)
    round.push((i & 1) !== 0 ? digest : pw)
    digest = md5(...round)
  }
  const d = digest
  const encoded = to64((d[0]! << 16) | (d[6]! << 8) | d[12]!, 4) +
    to64((d[1]! << 16) | (d[7]! << 8) | d[13]!, 4) +
    to64((d[2]! << 16) | (d[8]! << 8) | d[14]!, 4) +
    to64((d[3]! << 16) | (d[9]! << 8) | d[15]!, 4) +
    to64((d[4]! << 16) | (d[10]! << 8) | d[5]!, 4) +
    to64(d[11]!, 2)
  return `${magic}${salt.slice(0, 8)}$${encoded}`
}

const sameText = (a: string, b: string): boolean => {
  const x = Buffer.from(a, "utf8")
  const y = Buffer.from(b, "utf8")
  return x.length === y.length && timingSafeEqual(x, y)
}

type Hash =
  | { readonly _tag: "Bcrypt"; readonly hash: string }
  | { readonly _tag: "Md5Crypt"; readonly magic: "$1$" | "$apr1$"; readonly salt: string; readonly full: string }
  | { readonly _tag: "Sha1"; readonly digest: Buffer }

const MD5_CRYPT = /^(\$apr1\$|\$1\$)([^$]{0,8})\$[./0-9A-Za-z]{22}$/
const BCRYPT = /^\$2[aby]\$\d{2}\$[./0-9A-Za-z]{53}$/

/** The hash of an htpasswd entry, or why it is not accepted. */
export const parseHash = (text: string): Hash | string => {
  if (BCRYPT.test(text)) return { _tag: "Bcrypt", hash: text.replace(/^\$2y\$/, "$2b$") }
  const md5 = MD5_CRYPT.exec(text)
  if (md5 !== null) return { _tag: "Md5Crypt", magic: md5[1] === "$1$" ? "$1$" : "$apr1$", salt: md5[2]!, full: text }
  if (text.startsWith("{SHA}")) {
    const digest = Buffer.from(text.slice(5), "base64")
    return digest.length === 20 ? { _tag: "Sha1", digest } : "malformed {SHA} hash"
  }
  if (/^\$[56]\$/.test(text)) return "SHA-crypt ($5$/$6$) hashes are not supported; use bcrypt (htpasswd -B)"
  if (/^[./0-9A-Za-z]{13}$/.test(text)) return "DES crypt hashes are not supported; use bcrypt (htpasswd -B)"
  return "unsupported hash (expected bcrypt `$2y$`, `$apr1$` MD5 or `{SHA}`)"
}

const verifyFast = (hash: Hash, password: string): boolean => {
  switch (hash._tag) {
    case "Md5Crypt":
      return sameText(md5Crypt(password, hash.salt, hash.magic), hash.full)
    case "Sha1":
      return timingSafeEqual(createHash("sha1").update(password, "utf8").digest(), hash.digest)
    case "Bcrypt":
      return false
  }
}

/** `user:hash` lines; a bad line is a ConfigError naming it. */
const parseHtpasswd = (text: string, path: string): Effect.Effect<ReadonlyMap<string, Hash>, ConfigError> => {
  const users = new Map<string, Hash>()
  const issues: Array<{ path: string; message: string }> = []
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim()
    if (line === "" || line.startsWith("#")) return
    const colon = line.indexOf(":")
    if (colon <= 0) return void issues.push({ path, message: `htpasswd line ${i + 1}: expected "user:hash"` })
    const user = line.slice(0, colon)
    const hash = parseHash(line.slice(colon + 1))
    if (typeof hash === "string") return void issues.push({ path, message: `htpasswd line ${i + 1} (user "${user}"): ${hash}` })
    if (users.has(user)) return void issues.push({ path, message: `htpasswd line ${i + 1}: duplicate user "${user}"` })
    users.set(user, hash)
  })
  return issues.length > 0 ? Effect.fail(new ConfigError({ issues })) : Effect.succeed(users)
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

const NO_CREDENTIALS = "no basic authentication credentials found"
const INVALID = "invalid credentials"

/** `user:password` from the base64 credential, or undefined when it is not one. */
const decodeCredentials = (encoded: string): readonly [string, string] | undefined => {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(encoded)) return undefined
  const decoded = Buffer.from(encoded, "base64").toString("utf8")
  const colon = decoded.indexOf(":")
  return colon === -1 ? undefined : [decoded.slice(0, colon), decoded.slice(colon + 1)]
}

export const policy = Policy.define({
  key: "basicAuth",
  make: (config, _env, path) =>
    Effect.gen(function*() {
      const source = config.htpasswd
      const text = typeof source === "string" ? source : (yield* read(source.file, `${path}.htpasswd.file`)).toString("utf8")
      const users = yield* parseHtpasswd(text, typeof source === "string" ? `${path}.htpasswd` : `${path}.htpasswd.file`)
      const location = yield* CredentialLocation.make(config.authorizationLocation ?? CredentialLocation.basicHeader, `${path}.authorizationLocation`)
      const realm = config.realm ?? DEFAULT_REALM
      const failure = (detail: string) => Effect.fail(ProxyError.make({ _tag: "AuthenticationFailed", scheme: "basic", detail, realm }))
      const missing = config.mode === "strict" ? failure(NO_CREDENTIALS) : undefined
      const invalid = failure(INVALID)
      const bcryptHits = new BoundedLru<string, true>(BCRYPT_CACHE_ENTRIES)
      const bcryptFailures = new Bcrypt.Failures()
      // A hash of the same cost as the file's first bcrypt entry, for unknown users.
      const costOf = [...users.values()].find((h) => h._tag === "Bcrypt")
      const dummy = costOf?._tag === "Bcrypt" ? Bcrypt.dummyHash(costOf.hash) : undefined

      const accept = (ctx: ProxyRequest, user: string): void => {
        location.remove(ctx)
        CelContext.attach(ctx, "basicAuth", { username: user })
        ctx.identity = `basic:${user}`
      }

      return (next: Policy.Handler): Policy.Handler =>
        Effect.flatMap(currentRequest, (ctx) => {
          const encoded = location.extract(ctx)
          if (encoded === undefined) return missing ?? next
          const credentials = decodeCredentials(encoded)
          if (credentials === undefined) return invalid
          const [user, password] = credentials
          const hash = users.get(user)
          if (hash === undefined) {
            // As slow as a wrong password for a real bcrypt user, so timing does not tell which users exist.
            if (dummy === undefined) return invalid
            const digest = createHash("sha256").update(user, "utf8").update("\0").update(password, "utf8").digest("hex")
            if (bcryptFailures.has(digest)) return invalid
            return Effect.flatMap(Bcrypt.compare(password, dummy), (outcome) => {
              if (outcome === "mismatch") bcryptFailures.add(digest)
              return invalid
            })
          }
          if (hash._tag !== "Bcrypt") {
            if (!verifyFast(hash, password)) return invalid
            accept(ctx, user)
            return next
          }
          const cacheKey = createHash("sha256").update(user, "utf8").update("\0").update(password, "utf8").digest("hex")
          if (bcryptHits.get(cacheKey) === true) {
            accept(ctx, user)
            return next
          }
          if (bcryptFailures.has(cacheKey)) return invalid
          return Effect.flatMap(Bcrypt.compare(password, hash.hash), (outcome) => {
            if (outcome !== "match") {
              if (outcome === "mismatch") bcryptFailures.add(cacheKey)
              return invalid
            }
            bcryptHits.set(cacheKey, true)
            accept(ctx, user)
            return next
          })
        })
    })
})
