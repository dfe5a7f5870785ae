/**
 * What a handler produces: a status, a header map and a body. Bodies stay in Node's hands:
 * a direct response carries bytes, a proxied one carries the upstream body pipe that the
 * listener connects to the downstream socket after the response policies ran.
 *
 * @since 0.1.0
 */
import * as Headers from "../shared/headers.ts"

/** A streamed body whose bytes are written straight to the downstream response. */
export interface StreamBody {
  readonly _tag: "StreamBody"
  /** Connects the body to the downstream writer; called exactly once. */
  pipeTo(sink: BodySink): void
  /** Aborts the body (the response will not be written). */
  abort(reason: Error): void
  /**
   * The whole body, when it is already complete before it was piped (an MCP answer that is
   * one frame): the listener then writes head and body in one syscall with a Content-Length,
   * instead of a chunked stream. Called at most once, instead of `pipeTo`.
   */
  complete?(): Uint8Array | undefined
}

/** The downstream side of a streamed body: Node's ServerResponse satisfies it. */
export interface BodySink {
  write(chunk: Uint8Array): boolean
  end(): void
  destroy(error?: Error): void
  once(event: "drain" | "close", listener: () => void): unknown
  readonly writableFinished: boolean
  /** A write asked to wait and no `drain` came yet (the client is not taking bytes); absent: unknown. */
  readonly writableNeedDrain?: boolean
}

export type Body = undefined | string | Uint8Array | StreamBody

export class ProxyResponse {
  status: number
  readonly headers: Headers.HeaderMap
  body: Body
  constructor(status: number, headers: Headers.HeaderMap, body: Body) {
    this.status = status
    this.headers = headers
    this.body = body
  }
}

/** A response with a short text body, as agentgateway answers errors and direct responses. */
export const text = (status: number, body: string): ProxyResponse => {
  const headers = Headers.empty()
  headers["content-type"] = "text/plain"
  return new ProxyResponse(status, headers, body)
}
