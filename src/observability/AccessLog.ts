/**
 * One access-log event per request (agentgateway's `request` target at info level), as
 * `key=value` text or one JSON object per line. Lines are batched and written once per event
 * loop turn so a busy gateway makes one write call per batch, not per request.
 *
 * @since 0.1.0
 */

export type Field = readonly [name: string, value: string | number | undefined]

export interface Sink {
  write(line: string): void
}

export class AccessLog {
  private buffer = ""
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

  log(fields: ReadonlyArray<Field>): void {
    const time = new Date().toISOString()
    let line: string
    if (this.format === "json") {
      const record: Record<string, string | number> = { time, level: "info", scope: "request" }
      for (const [name, value] of fields) {
        if (value !== undefined && value !== "" && !this.removed.has(name)) record[name] = value
      }
      line = JSON.stringify(record)
    } else {
      line = `${time}\tinfo\trequest`
      for (const [name, value] of fields) {
        if (value === undefined || value === "" || this.removed.has(name)) continue
        const text = String(value)
        line += /[\s"=]/.test(text) ? ` ${name}=${JSON.stringify(text)}` : ` ${name}=${text}`
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
