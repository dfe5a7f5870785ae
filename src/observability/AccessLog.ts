/**
 * One access-log event per request (agentgateway's `request` target at info level), as
 * `key=value` text or one JSON object per line. Lines are batched and written once per event
 * loop turn so a busy gateway makes one write call per batch, not per request.
 *
 * @since 0.1.0
 */

export type Value = string | number | undefined

export interface Sink {
  write(line: string): void
}

const NEEDS_QUOTES = /[\s"=]/

export class AccessLog {
  private buffer = ""
  private lastMs = 0
  private lastTime = ""
  private scheduled = false
  private readonly format: "text" | "json"
  private readonly removed: ReadonlySet<string>
  private readonly sink: Sink
  private readonly flush = () => {
    this.scheduled = false
    const out = this.buffer
    this.buffer = ""
    if (out !== "") this.sink.write(out)
  }

  constructor(format: "text" | "json", removed: ReadonlyArray<string>, sink: Sink = process.stdout) {
    this.format = format
    this.removed = new Set(removed)
    this.sink = sink
  }

  /** Logs one event: `values[i]` is the value of `names[i]`; empty values are left out. */
  log(names: ReadonlyArray<string>, values: ReadonlyArray<Value>): void {
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
      line = JSON.stringify(record)
    } else {
      line = time + "\tinfo\trequest"
      for (let i = 0; i < names.length; i++) {
        const value = values[i]
        if (value === undefined || value === "" || removed?.has(names[i]!) === true) continue
        const text = typeof value === "number" ? String(value) : value
        line += NEEDS_QUOTES.test(text) ? ` ${names[i]}=${JSON.stringify(text)}` : ` ${names[i]}=${text}`
      }
    }
    this.buffer += line + "\n"
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.flush)
    }
  }

  /** Writes what is buffered now (at shutdown). */
  drain(): void {
    this.flush()
  }
}
