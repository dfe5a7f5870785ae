/**
 * The HTTP backend call: undici `dispatch()` with a handler that resumes the Effect as soon
 * as the response head arrives and then moves body chunks straight to the downstream socket,
 * pausing undici when the client is slow (backpressure both ways; the request body is Node's
 * IncomingMessage handed to undici as a stream). Nothing is buffered beyond what arrives
 * between the response head and the listener attaching the sink.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type { Dispatcher } from "undici"
import * as ProxyError from "../pipeline/ProxyError.ts"
import { type BodySink, ProxyResponse, type StreamBody } from "../pipeline/ProxyResponse.ts"
import * as RequestBody from "../pipeline/RequestBody.ts"
import type { ProxyRequest } from "../pipeline/RequestContext.ts"
import * as Headers from "../shared/headers.ts"

type Resume = (effect: Effect.Effect<ProxyResponse, ProxyError.ProxyError>) => void

/** One upstream exchange; it is also the response's streamed body. */
class UpstreamCall implements Dispatcher.DispatchHandler, StreamBody {
  readonly _tag = "StreamBody"
  private controller: Dispatcher.DispatchController | undefined
  private resume: Resume | undefined
  private sink: BodySink | undefined
  private pending: Array<Buffer> | undefined
  private ended = false
  private failed: Error | undefined
  private aborted: Error | undefined
  private readonly onDrain = () => this.controller?.resume()

  constructor(resume: Resume) {
    this.resume = resume
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.aborted !== undefined) controller.abort(this.aborted)
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | Array<string> | undefined>): void {
    const resume = this.resume
    if (resume === undefined) return
    this.resume = undefined
    resume(Effect.succeed(new ProxyResponse(statusCode, Headers.copyEndToEnd(headers), this)))
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    const sink = this.sink
    if (sink === undefined) {
      ;(this.pending ??= []).push(chunk)
      controller.pause()
      return
    }
    if (!sink.write(chunk)) {
      controller.pause()
      sink.once("drain", this.onDrain)
    }
  }

  onResponseEnd(): void {
    this.ended = true
    this.sink?.end()
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    const resume = this.resume
    if (resume !== undefined) {
      this.resume = undefined
      resume(Effect.fail(ProxyError.make({ _tag: "UpstreamFailed", cause: error })))
      return
    }
    this.failed = error
    // The head was sent already: the only honest signal left is to cut the downstream stream.
    this.sink?.destroy(error)
  }

  pipeTo(sink: BodySink): void {
    // A downstream that closes early is noticed by the listener, which aborts every open body.
    this.sink = sink
    if (this.pending !== undefined) {
      for (const chunk of this.pending) sink.write(chunk)
      this.pending = undefined
    }
    if (this.failed !== undefined) sink.destroy(this.failed)
    else if (this.ended) sink.end()
    else this.controller?.resume()
  }

  abort(reason: Error): void {
    this.aborted = reason
    this.resume = undefined
    if (this.controller !== undefined && !this.controller.aborted) this.controller.abort(reason)
  }
}

/** Calls the upstream; the Effect succeeds with the response head, the body streams later. */
export const call = (dispatcher: Dispatcher, request: ProxyRequest): Effect.Effect<ProxyResponse, ProxyError.ProxyError> =>
  Effect.callback<ProxyResponse, ProxyError.ProxyError>(function(resume) {
    const upstream = new UpstreamCall(resume)
    ;(request.openBodies ??= []).push(upstream)
    try {
      dispatcher.dispatch(
        {
          path: request.path + request.query,
          method: request.method as Dispatcher.HttpMethod,
          headers: request.headers as Record<string, string | Array<string>>,
          body: RequestBody.forUpstream(request)
        },
        upstream
      )
    } catch (cause) {
      // undici throws synchronously on invalid input (e.g. a CR/LF a policy put in a header).
      resume(Effect.fail(ProxyError.make({ _tag: "UpstreamFailed", cause })))
      return
    }
    return Effect.sync(() => upstream.abort(new Error("request cancelled")))
  })
