/**
 * The legacy SSE frontend (MCP 2024-11-05 "HTTP with SSE", agentgateway `mcp/sse.rs`), chosen
 * when the path is exactly `/sse` (reference §2.1). `GET /sse` opens the session and its one
 * stream, whose first event is `endpoint` (`/sse?sessionId=<id>`); `POST /sse?sessionId=<id>`
 * answers 202 at once and the reply follows on the stream as `event: message`. Closing the
 * stream ends the session (kills stdio targets). Sessions, federation and authorization are
 * the Streamable HTTP ones: the session is opened by `connectSession` and every message goes
 * through `Fanout`; only the framing differs. Sessions live in this frontend's own map (a
 * Streamable HTTP `mcp-session-id` never names one) and are not resumable elsewhere: the
 * stream is the session. Their number is bounded by the open streams.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import type { Handler } from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import * as RequestBody from "../pipeline/RequestBody.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"
import * as Headers from "../shared/headers.ts"
import { SseBody } from "./EventStream.ts"
import * as Fanout from "./Fanout.ts"
import * as McpSchema from "./McpSchema.ts"
import * as Naming from "./Naming.ts"
import { logRef, parseRelayId, type Session } from "./Session.ts"
import { type Backend, callContext, connectSession, draftState, GET_HEARTBEAT_MS, openFailed } from "./StreamableHttp.ts"

/** The path that selects this frontend (anything else is Streamable HTTP). */
export const SSE_PATH = "/sse"

const plain = (status: number, body: string): ProxyResponse => {
  const headers = Headers.empty()
  headers["content-type"] = "text/plain"
  return new ProxyResponse(status, headers, body)
}

const json = (status: number, message: unknown): ProxyResponse => {
  const headers = Headers.empty()
  headers["content-type"] = "application/json"
  return new ProxyResponse(status, headers, JSON.stringify(message))
}

/**
 * Requests of one legacy SSE session in flight at once (running, or with their reply waiting for
 * the client to read the stream). Beyond it a POST gets 429: a client that sends without
 * reading cannot make the gateway queue replies without bound.
 */
export const MAX_IN_FLIGHT = 64

interface Open {
  readonly session: Session
  readonly stream: SseBody
  /** Requests counted against MAX_IN_FLIGHT. */
  inFlight: number
}

export const handler = (backend: Backend): Handler => {
  const naming = Naming.make(backend.connects.map((c) => c.target), backend.ir.prefixMode)
  const sessions = new Map<string, Open>()

  const open = (ctx: ProxyRequest): Handler => {
    if (!(Headers.get(ctx.headers, "accept") ?? "").toLowerCase().includes("text/event-stream")) {
      return Effect.succeed(plain(406, "Not Acceptable: Client must accept text/event-stream"))
    }
    const id = crypto.randomUUID()
    const state = draftState(backend, ctx.identity, McpSchema.LATEST_VERSION)
    ctx.mcp = { method: undefined, target: undefined, toolName: undefined, sessionId: id, sessionRef: logRef(id) }
    return Effect.flatMap(Effect.result(connectSession(backend, naming, state, id, false, callContext(backend, ctx, state.protocolVersion))), (opened) => {
      if (opened._tag === "Failure") return openFailed(null, opened.failure)
      const session = opened.success
      const stream = new SseBody()
      stream.event("endpoint", `${SSE_PATH}?sessionId=${id}`)
      stream.keepAlive(GET_HEARTBEAT_MS)
      // Aborted by the listener (ending the session) if the client is gone before the head is written.
      ;(ctx.openBodies ??= []).push(stream)
      session.listen(stream)
      sessions.set(id, { session, stream, inFlight: 0 })
      const drop = () => {
        if (sessions.get(id)?.session === session) sessions.delete(id)
      }
      // The client went away: the session ends. The session ended (snapshot swap): the stream ends.
      stream.onClose(() => {
        drop()
        Effect.runFork(session.close())
      })
      const headers = Headers.empty()
      headers["content-type"] = "text/event-stream"
      headers["cache-control"] = "no-cache"
      const finalizer = Effect.sync(() => {
        drop()
        stream.end()
      })
      return Effect.as(Scope.addFinalizer(session.scope, finalizer), new ProxyResponse(200, headers, stream))
    })
  }

  /** Runs a request in the session's scope and writes its reply to the session's stream. */
  const answer = (ctx: ProxyRequest, open: Open, request: McpSchema.Request) => {
    const { session, stream } = open
    const context = callContext(backend, ctx, session.state.protocolVersion)
    const call: Fanout.Call = { request: ctx, context, stream }
    const run = request.method === "initialize"
      ? Effect.tap(Fanout.initialize(session, backend.options, request, call), (outcome) => {
        const negotiated = McpSchema.field(outcome.response.result, "protocolVersion")
        if (typeof negotiated === "string") session.seal(session.id, { ...session.state, protocolVersion: negotiated })
        return Effect.forEach([...session.upstreams.values()], (u) => u.listen(context), { discard: true })
      })
      : Fanout.handle(session, backend.options, request, call)
    // The request stays in flight until the stream took its reply (backpressure from the client).
    const reply = Effect.flatMap(run, (outcome) =>
      stream.send(outcome.response) ? Effect.void : Effect.callback<void>((resume) => stream.onDrain(() => resume(Effect.void))))
    open.inFlight++
    // A cancelled request is interrupted (its transports tell their targets) and gets no reply.
    return Effect.map(Effect.forkIn(Effect.ensuring(reply, Effect.sync(() => void open.inFlight--)), session.scope), (fiber) => {
      const untrack = session.trackCall(request.id, () => fiber.interruptUnsafe())
      fiber.addObserver(untrack)
    })
  }

  const post = (ctx: ProxyRequest): Handler => {
    const id = new URLSearchParams(ctx.query).get("sessionId")
    if (id === null || id === "") return Effect.succeed(plain(400, "sessionId is required"))
    const found = sessions.get(id)
    if (found === undefined || found.session.closed || found.session.state.identity !== (ctx.identity ?? "")) {
      return Effect.succeed(plain(404, "session not found"))
    }
    const contentType = (Headers.get(ctx.headers, "content-type") ?? "").toLowerCase()
    if (!contentType.startsWith("application/json")) return Effect.succeed(plain(415, "Unsupported Media Type: Content-Type must be application/json"))
    return Effect.flatMap(RequestBody.read(ctx, backend.maxBodyBytes), (bytes) => {
      if (bytes === undefined) return Effect.fail(ProxyError.make({ _tag: "BodyTooLarge" }))
      const message = McpSchema.parseBytes(bytes)
      if (message === undefined) return Effect.succeed(json(400, McpSchema.errorResponse(null, McpSchema.ErrorCode.ParseError, "invalid JSON-RPC message")))
      const session = found.session
      session.lastActive = Date.now()
      ctx.mcp = { method: message._tag === "Response" ? undefined : message.message.method, target: undefined, toolName: undefined, sessionId: id, sessionRef: session.logRef }
      const context = callContext(backend, ctx, session.state.protocolVersion)
      const accepted = plain(202, "Accepted")
      switch (message._tag) {
        case "Notification":
          return Effect.as(Fanout.notify(session, message.message, context), accepted)
        case "Response": {
          const relayed = parseRelayId(message.message.id)
          if (relayed === undefined) return Effect.succeed(accepted)
          return Effect.as(Fanout.respond(session, message.message, relayed.target, relayed.id, context), accepted)
        }
        case "Request":
          if (found.inFlight >= MAX_IN_FLIGHT) return Effect.succeed(plain(429, "too many requests in flight"))
          // This POST is logged when it is accepted, before the call is routed: its fields are known now.
          if (ctx.mcp !== undefined) Fanout.describe(session, message.message, ctx.mcp)
          return Effect.as(answer(ctx, found, message.message), accepted)
      }
    })
  }

  return Effect.flatMap(currentRequest, (ctx) => {
    ctx.backend = backend.key
    switch (ctx.method) {
      case "GET":
        return open(ctx)
      case "POST":
        return post(ctx)
      default:
        return Effect.succeed(plain(405, "method not allowed; must be GET or POST"))
    }
  })
}
