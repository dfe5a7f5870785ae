/**
 * Session ids as sealed tokens (AES-256-GCM, `nonce ‖ ciphertext ‖ tag`, base64url: visible
 * ASCII only). The payload carries what another replica needs to resume the session — the
 * backend it belongs to, the caller identity it is bound to, and each target's upstream
 * session id — so replicas sharing the key share sessions and nobody else can forge or read
 * one. Unlike agentgateway, ids are always sealed: without a configured key a random
 * per-process key is used (and a warning logged by the caller).
 *
 * @since 0.1.0
 */
import * as crypto from "node:crypto"
import { isRecord } from "./McpSchema.ts"

const NONCE_BYTES = 12
const TAG_BYTES = 16
/** Longer ids are not ours: refused before any crypto. */
export const MAX_ID_LENGTH = 8192

export interface SessionState {
  /** Backend the session belongs to (a session cannot cross backends). */
  readonly backend: string
  /** Caller identity bound at initialize ("" when anonymous). */
  readonly identity: string
  readonly protocolVersion: string
  /** Per target: upstream session id, `null` when the upstream has none. */
  readonly upstreams: Readonly<Record<string, string | null>>
  /** Whether every target can be resumed on another replica (false with stdio targets). */
  readonly resumable: boolean
  /** Uniqueness; also what a revocation names (Session.Revocations). */
  readonly nonce: string
  /** When the id was sealed (ms since the epoch): ids older than MAX_RESUME_AGE_MS are not resumed. */
  readonly issuedAt: number
}

/**
 * How long a sealed id can reopen its session on a replica that does not hold it. The id never
 * changes during a session and replicas do not share activity, so this bounds the life of a
 * stolen or abandoned id; a client whose id is refused gets 404 and re-initializes (MCP spec).
 */
export const MAX_RESUME_AGE_MS = 24 * 60 * 60 * 1000

export interface SessionSealer {
  readonly seal: (state: SessionState) => string
  /** The state, or "invalid" when the id is not a token sealed with this key. */
  readonly open: (id: string) => SessionState | "invalid"
}

/**
 * Fewest distinct byte values a key may have. 32 random bytes have about 30; a key with fewer
 * than this is a placeholder (`00…`, `abab…`, `0123…ef` repeated), which anyone can guess.
 */
export const MIN_DISTINCT_KEY_BYTES = 16

/** The key from 64 hex chars, or an error message (also for a placeholder key). */
export const parseKey = (hex: string): Buffer | string => {
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) return "session key must be 64 hex characters (32 bytes)"
  const key = Buffer.from(hex, "hex")
  if (new Set(key).size < MIN_DISTINCT_KEY_BYTES) return "session key looks like a placeholder, not a random key: generate one with `openssl rand -hex 32`"
  return key
}

export const randomKey = (): Buffer => crypto.randomBytes(32)

export const make = (key: Buffer): SessionSealer => ({
  seal: (state) => {
    const nonce = crypto.randomBytes(NONCE_BYTES)
    const cipher = crypto.createCipheriv("aes-256-gcm", key, nonce)
    const ct = Buffer.concat([cipher.update(JSON.stringify(state), "utf8"), cipher.final()])
    return Buffer.concat([nonce, ct, cipher.getAuthTag()]).toString("base64url")
  },
  open: (id) => {
    if (id.length > MAX_ID_LENGTH || !/^[A-Za-z0-9_-]+$/.test(id)) return "invalid"
    const raw = Buffer.from(id, "base64url")
    // Only the canonical spelling opens: base64url's last character carries unused low bits,
    // and a second spelling of the same bytes would be a second id for one session.
    if (raw.length < NONCE_BYTES + TAG_BYTES + 2 || raw.toString("base64url") !== id) return "invalid"
    try {
      const decipher = crypto.createDecipheriv("aes-256-gcm", key, raw.subarray(0, NONCE_BYTES))
      decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES))
      const text = Buffer.concat([decipher.update(raw.subarray(NONCE_BYTES, raw.length - TAG_BYTES)), decipher.final()]).toString("utf8")
      const value: unknown = JSON.parse(text)
      return isState(value) ? value : "invalid"
    } catch {
      return "invalid"
    }
  }
})

const isState = (v: unknown): v is SessionState => {
  if (!isRecord(v)) return false
  const r = v
  return typeof r["backend"] === "string" && typeof r["identity"] === "string" && typeof r["protocolVersion"] === "string" &&
    typeof r["resumable"] === "boolean" && typeof r["upstreams"] === "object" && r["upstreams"] !== null &&
    typeof r["nonce"] === "string" && typeof r["issuedAt"] === "number"
}
