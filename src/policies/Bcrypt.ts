/**
 * bcrypt checks for `apiKey` and `basicAuth`, bounded. bcrypt is slow on purpose and bcryptjs
 * runs it on the event loop, so unbounded concurrent checks from one client stall every request
 * (20 concurrent wrong keys at cost 10 blocked the loop for 1.3 s). Process-wide, at most
 * `MAX_CONCURRENT` checks run at once and at most `MAX_WAITING` wait; beyond that a check fails
 * at once, as a wrong credential would. Each policy also remembers recent failures
 * (`Failures`), so repeating a wrong credential costs a hash lookup, not a bcrypt run.
 *
 * @since 0.1.0
 */
import bcrypt from "bcryptjs"
import * as Effect from "effect/Effect"
import * as Semaphore from "effect/Semaphore"
import { randomUUID } from "node:crypto"
import { BoundedLru } from "../shared/lru.ts"

export const MAX_CONCURRENT = 2
export const MAX_WAITING = 64
/** Recent wrong credentials remembered per policy (by a digest, never the secret). */
export const FAILURE_CACHE_ENTRIES = 4096

const slots = Semaphore.makeUnsafe(MAX_CONCURRENT)
let admitted = 0

/** "busy": not checked because too many checks are queued (never remember it as a failure). */
export type Outcome = "match" | "mismatch" | "busy"

export const compare = (secret: string, hash: string): Effect.Effect<Outcome> =>
  Effect.suspend(() => {
    if (admitted >= MAX_CONCURRENT + MAX_WAITING) return Effect.succeed<Outcome>("busy")
    admitted++
    return slots.withPermits(1)(
      Effect.promise(() => bcrypt.compare(secret, hash).then((ok): Outcome => (ok ? "match" : "mismatch"), (): Outcome => "mismatch"))
    ).pipe(Effect.ensuring(Effect.sync(() => void admitted--)))
  })

/** Checks in flight or waiting, for tests. */
export const inFlight = (): number => admitted

/** A per-policy memory of digests of credentials that failed every bcrypt check. */
export class Failures {
  private readonly seen = new BoundedLru<string, true>(FAILURE_CACHE_ENTRIES)
  has(digest: string): boolean {
    return this.seen.get(digest) === true
  }
  add(digest: string): void {
    this.seen.set(digest, true)
  }
}

/**
 * A hash that matches nothing, at the cost of `like` (`$2y$10$…` → cost 10), for checking a
 * password of an unknown user in the same time as a known one's.
 */
export const dummyHash = (like: string): string => {
  const cost = Number(/^\$2[abxy]?\$(\d\d)\$/.exec(like)?.[1] ?? 10)
  // Capped so a config load never spends seconds here; a cost above 12 is rare.
  return bcrypt.hashSync(randomUUID(), Math.min(Math.max(cost, 4), 12))
}
