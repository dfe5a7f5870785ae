/**
 * Wiring: config → IR → compiled snapshot → listeners, plus the ops servers, the access log,
 * metrics, hot reload and graceful drain.
 *
 * A reload builds the next snapshot completely (decode, normalise, compile, open any new
 * ports) before it swaps one reference; if any step fails the running snapshot keeps serving
 * untouched, the error is logged and `agentgateway_config_reloads_total{result="failure"}`
 * counts it. In-flight requests finish on the snapshot they started with, because each holds
 * its compiled handler. MCP sessions the next snapshot can resume are handed over to it
 * (mcp/Handover.ts).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as crypto from "node:crypto"
import { UpstreamPools } from "./backends/Pools.ts"
import * as Ops from "./admin/Ops.ts"
import { ConfigError } from "./config/ConfigError.ts"
import * as Env from "./config/Env.ts"
import * as Load from "./config/Load.ts"
import * as Normalize from "./config/Normalize.ts"
import * as Watch from "./config/Watch.ts"
import type * as Ir from "./ir/Ir.ts"
import type { LocalConfig } from "./config/LocalConfig.ts"
import { DEFAULT_IDLE_TIMEOUT_MS } from "./listeners/BodyWatch.ts"
import { DEFAULT_SEND_TIMEOUT_MS } from "./listeners/SendWatch.ts"
import { ListenerSet } from "./listeners/Listeners.ts"
import * as Handover from "./mcp/Handover.ts"
import { AccessLog } from "./observability/AccessLog.ts"
import * as LogLevel from "./observability/LogLevel.ts"
import { RequestMetrics } from "./observability/Metrics.ts"
import * as Telemetry from "./observability/Telemetry.ts"
import * as Tracing from "./observability/Tracing.ts"
import * as Snapshot from "./state/Snapshot.ts"
import { VERSION } from "./Version.ts"

export type ConfigSource =
  | { readonly _tag: "File"; readonly path: string; readonly watch: boolean }
  | {
    readonly _tag: "Inline"
    readonly text: string
    /** What errors call the source (a cluster worker names the primary's file). Default: `<inline>`. */
    readonly name?: string
  }
  | { readonly _tag: "Stdin" }

export interface Options {
  readonly source: ConfigSource
  /** Environment for `$VAR` expansion and address overrides. Default: `process.env`. */
  readonly env?: Env.Lookup
  /** Where access-log lines go. Default: stdout. */
  readonly accessLogSink?: { write(line: string): void }
}

/** A normalised config and the source it came from (to locate later errors in it). */
export interface LoadedIr {
  readonly ir: Ir.Snapshot
  readonly source: Load.Source
  /** The decoded file, for the admin API's `/api/config`. */
  readonly config: LocalConfig
  /** sha256 of the config text (first 12 hex digits): the admin API's config version. */
  readonly version: string
}

/** Reads, decodes and normalises a config text; errors carry file:line:column. */
export const loadIr = (text: string, file: string, env: Env.Lookup): Effect.Effect<LoadedIr, ConfigError> =>
  Effect.flatMap(Load.parse(text, file, env), (loaded) =>
    Normalize.normalize(loaded.config, env).pipe(
      Effect.map((ir) => ({ ir, source: loaded.source, config: loaded.config, version: crypto.createHash("sha256").update(text).digest("hex").slice(0, 12) })),
      Effect.mapError((e) => Load.locateIssues(loaded.source, e))
    )
  )

const sourceName = (source: ConfigSource) => (source._tag === "File" ? source.path : source._tag === "Stdin" ? "-" : source.name ?? "<inline>")

const readSource = (source: ConfigSource): Effect.Effect<string, ConfigError> =>
  source._tag === "Inline" ? Effect.succeed(source.text) : Load.readText(source._tag === "File" ? source.path : "-")

/** Validates a config completely (decode, normalise, compile) without opening any port. */
export const validate = (source: ConfigSource, env: Env.Lookup = Env.processLookup): Effect.Effect<Ir.Snapshot, ConfigError> =>
  Effect.gen(function*() {
    const text = yield* readSource(source)
    const file = sourceName(source)
    const { ir, source: located } = yield* loadIr(text, file, env)
    yield* Effect.scoped(Snapshot.build(ir)).pipe(
      Effect.provide(UpstreamPools.layer),
      Effect.mapError((e) => Load.locateIssues(located, e))
    )
    return ir
  })

export interface Ports {
  /** Data-plane ports that are listening, by configured port (equal unless 0 was configured). */
  readonly data: ReadonlyMap<number, number>
  readonly admin: number | undefined
  readonly stats: number | undefined
  readonly readiness: number | undefined
}

export class Gateway extends Context.Service<Gateway, {
  readonly current: () => Ir.Snapshot | undefined
  /** Re-reads the source and applies it; fails (and keeps serving the old snapshot) on any error. */
  readonly reload: Effect.Effect<void, ConfigError>
  /** Applies this config text as a reload does (a cluster worker gets its configs from the primary). */
  readonly load: (text: string) => Effect.Effect<void, ConfigError>
  /** Changes the log level as the admin `POST /logging` does (the primary's admin API, for its workers). */
  readonly setLogLevel: (level: LogLevel.Level) => void
  readonly ports: () => Ports
  /** Completes when a graceful shutdown was asked for (admin `POST /quitquitquit`). */
  readonly awaitShutdown: Effect.Effect<void>
}>()("agw/Gateway") {
  static readonly layer = (options: Options) =>
    Layer.effect(
      Gateway,
      LogLevel.withControl((logControl) => Effect.gen(function*() {
        const env = options.env ?? Env.processLookup
        const context = yield* Effect.context<never>()
        const metrics = new RequestMetrics(context)
        metrics.buildInfo(VERSION)
        const file = sourceName(options.source)
        const text = yield* readSource(options.source)
        const first = yield* loadIr(text, file, env)
        const firstIr = first.ir
        const configured = LogLevel.parse(firstIr.settings.logLevel)
        if ("level" in configured && configured.level !== undefined) logControl.level = logControl.configured = configured.level

        let current: {
          readonly compiled: Snapshot.Compiled
          readonly scope: Scope.Closeable
          readonly tracer: Tracing.Tracer | undefined
          readonly loaded: LoadedIr
        } | undefined
        let accessLog = new AccessLog(firstIr.settings.logFormat, firstIr.settings.accessLogRemove, options.accessLogSink, logControl)
        const listeners = new ListenerSet({
          current: () => current?.compiled,
          maxHeaders: () => current?.compiled.ir.settings.http1MaxHeaders ?? 100,
          bodyIdleTimeoutMs: () => current?.compiled.ir.settings.requestBodyIdleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
          sendTimeoutMs: () => current?.compiled.ir.settings.responseSendTimeoutMs ?? DEFAULT_SEND_TIMEOUT_MS,
          accessLog: () => accessLog,
          metrics,
          context,
          tracer: () => current?.tracer,
          telemetry: () => current?.compiled.telemetry ?? Telemetry.none
        })
        const pools = yield* Effect.service(UpstreamPools)
        pools.observeConnect((transport, seconds) => metrics.upstreamConnect(transport, seconds))
        const lock = yield* Semaphore.make(1)
        // One per gateway: an MCP backend's next build resumes the sessions the last one hands over.
        const handover = new Handover.Handover()
        const shutdown = yield* Deferred.make<void>()

        // What the admin API reports about loads: generation, version and the last error.
        const history = new Ops.ReloadHistory()
        const reloadStatus = (): Ops.ReloadStatus => history.status(current?.loaded.version)
        const recordLoad = (error: ConfigError | undefined) => metrics.configLoad(error === undefined, history.record(error?.message))

        const apply = (loaded: LoadedIr) => {
          const { ir, source } = loaded
          return lock.withPermits(1)(
            Effect.gen(function*() {
              const scope = yield* Scope.make()
              const built = yield* Snapshot.build(ir).pipe(
                Scope.provide(scope),
                Effect.provideService(UpstreamPools, pools),
                Effect.provideService(Handover.CurrentHandover, handover),
                Effect.onError(() => Scope.close(scope, Exit.void)),
                Effect.mapError((e) => Load.locateIssues(source, e))
              )
              const prepared = yield* listeners.prepare(built).pipe(Effect.onError(() => Scope.close(scope, Exit.void)))
              // The exporter lives with the snapshot: a reload flushes the old one when its scope closes.
              const tracing = ir.settings.tracing
              const tracer = tracing === undefined ? undefined : yield* Tracing.make(tracing, context, built.telemetry.span).pipe(Scope.provide(scope))
              const previous = current
              current = { compiled: built, scope, tracer, loaded }
              metrics.setCustomLabels(built.telemetry.metricLabels.map((f) => f.name))
              accessLog = new AccessLog(ir.settings.logFormat, built.telemetry.removed, options.accessLogSink, logControl)
              yield* Effect.promise(() => prepared.commit(ir.settings.terminationDeadlineMs))
              if (previous !== undefined) yield* Scope.close(previous.scope, Exit.void)
            })
          )
        }

        yield* apply(first)
        recordLoad(undefined)

        const loadText = (next: string) => Effect.flatMap(loadIr(next, file, env), apply)
        const reload = Effect.flatMap(readSource(options.source), loadText).pipe(
          Effect.tap(() => Effect.sync(() => recordLoad(undefined))),
          Effect.tap(() => Effect.logInfo(`config reloaded from ${file}`)),
          Effect.tapError((e) =>
            Effect.sync(() => recordLoad(e)).pipe(
              Effect.andThen(Effect.logError(`config reload failed; the previous config keeps serving:\n${e.message}`))
            )
          )
        )

        const settings = firstIr.settings
        const ready = () => current !== undefined && !draining
        let draining = false
        const requestShutdown = () => {
          // Readiness fails at once, so load balancers stop sending before the listeners close.
          draining = true
          Deferred.doneUnsafe(shutdown, Exit.void)
        }
        const admin = yield* Ops.serve("adminAddr", settings.adminAddr, {
          "/config_dump": Ops.configDump(() => current?.compiled.ir, reloadStatus, VERSION),
          "/api/config": Ops.apiConfig(() => current?.loaded.config, reloadStatus),
          "/api/cel": Ops.cel,
          "/cel": Ops.cel,
          "/logging": Ops.logging(logControl, (level) => Effect.runFork(Effect.logInfo(`log level set to ${level}`).pipe(Effect.provideContext(context)))),
          "/quitquitquit": Ops.quit(requestShutdown),
          "/healthz/ready": Ops.readiness(ready),
          "/memory": Ops.memory
        }, { requireLoopback: true })
        const removedMetrics = () => current?.compiled.telemetry.removedMetrics ?? Telemetry.none.removedMetrics
        const stats = yield* Ops.serve("statsAddr", settings.statsAddr, {
          "/metrics": Ops.metrics(context, removedMetrics),
          "/stats/prometheus": Ops.metrics(context, removedMetrics)
        })
        const readiness = yield* Ops.serve("readinessAddr", settings.readinessAddr, { "/healthz/ready": Ops.readiness(ready) })

        // Drain on shutdown: stop accepting, let in-flight requests finish up to the deadline.
        yield* Effect.addFinalizer(() =>
          Effect.gen(function*() {
            draining = true
            const s = current?.compiled.ir.settings ?? settings
            yield* Effect.logInfo(`draining: waiting up to ${s.terminationDeadlineMs}ms for in-flight requests`)
            if (s.terminationMinDeadlineMs > 0) yield* Effect.sleep(s.terminationMinDeadlineMs)
            yield* Effect.promise(() => listeners.closeAll(s.terminationDeadlineMs))
            accessLog.drain()
            if (current !== undefined) yield* Scope.close(current.scope, Exit.void)
          })
        )

        if (options.source._tag === "File" && options.source.watch) {
          yield* Watch.watch(options.source.path, Effect.ignore(reload))
        }

        yield* Effect.logInfo(
          `effect-agentgateway ${VERSION} serving ${[...listeners.servers.keys()].map((p) => `:${p}`).join(", ") || "no ports"} (config ${file})`
        )

        return Gateway.of({
          current: () => current?.compiled.ir,
          reload,
          load: (next) =>
            loadText(next).pipe(
              Effect.tap(() => Effect.sync(() => recordLoad(undefined))),
              Effect.tapError((e) => Effect.sync(() => recordLoad(e)))
            ),
          setLogLevel: (level) => {
            logControl.level = level
          },
          awaitShutdown: Deferred.await(shutdown),
          ports: () => ({
            data: new Map(
              [...listeners.servers].map(([configured, s]) => {
                const address = s.server.address()
                return [configured, typeof address === "object" && address !== null ? address.port : configured] as const
              })
            ),
            admin,
            stats,
            readiness
          })
        })
      }))
    ).pipe(Layer.provide(UpstreamPools.layer))
}
