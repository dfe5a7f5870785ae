/**
 * The timer the listener's watchdogs share (`BodyWatch.ts` for request bodies, `SendWatch.ts`
 * for responses): a bag of entries (`shared/Bag.ts`) and one `setInterval`, started when the
 * first entry is added and stopped when the bag is empty, checking every `idleMs / 4` (at least
 * 10 ms, at most 1 s).
 * `idleMs()` is read at each check, so a reload applies to entries already watched.
 *
 * @since 0.1.0
 */

import { Bag, type Member } from "../shared/Bag.ts"

/** What a check decides for one entry: keep watching it, or forget it. */
export type Verdict = "keep" | "drop"

export class Sweep<E extends Member> {
  /** A `Bag`, not a `Set`: entries come and go per request (see `shared/Bag.ts`). */
  private readonly entries = new Bag<E>()
  private timer: ReturnType<typeof setInterval> | undefined
  private readonly idleMs: () => number
  private readonly step: (entry: E, now: number, idleMs: number) => Verdict

  /** `step` sees each entry at every check, with `idleMs()`; at 0 or less (turned off) it must drop them. */
  constructor(idleMs: () => number, step: (entry: E, now: number, idleMs: number) => Verdict) {
    this.idleMs = idleMs
    this.step = step
  }

  /** The current limit; 0 or less means nothing is watched. */
  limit(): number {
    return this.idleMs()
  }

  add(entry: E): void {
    this.entries.add(entry)
    if (this.timer === undefined) {
      this.timer = setInterval(this.check, Math.max(10, Math.min(1000, this.idleMs() / 4)))
      // A watch never keeps the process alive.
      this.timer.unref()
    }
  }

  delete(entry: E): void {
    this.entries.delete(entry)
  }

  private readonly check = (): void => {
    const idle = this.idleMs()
    const now = performance.now()
    this.entries.forEach((entry) => {
      if (this.step(entry, now, idle) === "drop") this.entries.delete(entry)
    })
    if (this.entries.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer)
      this.timer = undefined
    }
  }
}
