/**
 * `apiKey`: authenticates requests by API key (agentgateway's `http/apikey.rs`).
 *
 * Keys are configured as plain `key`s or as `keyHash: "sha256:<hex>"` (or a bcrypt hash,
 * `$2a$`/`$2b$`/`$2y$`, as upstream). Only SHA-256 digests are kept: the presented key is
 * hashed and compared with every digest by `timingSafeEqual`, without stopping at a match, so
 * neither the lookup time nor the comparison leaks the key's length or a shared prefix.
 * bcrypt entries are checked one by one after that (bcrypt is slow on purpose); a success is
 * remembered in a bounded cache keyed by the SHA-256 of the presented key.
 *
 * Modes as upstream: `strict` requires a valid key, `optional` (default) checks a present key,
 * `permissive` never rejects. On success the credential is removed before forwarding, the
 * key's `metadata` fields become CEL `apiKey.<field>`, and the caller identity is
 * `apiKey:<first 16 hex digits of the key's SHA-256>` (stable across config edits, not the
 * key). 401 `api key authentication failure: no API Key found` / `…: invalid credentials`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { createHash, timingSafeEqual } from "node:crypto"
import * as CelContext from "../cel/Context.ts"
import * as Functions from "../cel/Functions.ts"
import * as ConfigError from "../config/ConfigError.ts"
import { opt, req, unsupported } from "../config/Fields.ts"
import * as Policy from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"
import { BoundedLru } from "../shared/lru.ts"
import * as Bcrypt from "./Bcrypt.ts"
import * as CredentialLocation from "./CredentialLocation.ts"

/** Successful bcrypt checks remembered per policy. */
export const BCRYPT_CACHE_ENTRIES = 1024

const metadataField = opt(Schema.Unknown, "Metadata attached to requests authenticated with this key: its fields are CEL `apiKey.<field>`.")
const allowedModels = unsupported("apiKey allowedModels (LLM gateway)")

export const Key = Schema.Union([
  Schema.Struct({ key: req(Schema.String, "API key value to accept."), metadata: metadataField, allowedModels }),
  Schema.Struct({
    keyHash: req(Schema.String, "Hash of an API key value to accept: `sha256:<hex>`, or a bcrypt hash (`$2b$…`)."),
    metadata: metadataField,
    allowedModels
  })
]).annotate({ description: "An accepted API key, plain or hashed." })

export const Config = Schema.Struct({
  keys: req(Schema.Array(Key), "API keys that are accepted by this policy."),
  mode: opt(
    Schema.Literals(["strict", "optional", "permissive"]),
    "`strict`: a valid key is required; `optional` (default): a present key must be valid; `permissive`: never rejects, a valid key still exposes its metadata."
  ),
  location: opt(CredentialLocation.Config, "Where to read the API key from. Default: the `Authorization` header with prefix `Bearer `.")
}).annotate({ description: "Authenticate requests with API keys; 401 `api key authentication failure: …` when rejected." })
export type Config = typeof Config.Type

interface Entry {
  /** The CEL value of `apiKey`. */
  readonly claims: unknown
  readonly identity: string
}

const sha256 = (text: string): Buffer => createHash("sha256").update(text, "utf8").digest()

const BCRYPT = /^\$2[aby]\$/
const SHA256_HEX = /^sha256:([0-9a-fA-F]{64})$/

const claimsOf = (metadata: unknown): unknown => {
  const value = Functions.fromJson(metadata)
  // Only a map's fields can be flattened into `apiKey.*`; other metadata exposes nothing.
  return typeof value === "object" && value !== null && !Array.isArray(value) ? Object.freeze(value) : Object.freeze({})
}

const NO_KEY = "no API Key found"
const INVALID = "invalid credentials"

const fail = (detail: string) => Effect.fail(ProxyError.make({ _tag: "AuthenticationFailed", scheme: "apiKey", detail }))

export const policy = Policy.define({
  key: "apiKey",
  make: (config, _env, path) =>
    Effect.gen(function*() {
      const digests: Array<Buffer> = []
      const digestEntries: Array<Entry> = []
      const salted: Array<{ readonly hash: string; readonly entry: Entry }> = []
      for (let i = 0; i < config.keys.length; i++) {
        const key = config.keys[i]!
        const claims = claimsOf(key.metadata ?? {})
        if ("key" in key) {
          if (key.key === "") return yield* Effect.fail(ConfigError.make(`${path}.keys[${i}].key`, "an API key must not be empty"))
          const digest = sha256(key.key)
          digests.push(digest)
          digestEntries.push({ claims, identity: `apiKey:${digest.toString("hex").slice(0, 16)}` })
        } else if (BCRYPT.test(key.keyHash)) {
          salted.push({ hash: key.keyHash.replace(/^\$2y\$/, "$2b$"), entry: { claims, identity: `apiKey:${sha256(key.keyHash).toString("hex").slice(0, 16)}` } })
        } else {
          const m = SHA256_HEX.exec(key.keyHash)
          if (m === null) {
            return yield* Effect.fail(
              ConfigError.make(`${path}.keys[${i}].keyHash`, "keyHash must be `sha256:<64 hex digits>` or a bcrypt hash (`$2a$`, `$2b$`, `$2y$`)")
            )
          }
          const hex = m[1]!.toLowerCase()
          digests.push(Buffer.from(hex, "hex"))
          digestEntries.push({ claims, identity: `apiKey:${hex.slice(0, 16)}` })
        }
      }
      const location = yield* CredentialLocation.make(config.location ?? CredentialLocation.bearerHeader, `${path}.location`)
      const mode = config.mode ?? "optional"
      const missing = mode === "strict" ? fail(NO_KEY) : undefined
      const bcryptHits = new BoundedLru<string, Entry>(BCRYPT_CACHE_ENTRIES)
      const bcryptFailures = new Bcrypt.Failures()

      /** Compares with every digest, match or not: time depends only on the number of keys. */
      const byDigest = (presented: Buffer): Entry | undefined => {
        let found: Entry | undefined
        for (let i = 0; i < digests.length; i++) {
          if (timingSafeEqual(presented, digests[i]!) && found === undefined) found = digestEntries[i]
        }
        return found
      }

      const bySalted = (key: string, cacheKey: string): Effect.Effect<Entry | undefined> =>
        Effect.gen(function*() {
          const hit = bcryptHits.get(cacheKey)
          if (hit !== undefined) return hit
          if (bcryptFailures.has(cacheKey)) return undefined
          let busy = false
          for (const { hash, entry } of salted) {
            const outcome = yield* Bcrypt.compare(key, hash)
            if (outcome === "match") {
              bcryptHits.set(cacheKey, entry)
              return entry
            }
            if (outcome === "busy") busy = true
          }
          if (!busy) bcryptFailures.add(cacheKey)
          return undefined
        })

      const accept = (ctx: ProxyRequest, entry: Entry): void => {
        location.remove(ctx)
        CelContext.attach(ctx, "apiKey", entry.claims)
        ctx.identity = entry.identity
      }

      const invalid = fail(INVALID)
      /** A rejected key is stripped too: the access log's CEL fields may show `request.uri`. */
      const reject = (ctx: ProxyRequest) => {
        location.remove(ctx)
        return invalid
      }

      return (next: Policy.Handler): Policy.Handler =>
        Effect.flatMap(currentRequest, (ctx) => {
          const key = location.extract(ctx)
          if (key === undefined) return missing ?? next
          const presented = sha256(key)
          const entry = byDigest(presented)
          if (entry !== undefined) {
            accept(ctx, entry)
            return next
          }
          const permissive = mode === "permissive"
          if (salted.length === 0) return permissive ? next : reject(ctx)
          return Effect.flatMap(bySalted(key, presented.toString("hex")), (found) => {
            if (found === undefined) return permissive ? next : reject(ctx)
            accept(ctx, found)
            return next
          })
        })
    })
})
