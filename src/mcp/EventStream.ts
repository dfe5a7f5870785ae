/**
 * Bytes of MCP streams: the downstream SSE body (`event: message` frames with backpressure),
 * an incremental SSE parser for upstream responses, and a newline splitter for stdio. Every
 * buffer is bounded: a producer that gets `false` from `send` waits for `onDrain` before it
 * reads more from its upstream (a child's stdout, an undici body), so a slow client holds
 * back the upstream instead of growing the gateway's memory.
 *
 * @since 0.1.0
 */
import type { BodySink, StreamBody } from "../pipeline/ProxyResponse.ts"

/** Bytes queued for a downstream stream before the producer is told to wait. */
export const STREAM_HIGH_WATER_BYTES = 256 * 1024
/** The largest single JSON-RPC message accepted from an upstream (a stdio line, an SSE event, a JSON body). */
export const MAX_MESSAGE_BYTES = 32 * 1024 * 1024

const encodeFrame = (message: unknown): Buffer => Buffer.from(`event: message\ndata: ${JSON.stringify(message)}\n\n`)

/** A downstream `text/event-stream` body: messages in, frames out, with backpressure. */
export class SseBody implements StreamBody {
  readonly _tag = "StreamBody"
  private sink: BodySink | undefined
  private pending: Array<Buffer> = []
  private pendingBytes = 0
  private ended = false
  private waiters: Array<() => void> = []
  private closeListeners: Array<() => void> = []
  /** True once the client went away or the stream was aborted: sends are dropped. */
  closed = false
  /** Called once, when the first frame is queued (the response head can go then). */
  onFirst: (() => void) | undefined = undefined

  /** Queues one message; false asks the producer to wait for `onDrain`. */
  send(message: unknown): boolean {
    if (this.closed || this.ended) return true
    const frame = encodeFrame(message)
    const first = this.onFirst
    if (first !== undefined) {
      this.onFirst = undefined
      first()
    }
    const sink = this.sink
    if (sink === undefined) {
      this.pending.push(frame)
      this.pendingBytes += frame.length
      return this.pendingBytes < STREAM_HIGH_WATER_BYTES
    }
    return sink.write(frame)
  }

  /** A named event with text data (the legacy SSE `endpoint` event); one `data:` line per line. */
  event(name: string, data: string): void {
    if (this.closed || this.ended) return
    const frame = Buffer.from(`event: ${name}\n${data.split(/\r?\n/).map((l) => `data: ${l}\n`).join("")}\n`)
    if (this.sink !== undefined) this.sink.write(frame)
    else {
      this.pending.push(frame)
      this.pendingBytes += frame.length
    }
  }

  /**
   * An SSE comment: makes the response head go out on a stream with nothing to say yet. None
   * while the client is not taking what was sent: it would keep nothing alive, and each one
   * would count as output the client took no byte of (listeners/SendWatch.ts).
   */
  comment(): void {
    if (this.closed || this.ended || this.sink?.writableNeedDrain === true) return
    const frame = Buffer.from(":\n\n")
    if (this.sink !== undefined) this.sink.write(frame)
    else {
      this.pending.push(frame)
      this.pendingBytes += frame.length
    }
  }

  /** Calls `resume` once the stream can take more (or is gone). */
  onDrain(resume: () => void): void {
    if (this.closed) return resume()
    this.waiters.push(resume)
    if (this.sink !== undefined && this.waiters.length === 1) this.sink.once("drain", this.flushWaiters)
  }

  onClose(listener: () => void): void {
    if (this.closed) listener()
    else this.closeListeners.push(listener)
  }

  end(): void {
    if (this.ended) return
    this.ended = true
    this.stopKeepAlive?.()
    if (this.sink !== undefined) this.sink.end()
  }

  private stopKeepAlive: (() => void) | undefined = undefined

  /**
   * A long-lived stream (a session's GET, the legacy SSE stream): an SSE comment every `ms`, so
   * idle-timeout proxies keep it open and a connection that died silently errors on a write and
   * closes it. Stops when the stream ends or closes.
   */
  keepAlive(ms: number): void {
    if (this.stopKeepAlive !== undefined || this.closed || this.ended) return
    const timer = setInterval(() => this.comment(), ms)
    timer.unref()
    this.stopKeepAlive = () => clearInterval(timer)
    this.onClose(this.stopKeepAlive)
  }

  complete(): Uint8Array | undefined {
    if (!this.ended || this.closed || this.sink !== undefined) return undefined
    const bytes = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending)
    this.pending = []
    this.pendingBytes = 0
    this.markClosed()
    return bytes
  }

  pipeTo(sink: BodySink): void {
    this.sink = sink
    sink.once("close", () => this.markClosed())
    for (const frame of this.pending) sink.write(frame)
    this.pending = []
    this.pendingBytes = 0
    if (this.ended) sink.end()
    else if (this.waiters.length > 0) this.flushWaiters()
  }

  abort(_reason: Error): void {
    this.markClosed()
  }

  private readonly flushWaiters = () => {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }

  private markClosed(): void {
    if (this.closed) return
    this.closed = true
    this.pending = []
    this.flushWaiters()
    const listeners = this.closeListeners
    this.closeListeners = []
    for (const l of listeners) l()
  }
}

export interface SseEvent {
  readonly event: string
  readonly data: string
  readonly id: string | undefined
}

/** Incremental `text/event-stream` parser (WHATWG HTML §9.2.6), bounded per event. */
export class SseParser {
  /** The unfinished line, in the pieces it arrived in: each chunk is scanned once, so a long line costs linear time. */
  private pending: Array<string> = []
  private pendingLength = 0
  private event = ""
  private data: Array<string> = []
  private dataBytes = 0
  private id: string | undefined = undefined
  private readonly onEvent: (event: SseEvent) => void

  constructor(onEvent: (event: SseEvent) => void) {
    this.onEvent = onEvent
  }

  /** Feeds text; returns an error message when an event exceeds `MAX_MESSAGE_BYTES`. */
  push(text: string): string | undefined {
    // Appending to one buffer and searching it from its start made a line that arrives in n
    // chunks cost O(n²): 17 s of blocked event loop for a 25 MiB event in 64 KiB chunks.
    let start = 0
    for (;;) {
      const nl = text.indexOf("\n", start)
      if (nl === -1) break
      let line = text.slice(start, nl)
      start = nl + 1
      if (this.pending.length > 0) {
        this.pending.push(line)
        line = this.pending.join("")
        this.pending = []
        this.pendingLength = 0
      }
      if (line.endsWith("\r")) line = line.slice(0, -1)
      this.line(line)
      if (this.dataBytes > MAX_MESSAGE_BYTES) return "upstream event too large"
    }
    if (start < text.length) {
      const rest = start === 0 ? text : text.slice(start)
      this.pending.push(rest)
      this.pendingLength += rest.length
      if (this.pendingLength > MAX_MESSAGE_BYTES) return "upstream event too large"
    }
    return undefined
  }

  private line(line: string): void {
    if (line === "") {
      if (this.data.length > 0) this.onEvent({ event: this.event === "" ? "message" : this.event, data: this.data.join("\n"), id: this.id })
      this.event = ""
      this.data = []
      this.dataBytes = 0
      return
    }
    if (line.startsWith(":")) return
    const colon = line.indexOf(":")
    const name = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? "" : line.slice(colon + 1)
    if (value.startsWith(" ")) value = value.slice(1)
    if (name === "data") {
      this.data.push(value)
      this.dataBytes += value.length
    } else if (name === "event") this.event = value
    else if (name === "id") this.id = value
  }
}

/** Splits newline-delimited JSON (the stdio transport), bounded per line. */
export class LineSplitter {
  private parts: Array<Buffer> = []
  private partBytes = 0
  private readonly onLine: (line: string) => void

  constructor(onLine: (line: string) => void) {
    this.onLine = onLine
  }

  /** Feeds bytes; returns an error message when a line exceeds `MAX_MESSAGE_BYTES`. */
  push(chunk: Buffer): string | undefined {
    let start = 0
    for (;;) {
      const nl = chunk.indexOf(10, start)
      if (nl === -1) break
      const piece = chunk.subarray(start, nl)
      start = nl + 1
      let line: string
      if (this.parts.length > 0) {
        this.parts.push(piece)
        line = Buffer.concat(this.parts).toString("utf8")
        this.parts = []
        this.partBytes = 0
      } else line = piece.toString("utf8")
      if (line.trim() !== "") this.onLine(line)
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start)
      this.parts.push(rest)
      this.partBytes += rest.length
      if (this.partBytes > MAX_MESSAGE_BYTES) return "upstream message too large"
    }
    return undefined
  }
}
