/**
 * The Streamable HTTP frontend (MCP 2025-03-26+, agentgateway `mcp/streamablehttp.rs`): one
 * endpoint, POST for client messages, GET for the server→client stream, DELETE to end a
 * session. Status rules (reference §2.2): 405 other methods (GET/DELETE too when stateless),
 * 406 without both Accept types, 415 without a JSON content type, 400 for bad JSON, batches,
 * unknown protocol versions and non-initialize messages without a session, 404 for an
 * unknown session or one presented by another identity, 202 for notifications and responses.
 * Requests are answered as `text/event-stream` (`event: message` frames): the head goes out
 * with the first frame, so a call that fails before anything was streamed still gets a
 * precise status.
 *
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import type * as Ir from "../ir/Ir.ts"
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
import { parseRelayId, type Revocations, Session, type SessionSlots, type SessionStore, TooManySessions } from "./Session.ts"
import { MAX_RESUME_AGE_MS, type SessionSealer, type SessionState } from "./SessionSealer.ts"
import { type CallContext, clientMessage, type Connect, logFailure, type Upstream, type UpstreamError } from "./Upstream.ts"

export interface Backend {
  /** The backend's name: sessions are valid on this backend only. */
  readonly key: string
  readonly ir: Ir.McpBackend
  /** Connectors in target order. */
  readonly connects: ReadonlyArray<{ readonly target: string; readonly connect: Connect }>
  readonly store: SessionStore
  /** The cap on live sessions (Session.MAX_SESSIONS / MAX_STDIO_SESSIONS). */
  readonly slots: SessionSlots
  /** Every session open now (stored, stateless, legacy SSE): what the snapshot's end drains or hands over. */
  readonly live: Set<Session>
  /** Ended sessions whose sealed ids must not reopen them. */
  readonly revocations: Revocations
  readonly sealer: SessionSealer
  readonly options: Fanout.Options
  /** Parent of every session's scope (the snapshot's). */
  readonly scope: Scope.Scope
  readonly maxBodyBytes: number
}

const plain = (status: number, body: string, extra?: Headers.HeaderMap): ProxyResponse => {
  const headers = extra === undefined ? Headers.empty() : { ...extra }
  headers["content-type"] = "text/plain"
  return new ProxyResponse(status, headers, body)
}

const json = (status: number, message: unknown, extra?: Headers.HeaderMap): ProxyResponse => {
  const headers = extra === undefined ? Headers.empty() : { ...extra }
  headers["content-type"] = "application/json"
  return new ProxyResponse(status, headers, JSON.stringify(message))
}

const sse = (body: SseBody, extra?: Headers.HeaderMap): ProxyResponse => {
  const headers = extra === undefined ? Headers.empty() : { ...extra }
  headers["content-type"] = "text/event-stream"
  headers["cache-control"] = "no-cache"
  return new ProxyResponse(200, headers, body)
}

const accepted = () => new ProxyResponse(202, Headers.empty(), undefined)

const accepts = (ctx: ProxyRequest, type: string) => (Headers.get(ctx.headers, "accept") ?? "").toLowerCase().includes(type)

export const callContext = (backend: Backend, ctx: ProxyRequest, protocolVersion: string | undefined): CallContext => ({
  headers: Fanout.forwardedHeaders(ctx.headers, backend.connects.length > 1 ? ctx.raw.headers : undefined),
  protocolVersion,
  request: ctx
})

/** How often an open GET stream (and a legacy SSE stream) gets an SSE comment (keep-alive, and dead-connection detection). */
export const GET_HEARTBEAT_MS = 15_000

/** Visible ASCII only (RFC 9110 field values; the MCP spec's session id rule). */
const VISIBLE_ASCII = /^[\x21-\x7e]+$/

/** A request the client may cancel (`notifications/cancelled` with its id) while it runs. */
interface Cancellable {
  readonly session: Session
  readonly id: McpSchema.Id
}

/**
 * Runs a request and answers as SSE once the first frame exists, or with the outcome's own
 * status when nothing was streamed (a denied tool is 400 JSON, a failed upstream 500). A
 * cancelled request is interrupted (its transports tell their targets) and its stream ends
 * without a response, as the spec wants for a cancelled request.
 */
const streamed = (run: (stream: SseBody) => Effect.Effect<Fanout.Outcome>, extra?: Headers.HeaderMap, cancellable?: Cancellable): Handler =>
  Effect.callback<ProxyResponse, ProxyError.ProxyError>((resume) => {
    const stream = new SseBody()
    let headSent = false
    let cancelled = false
    const head = () => {
      if (headSent) return
      headSent = true
      resume(Effect.succeed(sse(stream, extra)))
    }
    stream.onFirst = head
    const fiber = Effect.runFork(run(stream))
    stream.onClose(() => fiber.interruptUnsafe())
    const untrack = cancellable?.session.trackCall(cancellable.id, () => {
      cancelled = true
      fiber.interruptUnsafe()
    })
    fiber.addObserver((exit) => {
      untrack?.()
      if (cancelled) {
        stream.onFirst = undefined
        stream.end()
        head()
        return
      }
      if (Exit.isSuccess(exit)) {
        const outcome = exit.value
        if (!headSent && outcome.status !== 200) {
          headSent = true
          stream.onFirst = undefined
          resume(Effect.succeed(json(outcome.status, outcome.response, extra)))
          return
        }
        if (!headSent) {
          // Nothing streamed yet: the whole answer is ready, so the head goes out with it in one write.
          stream.onFirst = undefined
          stream.send(outcome.response)
          stream.end()
          head()
          return
        }
        stream.send(outcome.response)
        stream.end()
      } else if (!headSent) {
        headSent = true
        resume(Effect.fail(ProxyError.make({ _tag: "Internal", cause: exit.cause })))
      } else stream.end()
    })
    return Effect.sync(() => {
      if (!headSent) fiber.interruptUnsafe()
    })
  })

const rpcError = (status: number, id: McpSchema.Id | null, code: number, message: string, data?: unknown) =>
  json(status, McpSchema.errorResponse(id, code, message, data))

/** The state of a session not sealed yet (and of sessions that never are: stateless, legacy SSE). */
export const draftState = (backend: Backend, identity: string | undefined, protocolVersion: string): SessionState => ({
  backend: backend.key,
  identity: identity ?? "",
  protocolVersion,
  upstreams: {},
  resumable: false,
  nonce: "",
  issuedAt: 0
})

/**
 * Connects every target into a fresh session scope; failOpen keeps what connected (also the
 * legacy SSE frontend's). A backend at its session cap opens nothing.
 */
export const connectSession = (backend: Backend, naming: Naming.Naming, state: SessionState, id: string, resume: boolean, opening: CallContext) =>
  Effect.gen(function*() {
    if (!backend.slots.take()) return yield* Effect.fail(new TooManySessions())
    const scope = yield* Scope.fork(backend.scope, "parallel")
    const session = new Session(id, state, scope, naming, Date.now())
    session.opening = opening
    backend.live.add(session)
    yield* Scope.addFinalizer(scope, Effect.sync(() => {
      backend.slots.release()
      backend.live.delete(session)
    }))
    const connectAll = Effect.gen(function*() {
      for (const { target, connect } of backend.connects) {
        const token = resume ? state.upstreams[target] : undefined
        const result = yield* Effect.result(Scope.provide(connect(session.inbound(target), token), scope))
        if (result._tag === "Success") session.upstreams.set(target, result.success)
        else if (!backend.options.failOpen) return yield* Effect.fail(result.failure)
      }
      return session
    })
    // However connecting ends, the opening request's context goes (nothing later may reuse its
    // credential); a failed or interrupted connect ends the session, its upstream sessions with it.
    return yield* Effect.onExit(connectAll, (exit) =>
      Effect.ensuring(Exit.isSuccess(exit) ? Effect.void : session.close(), Effect.sync(() => void (session.opening = undefined))))
  })

/** The answer to a request whose session could not be opened: 503 at the cap, else 500 naming the target. */
export const openFailed = (id: McpSchema.Id | null, failure: UpstreamError | TooManySessions): Effect.Effect<ProxyResponse> =>
  failure._tag === "TooManySessions"
    ? Effect.as(Effect.logWarning("MCP session limit reached: refusing a new session"), rpcError(503, id, McpSchema.ErrorCode.InternalError, "too many MCP sessions"))
    : Effect.as(logFailure(failure), rpcError(500, id, McpSchema.ErrorCode.InternalError, clientMessage(failure)))

export const handler = (backend: Backend): Handler => {
  const naming = Naming.make(backend.connects.map((c) => c.target), backend.ir.prefixMode)
  const stateful = backend.ir.stateful

  /** Connects every target into a fresh session scope; failOpen keeps what connected. */
  const openSession = (state: SessionState, id: string, resume: boolean, opening: CallContext) => connectSession(backend, naming, state, id, resume, opening)

  const sealedState = (session: Session, identity: string, protocolVersion: string): SessionState => {
    const upstreams: Record<string, string | null> = {}
    let resumable = true
    for (const [target, u] of session.upstreams) {
      const token = u.resumeToken()
      if (token === undefined) resumable = false
      upstreams[target] = token ?? null
    }
    return { backend: backend.key, identity, protocolVersion, upstreams, resumable, nonce: crypto.randomUUID(), issuedAt: Date.now() }
  }

  const initialize = (ctx: ProxyRequest, request: McpSchema.Request, headerVersion: string | undefined): Handler => {
    const requested = McpSchema.field(request.params, "protocolVersion")
    const version = typeof requested === "string" && McpSchema.KNOWN_VERSIONS.includes(requested) ? requested : McpSchema.LATEST_VERSION
    const identity = ctx.identity ?? ""
    const draft = draftState(backend, identity, version)
    const context = callContext(backend, ctx, headerVersion)
    return Effect.flatMap(
      Effect.result(openSession(draft, "", false, context)),
      (opened) => {
        if (opened._tag === "Failure") return openFailed(request.id, opened.failure)
        const session = opened.success
        // Stateless: the session lives for this request only.
        const run = (stream: SseBody) =>
          Effect.flatMap(Fanout.initialize(session, backend.options, request, { request: ctx, context, stream }), (outcome) => {
            if (!stateful || outcome.response.error !== undefined) return Effect.as(session.close(context), outcome)
            const result = outcome.response.result
            const negotiated = McpSchema.field(result, "protocolVersion")
            const state = sealedState(session, identity, typeof negotiated === "string" ? negotiated : version)
            const id = backend.sealer.seal(state)
            session.seal(id, state)
            backend.store.set(id, session)
            if (ctx.mcp !== undefined) {
              ctx.mcp.sessionId = id
              ctx.mcp.sessionRef = session.logRef
            }
            // Upstream server-initiated streams open now: list_changed must reach the cache even before the client GETs.
            return Effect.as(Effect.forEach([...session.upstreams.values()], (u) => u.listen(context), { discard: true }), outcome)
          })
        if (!stateful) return streamed(run)
        // The id is only known once the upstreams answered, and it must be in the head: answer after the fan-out.
        return Effect.flatMap(
          Effect.sync(() => new SseBody()),
          (stream) =>
            Effect.map(run(stream), (outcome) => {
              const sessionId = ctx.mcp?.sessionId
              if (outcome.status !== 200 || sessionId === undefined) return json(outcome.status === 200 ? 500 : outcome.status, outcome.response)
              stream.send(outcome.response)
              stream.end()
              const extra = Headers.empty()
              extra["mcp-session-id"] = sessionId
              return sse(stream, extra)
            })
        )
      }
    )
  }

  /** Resumes in progress by id: a second request with the same id waits for the first instead of opening twice. */
  const resuming = new Map<string, Deferred.Deferred<Session | 404 | 503>>()

  /** The session an id names on this backend for this caller, reopened from its sealed state if needed. */
  const lookup = (ctx: ProxyRequest, id: string): Effect.Effect<Session | 400 | 404 | 503> => {
    const identity = ctx.identity ?? ""
    // The store holds only ids this gateway issued (visible ASCII): the check is for the others.
    const found = backend.store.get(id)
    if (found === undefined && !VISIBLE_ASCII.test(id)) return Effect.succeed(400)
    if (found !== undefined) {
      if (found.closed) return Effect.succeed(404)
      if (found.state.identity !== identity) return Effect.succeed(404)
      found.lastActive = Date.now()
      return Effect.succeed(found)
    }
    const state = backend.sealer.open(id)
    if (state === "invalid" || state.backend !== backend.key || state.identity !== identity || !state.resumable) return Effect.succeed(404)
    if (Date.now() - state.issuedAt > MAX_RESUME_AGE_MS || backend.revocations.revoked(state)) return Effect.succeed(404)
    const targets = backend.connects.map((c) => c.target)
    if (targets.length !== Object.keys(state.upstreams).length || targets.some((t) => !(t in state.upstreams))) return Effect.succeed(404)
    const pending = resuming.get(id)
    if (pending !== undefined) return Deferred.await(pending)
    const done = Deferred.makeUnsafe<Session | 404 | 503>()
    resuming.set(id, done)
    return openSession(state, id, true, callContext(backend, ctx, state.protocolVersion)).pipe(
      Effect.map((session): Session | 404 | 503 => {
        backend.store.set(id, session)
        return session
      }),
      Effect.catch((e) => Effect.succeed(e._tag === "TooManySessions" ? 503 as const : 404 as const)),
      Effect.tap((found) => Deferred.succeed(done, found)),
      // Interrupted: the waiters are told "not found" (the first completion wins, so this is a no-op otherwise).
      Effect.ensuring(Effect.suspend(() => {
        resuming.delete(id)
        return Deferred.succeed(done, 404)
      }))
    )
  }

  const withSession = (ctx: ProxyRequest, use: (session: Session) => Handler, missing: string): Handler => {
    const id = Headers.get(ctx.headers, "mcp-session-id")
    if (id === undefined) return Effect.succeed(plain(400, missing))
    return Effect.flatMap(lookup(ctx, id), (found) => {
      if (found === 400) return Effect.succeed(plain(400, "invalid session ID header"))
      if (found === 404) return Effect.succeed(plain(404, "session not found"))
      if (found === 503) return Effect.succeed(plain(503, "too many MCP sessions"))
      if (ctx.mcp !== undefined) {
        ctx.mcp.sessionId = id
        ctx.mcp.sessionRef = found.logRef
      }
      return use(found)
    })
  }

  const dispatch = (ctx: ProxyRequest, session: Session, message: McpSchema.Classified, headerVersion: string | undefined): Handler => {
    const context = callContext(backend, ctx, headerVersion ?? session.state.protocolVersion)
    switch (message._tag) {
      case "Notification":
        return Effect.as(Fanout.notify(session, message.message, context), accepted())
      case "Response": {
        const relayed = parseRelayId(message.message.id)
        if (relayed === undefined) return Effect.succeed(accepted())
        return Effect.as(Fanout.respond(session, message.message, relayed.target, relayed.id, context), accepted())
      }
      case "Request":
        return streamed((stream) => Fanout.handle(session, backend.options, message.message, { request: ctx, context, stream }), undefined, {
          session,
          id: message.message.id
        })
    }
  }

  /** Stateless: a fresh connection per request, initialized on the client's behalf, closed after. */
  const stateless = (ctx: ProxyRequest, message: McpSchema.Classified, headerVersion: string | undefined): Handler => {
    if (message._tag !== "Request") return Effect.succeed(accepted())
    if (message.message.method === "initialize") return initialize(ctx, message.message, headerVersion)
    const request = message.message
    const version = headerVersion ?? McpSchema.LATEST_VERSION
    const state = draftState(backend, ctx.identity, version)
    const context = callContext(backend, ctx, version)
    const init = {
      protocolVersion: version,
      capabilities: {},
      clientInfo: { name: "agentgateway", version: "stateless" }
    }
    return Effect.flatMap(Effect.result(openSession(state, "", false, context)), (opened) => {
      if (opened._tag === "Failure") return openFailed(request.id, opened.failure)
      const session = opened.success
      const prepare = Effect.forEach([...session.upstreams.values()], (u: Upstream) =>
        Effect.flatMap(u.request("initialize", init, context), () => u.send({ jsonrpc: "2.0", method: "notifications/initialized" }, context)), { concurrency: "unbounded", discard: true })
      // Tracked like a session's call, so a config reload lets it finish before closing its connections.
      return streamed((stream) =>
        prepare.pipe(
          Effect.flatMap(() => Fanout.handle(session, backend.options, request, { request: ctx, context, stream })),
          Effect.catch((e: UpstreamError) => Effect.as(logFailure(e), {
            response: McpSchema.errorResponse(request.id, McpSchema.ErrorCode.InternalError, clientMessage(e)),
            status: 500
          } satisfies Fanout.Outcome)),
          Effect.ensuring(session.close(context))
        ), undefined, { session, id: request.id })
    })
  }

  const post = (ctx: ProxyRequest): Handler => {
    if (!accepts(ctx, "application/json") || !accepts(ctx, "text/event-stream")) {
      return Effect.succeed(plain(406, "Not Acceptable: Client must accept both application/json and text/event-stream"))
    }
    const contentType = (Headers.get(ctx.headers, "content-type") ?? "").toLowerCase()
    if (!contentType.startsWith("application/json")) return Effect.succeed(plain(415, "Unsupported Media Type: Content-Type must be application/json"))
    return Effect.flatMap(RequestBody.read(ctx, backend.maxBodyBytes), (bytes) => {
      if (bytes === undefined) return Effect.fail(ProxyError.make({ _tag: "BodyTooLarge" }))
      const message = McpSchema.parseBytes(bytes)
      if (message === undefined) return Effect.succeed(rpcError(400, null, McpSchema.ErrorCode.ParseError, "invalid JSON-RPC message"))
      const id = message._tag === "Request" ? message.message.id : null
      const method = message._tag === "Response" ? undefined : message.message.method
      ctx.mcp = { method, target: undefined, toolName: undefined, sessionId: undefined }
      const headerVersion = Headers.get(ctx.headers, "mcp-protocol-version")
      if (headerVersion !== undefined) {
        if (!McpSchema.KNOWN_VERSIONS.includes(headerVersion)) {
          return Effect.succeed(
            method === "initialize"
              ? rpcError(400, id, McpSchema.ErrorCode.InvalidRequest, `unsupported MCP protocol version: ${headerVersion}`)
              : rpcError(400, id, McpSchema.ErrorCode.InvalidRequest, `unsupported MCP protocol version: ${headerVersion}`, {
                supported: McpSchema.KNOWN_VERSIONS,
                requested: headerVersion
              })
          )
        }
        if (method === "initialize" && message._tag === "Request" && McpSchema.field(message.message.params, "protocolVersion") !== headerVersion) {
          return Effect.succeed(rpcError(400, id, McpSchema.ErrorCode.HeaderMismatch, "MCP-Protocol-Version header does not match protocolVersion"))
        }
      }
      const mismatch = McpSchema.headerMismatch(message, Headers.get(ctx.headers, "mcp-method"), Headers.get(ctx.headers, "mcp-name"))
      if (mismatch !== undefined) return Effect.succeed(rpcError(400, id, McpSchema.ErrorCode.HeaderMismatch, mismatch))
      if (!stateful) return stateless(ctx, message, headerVersion)
      if (message._tag === "Request" && message.message.method === "initialize") return initialize(ctx, message.message, headerVersion)
      return withSession(ctx, (session) => dispatch(ctx, session, message, headerVersion), "session header is required for non-initialize requests")
    })
  }

  const get = (ctx: ProxyRequest): Handler => {
    if (!accepts(ctx, "text/event-stream")) return Effect.succeed(plain(406, "Not Acceptable: Client must accept text/event-stream"))
    return withSession(ctx, (session) =>
      Effect.suspend(() => {
        if (![...session.upstreams.values()].some((u) => u.serverMessages)) {
          return Effect.succeed(plain(405, "GET event stream is not supported by any upstream"))
        }
        // One stream per session (the spec: a message goes on one stream only); another GET may not take it over.
        if (session.listening) {
          return Effect.succeed(rpcError(409, null, McpSchema.ErrorCode.ServerError, "Conflict: Only one SSE stream is allowed per session"))
        }
        const stream = new SseBody()
        stream.comment()
        // A connection that died silently errors on a keep-alive write and closes the stream, so
        // the session does not keep a dead stream (and answer 409 to the reconnect).
        stream.keepAlive(GET_HEARTBEAT_MS)
        // Aborted by the listener if the client is gone before the head is written.
        ;(ctx.openBodies ??= []).push(stream)
        session.listen(stream)
        const context = callContext(backend, ctx, session.state.protocolVersion)
        return Effect.as(
          Effect.forEach([...session.upstreams.values()], (u) => u.listen(context), { concurrency: "unbounded", discard: true }),
          sse(stream)
        )
      }), "session ID is required")
  }

  const remove = (ctx: ProxyRequest): Handler => {
    const id = Headers.get(ctx.headers, "mcp-session-id")
    if (id === undefined) return Effect.succeed(plain(400, "session ID is required"))
    const found = backend.store.get(id)
    if (found === undefined) {
      // Held by another replica (or nowhere): at least this one will not reopen it.
      const state = backend.sealer.open(id)
      if (state !== "invalid" && state.backend === backend.key && state.identity === (ctx.identity ?? "")) backend.revocations.revoke(state, MAX_RESUME_AGE_MS)
      return Effect.succeed(accepted())
    }
    if (found.state.identity !== (ctx.identity ?? "")) return Effect.succeed(accepted())
    backend.store.delete(id)
    backend.revocations.revoke(found.state, MAX_RESUME_AGE_MS)
    // The upstream DELETEs carry this request's headers and credential, edited by each target's policies.
    return Effect.as(found.close(callContext(backend, ctx, found.state.protocolVersion)), accepted())
  }

  return Effect.flatMap(currentRequest, (ctx) => {
    ctx.backend = backend.key
    switch (ctx.method) {
      case "POST":
        return post(ctx)
      case "GET":
        return stateful ? get(ctx) : Effect.succeed(plain(405, "method not allowed; must be GET, POST, or DELETE"))
      case "DELETE":
        return stateful ? remove(ctx) : Effect.succeed(plain(405, "method not allowed; must be GET, POST, or DELETE"))
      default:
        return Effect.succeed(plain(405, "method not allowed; must be GET, POST, or DELETE"))
    }
  })
}

