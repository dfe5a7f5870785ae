/**
 * An `mcp:` backend as a route's backend call: built once per snapshot (connectors per
 * target, the session store, the sealer, the idle-session reaper in the snapshot's Scope, so
 * a shutdown closes every session and kills every stdio process group). When a config reload
 * ends the snapshot, sessions the next snapshot can resume from their sealed ids are handed
 * over (Handover.ts: connections closed, upstream sessions kept); the others (stdio, legacy
 * SSE, a changed backend or key) get their calls in flight finished, up to the termination
 * deadline, and then end as on shutdown, their ids refused from then on.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import type { PoolSettings, UpstreamPools, UpstreamTls } from "../backends/Pools.ts"
import { ConfigError } from "../config/ConfigError.ts"
import type * as Ir from "../ir/Ir.ts"
import * as BackendTls from "../policies/BackendTls.ts"
import type * as BackendAuth from "../policies/BackendAuth.ts"
import type { BuildEnv, Handler } from "../pipeline/Policy.ts"
import { currentRequest } from "../pipeline/RequestContext.ts"
import type * as Fanout from "./Fanout.ts"
import * as Handover from "./Handover.ts"
import { allowAll, type Authorizer } from "./Hooks.ts"
import { MAX_SESSIONS, MAX_STDIO_SESSIONS, memoryStore, Revocations, type Session, type SessionStore, SessionSlots } from "./Session.ts"
import * as SessionSealer from "./SessionSealer.ts"
import * as StreamableHttp from "./StreamableHttp.ts"
import * as TargetPolicies from "./TargetPolicies.ts"
import * as Traced from "./Traced.ts"
import { type Connect, httpOrigin } from "./Upstream.ts"
import * as Stdio from "./upstream/Stdio.ts"
import * as HttpUpstream from "./upstream/StreamableHttp.ts"
import * as Origin from "./Origin.ts"
import * as Sse from "./Sse.ts"
import * as SseUpstream from "./upstream/Sse.ts"
import * as OpenApi from "./upstream/OpenApi.ts"
import * as OpenApiUpstream from "./upstream/OpenApiUpstream.ts"

/** The longest the reaper sleeps between passes (shorter TTLs are checked at their own pace). */
export const REAP_INTERVAL_MS = 30_000

/** Without a configured key, one random key per process (ids stay valid across config reloads). */
let processKey: Buffer | undefined
/** Ended sessions, for the whole process: ids outlive the snapshot that issued them. */
const revocations = new Revocations()

/** Without `terminationDeadlineMs`: how long a retiring snapshot waits for calls in flight on sessions it cannot hand over. */
export const RETIRE_DRAIN_MS = 5000

/** The snapshot settings an MCP backend reads (`terminationDeadlineMs` bounds the drain when the snapshot ends). */
export type McpSettings = Pick<Ir.Settings, "mcpSessionTtlMs" | "sessionKey"> & Partial<Pick<Ir.Settings, "terminationDeadlineMs">> & PoolSettings

export interface BuildOptions {
  readonly settings: McpSettings
  readonly maxBodyBytes: number
  /** What per-target policies are built with (backendAuth's `make`). */
  readonly env?: BuildEnv
  /** The backend reference's merged `mcpAuthorization` (policies/McpAuthorization.ts); allow-all without one. */
  readonly authorize?: Authorizer
  /** The MCP backend's `backendTLS` and its config path: TLS settings for its HTTP targets (and TLS even for `http://` ones, as on host backends). */
  readonly backendTls?: { readonly config: BackendTls.Config; readonly path: string }
  /**
   * The backend's own `backendAuth` when it must run per target (`BackendAuth.perMcpTarget`: aws,
   * an audience-less gcp ID token): HTTP targets without a `backendAuth` of their own get it.
   */
  readonly targetAuth?: { readonly config: BackendAuth.Config; readonly path: string }
  /** Replaces the in-memory session store. */
  readonly store?: SessionStore
  /** Replaces the session cap (default MAX_SESSIONS, MAX_STDIO_SESSIONS with a stdio target). */
  readonly maxSessions?: number
}

/** The sealing key: the configured one, else the process's (made, and warned about, on first use only). */
const keyFor = (settings: McpSettings): Effect.Effect<Buffer, ConfigError> => {
  if (settings.sessionKey !== undefined) {
    const key = SessionSealer.parseKey(settings.sessionKey)
    if (typeof key === "string") return Effect.fail(new ConfigError({ issues: [{ path: "config.session.key", message: key }] }))
    return Effect.succeed(key)
  }
  if (processKey !== undefined) return Effect.succeed(processKey)
  const key = SessionSealer.randomKey()
  processKey = key
  return Effect.as(
    Effect.logWarning("no session key (config.session.key or SESSION_KEY): MCP session ids are sealed with a random per-process key and cannot be resumed by other replicas"),
    key
  )
}

/** Without a BuildEnv (direct callers, tests), per-target policies cannot reference other backends. */
const noBackends = (_spec: unknown, path: string) => Effect.fail(new ConfigError({ issues: [{ path, message: "no backends can be referenced here" }] }))

export const build = (name: string, ir: Ir.McpBackend, options: BuildOptions): Effect.Effect<Handler, ConfigError, Scope.Scope | UpstreamPools> =>
  Effect.gen(function*() {
    const key = yield* keyFor(options.settings)
    const sealer = SessionSealer.make(key)
    /**
     * An HTTP target's TLS: its own `backendTLS`, else the backend's, else (https) verification
     * against the system roots and the target's name.
     */
    const targetTls = (target: Ir.McpTarget, transport: { readonly target: Ir.HostTarget; readonly tls: boolean }): Effect.Effect<UpstreamTls | undefined, ConfigError> => {
      const own = target.policies?.backendTLS
      if (own !== undefined && own !== null) return BackendTls.load(own, transport.target, `${target.path}.policies.backendTLS`)
      if (options.backendTls !== undefined) return BackendTls.load(options.backendTls.config, transport.target, options.backendTls.path)
      return transport.tls ? BackendTls.load({}, transport.target, "backendTLS") : Effect.succeed(undefined)
    }
    const env: BuildEnv = options.env ?? { maxBufferSize: options.maxBodyBytes, backendCall: noBackends, resolveBackend: noBackends }
    const connects: Array<{ target: string; connect: Connect }> = []
    for (const target of ir.targets) {
      const transport = target.transport
      let connect: Connect
      let host: string | undefined
      switch (transport._tag) {
        case "Stdio":
          connect = Stdio.connect(target.name, transport)
          break
        case "StreamableHttp": {
          const tls = yield* targetTls(target, transport)
          host = httpOrigin(transport.target, tls !== undefined).host
          connect = yield* HttpUpstream.connector(target.name, transport, options.settings, tls)
          break
        }
        case "OpenApi": {
          const spec = yield* OpenApi.load(transport.schema, `${target.path}.openapi`)
          const tls = yield* targetTls(target, transport)
          host = httpOrigin(transport.target, tls !== undefined).host
          connect = yield* OpenApiUpstream.connector(target.name, transport, spec, options.settings, tls)
          break
        }
        case "Sse": {
          const tls = yield* targetTls(target, transport)
          host = httpOrigin(transport.target, tls !== undefined).host
          connect = yield* SseUpstream.connector(target.name, transport, options.settings, tls)
          break
        }
      }
      // Traced outermost: the span's context goes through the target's own policies like any header.
      // The backend's per-target backendAuth, for HTTP targets (a target's own one wins in `editor`).
      const edit = yield* TargetPolicies.editor(target, host, env, transport._tag === "Stdio" ? undefined : options.targetAuth)
      connects.push({ target: target.name, connect: Traced.connect(TargetPolicies.connectWith(connect, edit)) })
    }
    if (options.targetAuth !== undefined && ir.targets.every((t) => t.transport._tag === "Stdio")) {
      return yield* Effect.fail(new ConfigError({ issues: [{ path: options.targetAuth.path, message: "this backendAuth signs HTTP requests, and every target of this MCP backend is stdio" }] }))
    }
    const authorize = yield* TargetPolicies.authorizer(options.authorize ?? allowAll, ir.targets)
    const store = options.store ?? memoryStore()
    const scope = yield* Effect.scope
    // Parent of every session's scope. The retiring step below is added after it, so it runs
    // first when the snapshot closes (finalizers run in reverse), while the sessions are open.
    const sessionsScope = yield* Scope.fork(scope, "parallel")
    const live = new Set<Session>()
    const handover = yield* Handover.CurrentHandover
    const self = Handover.lineage(scope, key, ir)
    handover.enter(name, self)
    const drainMs = options.settings.terminationDeadlineMs ?? RETIRE_DRAIN_MS
    const retire = Effect.gen(function*() {
      const heir = handover.leave(name, self)
      const sessions = [...live]
      // Only sealed, resumable sessions this backend holds can be resumed from their ids.
      const handed = new Set(heir ? sessions.filter((s) => s.state.resumable && store.get(s.id) === s) : [])
      const ending = sessions.filter((s) => !handed.has(s))
      for (const s of ending) if (s.state.resumable) revocations.revoke(s.state, SessionSealer.MAX_RESUME_AGE_MS)
      yield* Effect.forEach(handed, (s) => s.release(), { concurrency: "unbounded", discard: true })
      // Calls in flight on the others finish on this snapshot (its stdio children, its SSE streams) before they end.
      yield* Effect.timeoutOption(Effect.forEach(ending, (s) => s.idle(), { concurrency: "unbounded", discard: true }), drainMs)
      yield* Effect.forEach(ending, (s) => s.close(), { concurrency: "unbounded", discard: true })
    })
    yield* Scope.addFinalizer(scope, retire)
    const fanout: Fanout.Options = { failOpen: ir.failureMode === "failOpen", stateful: ir.stateful, authorize }
    const ttl = options.settings.mcpSessionTtlMs
    if (ir.stateful) {
      const reap = Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        for (const session of [...store.values()]) {
          if (session.closed || (now - session.lastActive > ttl && !session.listening)) {
            store.delete(session.id)
            revocations.revoke(session.state, SessionSealer.MAX_RESUME_AGE_MS)
            yield* session.close()
          }
        }
        revocations.purge(now)
      })
      yield* Effect.forkIn(Effect.repeat(reap, Schedule.spaced(Math.max(1, Math.min(ttl, REAP_INTERVAL_MS)))), scope)
    }
    const backend: StreamableHttp.Backend = {
      key: name,
      ir,
      connects,
      store,
      slots: new SessionSlots(options.maxSessions ?? (ir.targets.some((t) => t.transport._tag === "Stdio") ? MAX_STDIO_SESSIONS : MAX_SESSIONS)),
      live,
      revocations,
      sealer,
      options: fanout,
      scope: sessionsScope,
      maxBodyBytes: options.maxBodyBytes
    }
    const streamable = StreamableHttp.handler(backend)
    const legacy = Sse.handler(backend)
    // Origin/Host checks come first, for both frontends (reference §2.1).
    return Effect.flatMap(currentRequest, (ctx) => {
      const denied = Origin.check(ctx, ir.dnsRebindingProtection)
      if (denied !== undefined) {
        ctx.backend = name
        return Effect.succeed(denied)
      }
      return ctx.path === Sse.SSE_PATH ? legacy : streamable
    })
  })
