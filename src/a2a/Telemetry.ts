/**
 * A2A fields of the access log (`a2a.method`, `a2a.response.outcome`, `a2a.response.error_code`,
 * `a2a.result.kind`, `a2a.task.state`, `a2a.context.id`) and the response inspection that fills
 * them.
 *
 * A JSON answer is inspected while it streams to the client, never before: `InspectingBody`
 * sits between the upstream exchange and the downstream socket, passes every chunk (and the
 * socket's backpressure) straight through, keeps a copy of at most `MAX_INSPECTED_BYTES`, and
 * parses it when the body ends — before the listener writes the access log, which happens when
 * the response is finished. So telemetry adds no latency and a large answer costs a bounded copy.
 *
 * @since 0.1.0
 */
import * as Json from "../shared/Json.ts"
import type { BodySink, ProxyResponse, StreamBody } from "../pipeline/ProxyResponse.ts"
import type { ProxyRequest } from "../pipeline/RequestContext.ts"
import { field, type MethodInfo } from "./Protocol.ts"

/** Recorded on `ProxyRequest.a2a` by the `a2a` policy; its presence makes the request `protocol=a2a`. */
export interface A2aLogFields {
  /** `a2a.method` (JSON-RPC calls only). */
  method: string | undefined
  /** `a2a.response.outcome`: `success`, `error` or `unknown` (JSON answers only). */
  outcome: "success" | "error" | "unknown" | undefined
  /** `a2a.response.error_code`: the JSON-RPC error code. */
  errorCode: number | undefined
  /** `a2a.result.kind`: `task`, `message`, `status-update`, `artifact-update`, … */
  resultKind: string | undefined
  /** `a2a.task.state` as the agent wrote it (`working`, `TASK_STATE_COMPLETED`, …). */
  taskState: string | undefined
  /** `a2a.context.id` */
  contextId: string | undefined
}

export const fields = (method: string | undefined): A2aLogFields => ({
  method,
  outcome: undefined,
  errorCode: undefined,
  resultKind: undefined,
  taskState: undefined,
  contextId: undefined
})

/**
 * Most of a JSON answer copied for inspection. The fields live in the envelope, but where in
 * the text is up to the agent (a task's artifacts may come before its status), so the whole
 * answer is parsed; larger answers are logged with outcome `unknown`.
 */
export const MAX_INSPECTED_BYTES = 256 * 1024

/** Longest agent-chosen string (task state, context id) logged; longer ones are left out. */
export const MAX_FIELD_LENGTH = 256

const boundedString = (value: unknown): string | undefined =>
  typeof value === "string" && value !== "" && value.length <= MAX_FIELD_LENGTH ? value : undefined

const isObject = (value: unknown): boolean => typeof value === "object" && value !== null && !Array.isArray(value)

/** Fills the response fields from a parsed JSON-RPC answer. */
export const record = (out: A2aLogFields, answer: unknown, method: MethodInfo | undefined): void => {
  if (!isObject(answer)) {
    out.outcome = "unknown"
    return
  }
  const error = field(answer, "error")
  if (isObject(error)) {
    out.outcome = "error"
    const code = field(error, "code")
    if (typeof code === "number" && Number.isInteger(code)) out.errorCode = code
    return
  }
  const result = field(answer, "result")
  if (result === undefined) {
    out.outcome = "unknown"
    return
  }
  out.outcome = "success"
  // v0.3 results name themselves (`kind`); v1.0 SendMessage wraps them (`{task}` / `{message}`),
  // and v1.0 GetTask/CancelTask answer a bare Task.
  let subject: unknown = result
  const kind = boundedString(field(result, "kind"))
  if (kind !== undefined) out.resultKind = kind
  else if (isObject(field(result, "task"))) {
    out.resultKind = "task"
    subject = field(result, "task")
  } else if (isObject(field(result, "message"))) {
    out.resultKind = "message"
    subject = field(result, "message")
  } else if (method?.returnsTask === true && isObject(result) && field(result, "status") !== undefined) out.resultKind = "task"
  out.taskState = boundedString(field(field(subject, "status"), "state"))
  out.contextId = boundedString(field(subject, "contextId"))
}

const parse = (bytes: Uint8Array): unknown => {
  try {
    return Json.parseBounded(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"))
  } catch {
    return undefined
  }
}

/** Inspects bytes already in memory. */
export const recordBytes = (out: A2aLogFields, bytes: Uint8Array, method: MethodInfo | undefined): void => {
  if (bytes.length > MAX_INSPECTED_BYTES) out.outcome = "unknown"
  else record(out, parse(bytes), method)
}

/** The downstream sink with a bounded copy on the side; everything else is the real sink's. */
class InspectingSink implements BodySink {
  private readonly target: BodySink
  private readonly out: A2aLogFields
  private readonly method: MethodInfo | undefined
  private chunks: Array<Uint8Array> | undefined = []
  private size = 0

  constructor(target: BodySink, out: A2aLogFields, method: MethodInfo | undefined) {
    this.target = target
    this.out = out
    this.method = method
  }

  get writableFinished(): boolean {
    return this.target.writableFinished
  }

  write(chunk: Uint8Array): boolean {
    const chunks = this.chunks
    if (chunks !== undefined) {
      this.size += chunk.length
      if (this.size <= MAX_INSPECTED_BYTES) chunks.push(chunk)
      else {
        this.chunks = undefined
        this.out.outcome = "unknown"
      }
    }
    return this.target.write(chunk)
  }

  end(): void {
    const chunks = this.chunks
    if (chunks !== undefined) {
      this.chunks = undefined
      recordBytes(this.out, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.size), this.method)
    }
    this.target.end()
  }

  destroy(error?: Error): void {
    this.chunks = undefined
    this.target.destroy(error)
  }

  once(event: "drain" | "close", listener: () => void): unknown {
    this.target.once(event, listener)
    return this
  }
}

class InspectingBody implements StreamBody {
  readonly _tag = "StreamBody"
  private readonly inner: StreamBody
  private readonly out: A2aLogFields
  private readonly method: MethodInfo | undefined
  constructor(inner: StreamBody, out: A2aLogFields, method: MethodInfo | undefined) {
    this.inner = inner
    this.out = out
    this.method = method
  }
  pipeTo(sink: BodySink): void {
    this.inner.pipeTo(new InspectingSink(sink, this.out, this.method))
  }
  abort(reason: Error): void {
    this.inner.abort(reason)
  }
}

const declaredLength = (res: ProxyResponse): number | undefined => {
  const raw = res.headers["content-length"]
  if (typeof raw !== "string") return undefined
  const n = Number(raw)
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined
}

/**
 * Arranges for a JSON answer to be inspected as it is written. The streamed body is replaced by
 * the inspecting one in `openBodies` too, so the listener writes (or aborts) the wrapper.
 */
export const inspectResponse = (ctx: ProxyRequest, res: ProxyResponse, out: A2aLogFields, info: MethodInfo | undefined): void => {
  const body = res.body
  if (body === undefined || typeof body === "string" || body instanceof Uint8Array) {
    recordBytes(out, body === undefined ? new Uint8Array(0) : typeof body === "string" ? Buffer.from(body, "utf8") : body, info)
    return
  }
  const declared = declaredLength(res)
  if (declared !== undefined && declared > MAX_INSPECTED_BYTES) {
    out.outcome = "unknown"
    return
  }
  const wrapped = new InspectingBody(body, out, info)
  const open = ctx.openBodies
  if (open !== undefined) {
    const i = open.indexOf(body)
    if (i >= 0) open[i] = wrapped
  }
  res.body = wrapped
}
