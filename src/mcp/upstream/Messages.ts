/**
 * The `message` events of an upstream SSE body, shared by the Streamable HTTP and SSE target
 * clients: responses go to `onResponse`; server notifications and server→client requests go to
 * the session's `Inbound`, and the body is paused while the session applies backpressure; a
 * framing error destroys the body and is reported once to `onError`. A refused message that
 * answers a request (too deep, not JSON-RPC) goes to `onInvalid` with its id. Events other than
 * `message` (the legacy transport's `endpoint`) go to `onOther`.
 *
 * @since 0.1.0
 */
import type { Readable } from "node:stream"
import { type SseEvent, SseParser } from "../EventStream.ts"
import * as McpSchema from "../McpSchema.ts"
import type { Inbound } from "../Upstream.ts"

/** A source that can stop for backpressure: `pause` answers false when it was already paused. */
export interface Flow {
  readonly pause: () => boolean
  readonly resume: () => void
}

/** The SSE parser behind `read`, for sources that are not Readables (an undici dispatch handler). */
export const reader = (
  inbound: Inbound,
  onResponse: (response: McpSchema.Response) => void,
  onInvalid: (id: McpSchema.Id) => void,
  flow: Flow,
  onOther?: (event: SseEvent) => void
): SseParser =>
  new SseParser((event) => {
    if (event.event !== "message") return onOther?.(event)
    const parsed = McpSchema.parseUpstream(event.data)
    if (parsed._tag === "Invalid") return parsed.id === undefined ? undefined : onInvalid(parsed.id)
    if (parsed._tag === "Response") return onResponse(parsed.message)
    const wait = inbound.deliver(parsed.message)
    if (wait !== undefined && flow.pause()) wait(flow.resume)
  })

export const read = (
  body: Readable,
  inbound: Inbound,
  onResponse: (response: McpSchema.Response) => void,
  onError: (message: string) => void,
  onInvalid: (id: McpSchema.Id) => void,
  onOther?: (event: SseEvent) => void
): void => {
  const parser = reader(inbound, onResponse, onInvalid, {
    pause: () => {
      if (body.isPaused()) return false
      body.pause()
      return true
    },
    resume: () => void body.resume()
  }, onOther)
  body.setEncoding("utf8")
  body.on("data", (text: string) => {
    const error = parser.push(text)
    if (error !== undefined) {
      body.destroy()
      onError(error)
    }
  })
}
