/**
 * One MCP session: the upstream connections of its targets (owned by the session's Scope),
 * the routing of server-initiated messages to the client, the ids of relayed server→client
 * requests, and the per-upstream list caches. Sessions live in a `SessionStore` so another
 * store (a shared one for replicas) can replace the in-memory map; the live connections
 * always stay in the process that opened them, and a sealed id lets another replica reopen them.
 *
 * @since 0.1.0
 */
import { createHash } from "node:crypto"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { Bag } from "../shared/Bag.ts"
import type { SseBody } from "./EventStream.ts"
import * as McpSchema from "./McpSchema.ts"
import * as Naming from "./Naming.ts"
import type { SessionState } from "./SessionSealer.ts"
import type { CallContext, Inbound, Pause, Upstream } from "./Upstream.ts"

/** Server-initiated messages kept for a client that has no stream open yet (oldest dropped first). */
export const BACKLOG_MAX_MESSAGES = 64
/** And at most this many bytes of them (serialized): one message may be up to 32 MiB. */
export const BACKLOG_MAX_BYTES = 1024 * 1024

/** Sessions one MCP backend holds at once (open, opening, and per-request stateless ones). */
export const MAX_SESSIONS = 4096
/**
 * The same with a stdio target: every session owns a child process, so an unauthenticated
 * initialize flood must stop long before the machine runs out of processes or memory.
 */
export const MAX_STDIO_SESSIONS = 256
/** Ended session ids this process keeps refusing (oldest forgotten first). */
export const MAX_REVOKED = 65_536

/** Counts a backend's live sessions against its cap. */
export class SessionSlots {
  count = 0
  readonly max: number
  constructor(max: number) {
    this.max = max
  }

  take(): boolean {
    if (this.count >= this.max) return false
    this.count++
    return true
  }

  release(): void {
    this.count--
  }
}

/** A backend is at its session cap: answered 503, nothing is opened. */
export class TooManySessions {
  readonly _tag = "TooManySessions"
}

/**
 * Ids of sessions ended by DELETE, idle expiry or a snapshot end that did not hand them over, by nonce, until they could no longer be
 * resumed anyway (`issuedAt + MAX_RESUME_AGE_MS`), so an ended session is not reopened from
 * its sealed id on this process. One set per process: nonces are unique and ids outlive a
 * config reload. Other replicas learn nothing of it (that needs a shared store).
 */
export class Revocations {
  private readonly until = new Map<string, number>()

  revoke(state: SessionState, maxAge: number): void {
    if (state.nonce === "") return
    if (this.until.size >= MAX_REVOKED) {
      const oldest = this.until.keys().next()
      if (oldest.done !== true) this.until.delete(oldest.value)
    }
    this.until.set(state.nonce, state.issuedAt + maxAge)
  }

  revoked(state: SessionState): boolean {
    return this.until.has(state.nonce)
  }

  /** Forgets revocations whose ids have aged out. */
  purge(now: number): void {
    for (const [nonce, until] of this.until) if (until < now) this.until.delete(nonce)
  }
}

/** A client request in flight (`Session.trackCall`). */
interface TrackedCall {
  readonly id: McpSchema.Id
  readonly abandon: () => void
  /** Registration order: of two calls with one id, the later is the one a cancellation names. */
  readonly seq: number
  bagIndex: number
}

export interface SessionStore {
  readonly get: (id: string) => Session | undefined
  readonly set: (id: string, session: Session) => void
  readonly delete: (id: string) => void
  readonly values: () => Iterable<Session>
}

/** How much of an id the memory store hashes. */
const KEY_CHARS = 24

/**
 * The in-process store, keyed by an id's first `KEY_CHARS` characters: the id a request names is
 * a fresh string each time, and hashing a whole sealed id (≈ 400 characters) cost ≈ 0.7 µs per
 * lookup. Sealed ids start with a random 12-byte nonce, so their prefixes differ; the full id is
 * still compared, and an id whose prefix is taken by another goes to a second map by full id.
 */
export const memoryStore = (): SessionStore => {
  const byPrefix = new Map<string, { readonly id: string; readonly session: Session }>()
  const collided = new Map<string, Session>()
  const prefixOf = (id: string) => (id.length <= KEY_CHARS ? id : id.slice(0, KEY_CHARS))
  return {
    get: (id) => {
      const entry = byPrefix.get(prefixOf(id))
      if (entry !== undefined && entry.id === id) return entry.session
      return collided.size === 0 ? undefined : collided.get(id)
    },
    set: (id, session) => {
      const key = prefixOf(id)
      const entry = byPrefix.get(key)
      if (entry !== undefined && entry.id !== id) return void collided.set(id, session)
      byPrefix.set(key, { id, session })
      // An id that went to `collided` while another held its prefix lives in one map only.
      if (collided.size > 0) collided.delete(id)
    },
    delete: (id) => {
      const key = prefixOf(id)
      if (byPrefix.get(key)?.id === id) byPrefix.delete(key)
      else collided.delete(id)
    },
    values: function*() {
      for (const entry of byPrefix.values()) yield entry.session
      yield* collided.values()
    }
  }
}

/** The list methods whose upstream results are cached, and the notification that invalidates each. */
export const LIST_INVALIDATED_BY: Readonly<Record<string, string>> = {
  "tools/list": "notifications/tools/list_changed",
  "prompts/list": "notifications/prompts/list_changed",
  "resources/list": "notifications/resources/list_changed",
  "resources/templates/list": "notifications/resources/list_changed"
}

/** Prefix of relayed server→client request ids: `agw_<target>_n_<num>` / `agw_<target>_s_<str>`. */
const RELAY_PREFIX = "agw_"

export const relayId = (target: string, id: McpSchema.Id): string =>
  typeof id === "number" ? `${RELAY_PREFIX}${target}_n_${id}` : `${RELAY_PREFIX}${target}_s_${id}`

export const parseRelayId = (id: McpSchema.Id | null): { readonly target: string; readonly id: McpSchema.Id } | undefined => {
  if (typeof id !== "string" || !id.startsWith(RELAY_PREFIX)) return undefined
  const m = /^agw_([^_]+)_(n|s)_(.*)$/s.exec(id)
  if (m === null) return undefined
  if (m[2] === "n") {
    const n = Number(m[3])
    return Number.isFinite(n) ? { target: m[1]!, id: n } : undefined
  }
  return { target: m[1]!, id: m[3]! }
}

/**
 * What the access log writes as `mcp.session.id`: the first 16 hex digits of the id's SHA-256.
 * The id itself is a bearer capability (whoever has it can resume an anonymous session, and a
 * sealed id reopens it on any replica), so logs carry a digest that correlates the lines of one
 * session, on every replica, and can be recomputed from a known id
 * (`printf %s "$id" | sha256sum | cut -c1-16`), but resumes nothing.
 */
export const logRef = (id: string): string => createHash("sha256").update(id).digest("hex").slice(0, 16)

export class Session {
  /** Set by `seal` once initialize told the upstream session ids (the id seals them). */
  id: string
  state: SessionState
  readonly scope: Scope.Closeable
  readonly naming: Naming.Naming
  readonly upstreams = new Map<string, Upstream>()
  lastActive: number
  closed = false
  /** The call the session ended on, for the transports' own closing requests (`Inbound.ownCall`). */
  private endedBy: CallContext | undefined = undefined
  /**
   * The request the session's targets are being connected for (initialize, a resume, a legacy
   * SSE GET), while `connectSession` runs: a transport's own request at connect (an SSE
   * target's GET) carries its forwarded headers. Cleared once connected, so nothing later reuses them.
   */
  opening: CallContext | undefined = undefined
  /** Streams of requests in flight, per target: where that target's messages go first. */
  private readonly inFlight = new Map<string, Array<SseBody>>()
  private listenStream: SseBody | undefined = undefined
  /** Messages for the next GET stream with their serialized sizes, and the sum of those. */
  private backlog: Array<{ readonly message: unknown; readonly size: number }> = []
  private backlogBytes = 0
  /** Cached upstream list results by `target|method`, and a generation per `target|method` for races. */
  private readonly cache = new Map<string, unknown>()
  private readonly generation = new Map<string, number>()
  /**
   * The client's requests in flight: how to abandon each (`notifications/cancelled`). A `Bag`,
   * not a `Map` by id: one entry comes and goes per call (see `shared/Bag.ts`).
   */
  private readonly calls = new Bag<TrackedCall>()
  private callSeq = 0
  /** Waiting for `calls` to empty (`idle`). */
  private readonly idleWaiters = new Set<() => void>()
  /** Set by `release`: the session lives on in the next snapshot, so its upstream sessions are kept. */
  private released = false

  constructor(id: string, state: SessionState, scope: Scope.Closeable, naming: Naming.Naming, now: number) {
    this.id = id
    this.state = state
    this.scope = scope
    this.naming = naming
    this.lastActive = now
  }

  seal(id: string, state: SessionState): void {
    this.id = id
    this.state = state
  }

  private ref: string | undefined = undefined
  private refOf: string | undefined = undefined

  /** `logRef(id)`, computed once per id (a request's log line must not hash it again). */
  get logRef(): string {
    if (this.refOf !== this.id || this.ref === undefined) {
      this.ref = logRef(this.id)
      this.refOf = this.id
    }
    return this.ref
  }

  /** The inbound side handed to a target's connection. */
  inbound(target: string): Inbound {
    return {
      deliver: (message) => this.deliver(target, message),
      closed: () => {
        this.upstreams.delete(target)
      },
      ownCall: () => Effect.sync(() => this.endedBy ?? this.opening ?? this.detachedCall()),
      handedOver: () => this.released
    }
  }

  private deliver(target: string, message: McpSchema.Request | McpSchema.Notification): Pause | undefined {
    let out: unknown = message
    if ("id" in message) {
      out = { ...message, id: relayId(target, message.id) }
    } else if (message.method === "notifications/cancelled") {
      // The server abandons one of its requests to the client, which knows it by its relayed id.
      const id = McpSchema.field(message.params, "requestId")
      if (typeof id === "number" || typeof id === "string") out = { ...message, params: { ...message.params, requestId: relayId(target, id) } }
    } else {
      for (const [method, notification] of Object.entries(LIST_INVALIDATED_BY)) {
        if (notification === message.method) this.invalidate(target, method)
      }
      const uri = McpSchema.field(message.params, "uri")
      if (message.method === "notifications/resources/updated" && typeof uri === "string") {
        out = { ...message, params: { ...message.params, uri: Naming.exposeUri(this.naming, target, uri) } }
      }
    }
    const stream = this.streamFor(target)
    if (stream === undefined) {
      this.keep(out)
      return undefined
    }
    return stream.send(out) ? undefined : (resume) => stream.onDrain(resume)
  }

  private streamFor(target: string): SseBody | undefined {
    const streams = this.inFlight.get(target)
    if (streams !== undefined) {
      for (let i = streams.length - 1; i >= 0; i--) if (!streams[i]!.closed) return streams[i]
    }
    return this.listenStream !== undefined && !this.listenStream.closed ? this.listenStream : undefined
  }

  /** Routes `targets`' server messages to `stream` while `effect` runs. */
  withStream<A, E>(targets: ReadonlyArray<string>, stream: SseBody, effect: Effect.Effect<A, E>): Effect.Effect<A, E> {
    return Effect.acquireUseRelease(
      Effect.sync(() => {
        for (const t of targets) {
          const list = this.inFlight.get(t)
          if (list === undefined) this.inFlight.set(t, [stream])
          else list.push(stream)
        }
      }),
      () => effect,
      () =>
        Effect.sync(() => {
          for (const t of targets) {
            const list = this.inFlight.get(t)
            const i = list?.indexOf(stream) ?? -1
            if (list !== undefined && i !== -1) list.splice(i, 1)
          }
        })
    )
  }

  /**
   * Registers a client request in flight under its JSON-RPC id (a later one with the same id
   * is the one `cancelCall` finds); the returned function unregisters it.
   */
  trackCall(id: McpSchema.Id, abandon: () => void): () => void {
    const call: TrackedCall = { id, abandon, seq: ++this.callSeq, bagIndex: -1 }
    this.calls.add(call)
    return () => {
      if (!this.calls.delete(call)) return
      if (this.calls.size === 0) for (const done of [...this.idleWaiters]) done()
    }
  }

  /** Completes once no tracked client request is in flight (at once when none is). */
  idle(): Effect.Effect<void> {
    return Effect.callback<void>((resume) => {
      if (this.calls.size === 0) return resume(Effect.void)
      const done = () => {
        this.idleWaiters.delete(done)
        resume(Effect.void)
      }
      this.idleWaiters.add(done)
      return Effect.sync(() => void this.idleWaiters.delete(done))
    })
  }

  /**
   * The client cancelled its request `id`: it is abandoned (interrupted), and each target it
   * reached is told in its own id space by its transport. False when no such request is in flight.
   */
  cancelCall(id: unknown): boolean {
    if (typeof id !== "number" && typeof id !== "string") return false
    // A scan: cancellations are rare, and a session has few calls in flight.
    let latest: TrackedCall | undefined
    this.calls.forEach((call) => {
      if (call.id === id && (latest === undefined || call.seq > latest.seq)) latest = call
    })
    if (latest === undefined) return false
    latest.abandon()
    return true
  }

  /** A call with no client request behind it: no forwarded headers, the session's protocol version. */
  private detachedCall(): CallContext {
    return { headers: undefined, protocolVersion: this.state.protocolVersion }
  }

  /** The GET stream: one per session (the frontends open it only while none is open: 409 otherwise). */
  listen(stream: SseBody): void {
    this.listenStream = stream
    this.backlogBytes = 0
    for (const { message } of this.backlog.splice(0)) stream.send(message)
  }

  /** Backlogs a message for the next stream, within BACKLOG_MAX_MESSAGES and BACKLOG_MAX_BYTES (oldest go first). */
  private keep(message: unknown): void {
    const size = Buffer.byteLength(JSON.stringify(message))
    if (size > BACKLOG_MAX_BYTES) return this.dropped(message)
    this.backlog.push({ message, size })
    this.backlogBytes += size
    while (this.backlog.length > BACKLOG_MAX_MESSAGES || this.backlogBytes > BACKLOG_MAX_BYTES) {
      const oldest = this.backlog.shift()!
      this.backlogBytes -= oldest.size
      this.dropped(oldest.message)
    }
  }

  /**
   * A backlogged message no client will see: a server→client request among them is answered
   * with an error at once, so its target does not wait for an answer that cannot come.
   */
  private dropped(message: unknown): void {
    const id = McpSchema.field(message, "id")
    const relayed = typeof McpSchema.field(message, "method") === "string" && typeof id === "string" ? parseRelayId(id) : undefined
    if (relayed === undefined) return
    const upstream = this.upstreams.get(relayed.target)
    if (upstream === undefined) return
    const answer = McpSchema.errorResponse(relayed.id, McpSchema.ErrorCode.InternalError, "no client stream to relay this request to")
    Effect.runFork(Effect.ignore(upstream.send(answer, this.detachedCall())))
  }

  get listening(): boolean {
    return this.listenStream !== undefined && !this.listenStream.closed
  }

  cached(target: string, method: string): unknown {
    return this.cache.get(`${target}|${method}`)
  }

  generationOf(target: string, method: string): number {
    return this.generation.get(`${target}|${method}`) ?? 0
  }

  /** Stores a list result unless a list_changed arrived since the request was sent. */
  store(target: string, method: string, generation: number, result: unknown): void {
    if (this.generationOf(target, method) === generation) this.cache.set(`${target}|${method}`, result)
  }

  private invalidate(target: string, method: string): void {
    const key = `${target}|${method}`
    this.cache.delete(key)
    this.generation.set(key, (this.generation.get(key) ?? 0) + 1)
  }

  /**
   * Ends this process's hold on the session but not the session: a config reload handed it to
   * the next snapshot, which resumes it from its sealed id, so the connections close without
   * ending their upstream sessions (no DELETE). Calls in flight keep their own requests.
   */
  release(): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (!this.closed) this.released = true
      return this.close()
    })
  }

  /** Ends the session; `call`, the request it ends on (none: idle expiry, shutdown, a reload that cannot hand it over), shapes the upstream DELETEs. */
  close(call?: CallContext): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.closed) return Effect.void
      this.closed = true
      this.endedBy = call
      this.listenStream?.end()
      return Scope.close(this.scope, Exit.void)
    })
  }
}
