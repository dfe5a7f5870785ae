/**
 * One access-log event per request (agentgateway's `request` target at info level), as
 * `key=value` text or one JSON object per line. Lines are batched: written at most
 * `FLUSH_INTERVAL_MS` after the first line of a batch, or at once when `FLUSH_BYTES` have
 * accumulated, so a busy gateway makes about a hundred write calls a second whatever its request
 * rate (one per event-loop turn cost ~2 µs per request in bench/http). At shutdown `drain` writes
 * what is left; a crash may lose the last batch.
 *
 * @since 0.1.0
 */

export type Value = string | number | undefined

/** A field a CEL `add` expression computed: any JSON-able value. */
export type Extra = readonly [string, unknown]

/**
 * Whether request events are written: the process log level (`config.logging.level`, changed at
 * runtime by the admin `/logging`); above `info` there are none, as upstream's `request` target.
 */
export interface LevelGate {
  readonly requestLogs: boolean
}

const always: LevelGate = { requestLogs: true }

const textOf = (value: unknown): string =>
  typeof value === "string" ? value : typeof value === "number" || typeof value === "boolean" ? String(value) : JSON.stringify(value)

export interface Sink {
  write(line: string): void
}

const NEEDS_QUOTES = /[\s"=]/

/** `" name="` for each field name of a name list, built once per list (the lists are constants). */
const prefixesOf = new WeakMap<ReadonlyArray<string>, ReadonlyArray<string>>()
const prefixes = (names: ReadonlyArray<string>): ReadonlyArray<string> => {
  let out = prefixesOf.get(names)
  if (out === undefined) {
    out = names.map((name) => ` ${name}=`)
    prefixesOf.set(names, out)
  }
  return out
}

/** Longest a logged line waits before it is written. */
export const FLUSH_INTERVAL_MS = 10
/** Batch size that is written at once, without waiting for the interval. */
export const FLUSH_BYTES = 64 * 1024

export class AccessLog {
  private buffer = ""
  private lastMs = 0
  private lastTime = ""
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private readonly format: "text" | "json"
  private readonly removed: ReadonlySet<string>
  private readonly sink: Sink
  private readonly gate: LevelGate
  private readonly flush = () => {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    const out = this.buffer
    this.buffer = ""
    if (out !== "") this.sink.write(out)
  }

  constructor(format: "text" | "json", removed: ReadonlyArray<string>, sink: Sink = process.stdout, gate: LevelGate = always) {
    this.format = format
    this.removed = new Set(removed)
    this.sink = sink
    this.gate = gate
  }

  /** Whether an event would be written now; callers skip building one otherwise. */
  get enabled(): boolean {
    return this.gate.requestLogs
  }

  /**
   * Logs one event: `values[i]` is the value of `names[i]`; empty values are left out, and so are
   * removed names. `extra` (CEL `add` fields) follows, never removed.
   */
  log(names: ReadonlyArray<string>, values: ReadonlyArray<Value>, extra?: ReadonlyArray<Extra>): void {
    if (!this.gate.requestLogs) return
    const now = Date.now()
    if (now !== this.lastMs) {
      this.lastMs = now
      this.lastTime = new Date(now).toISOString()
    }
    const time = this.lastTime
    const removed = this.removed.size > 0 ? this.removed : undefined
    let line: string
    if (this.format === "json") {
      const record: Record<string, string | number> = { time, level: "info", scope: "request" }
      for (let i = 0; i < names.length; i++) {
        const value = values[i]
        if (value !== undefined && value !== "" && removed?.has(names[i]!) !== true) record[names[i]!] = value
      }
      if (extra !== undefined) {
        // defineProperty: a field named `__proto__` must be a field, not the record's prototype.
        for (const [name, value] of extra) Object.defineProperty(record, name, { value, enumerable: true, writable: true, configurable: true })
      }
      line = JSON.stringify(record)
    } else {
      // Appending the cached " name=" and then the value: no template string per field.
      const prefix = prefixes(names)
      line = time + "\tinfo\trequest"
      for (let i = 0; i < names.length; i++) {
        const value = values[i]
        if (value === undefined || value === "" || removed?.has(names[i]!) === true) continue
        const text = typeof value === "number" ? String(value) : value
        line += prefix[i]!
        line += NEEDS_QUOTES.test(text) ? JSON.stringify(text) : text
      }
      if (extra !== undefined) {
        for (const [name, value] of extra) {
          const text = textOf(value)
          line += NEEDS_QUOTES.test(text) || text === "" ? ` ${name}=${JSON.stringify(text)}` : ` ${name}=${text}`
        }
      }
    }
    this.buffer += line + "\n"
    if (this.buffer.length >= FLUSH_BYTES) this.flush()
    else if (this.timer === undefined) {
      // Unreferenced: a pending batch never keeps the process alive (shutdown drains it).
      this.timer = setTimeout(this.flush, FLUSH_INTERVAL_MS)
      this.timer.unref()
    }
  }

  /** Writes what is buffered now (at shutdown). */
  drain(): void {
    this.flush()
  }
}
