/**
 * The primary process of `workerThreads` > 1: it serves no traffic itself, it supervises N
 * `node:cluster` workers (cluster/Worker.ts) that share the data-plane listen sockets, and it
 * owns everything that must exist once per gateway: the admin, stats and readiness ports, the
 * config file watch, and the drain. The README next to this file explains the choices.
 *
 * - Config: the primary reads the file, validates it completely (decode, normalise, compile;
 *   no port opened), and only then sends the same text to every worker, so all workers serve
 *   one version. A worker that fails to apply it (a port it cannot open) keeps its previous
 *   config and its error is reported per worker in the admin API's reload status.
 * - Restarts: a worker that exits unasked is forked again after a backoff that doubles from
 *   RESTART_BACKOFF_INITIAL_MS up to RESTART_BACKOFF_MAX_MS, reset once a worker has served
 *   RESTART_STABLE_MS; it starts on the current config.
 * - Readiness: 200 once every worker has started, and afterwards while at least one serves
 *   (the others are being restarted); 503 while draining.
 * - Drain: SIGTERM/SIGINT or `POST /quitquitquit` turns readiness to 503 and sends `Drain` to
 *   every worker; each stops accepting and finishes its in-flight requests within the drain
 *   deadline. Workers still running DRAIN_MARGIN_MS after the deadline are killed; the primary
 *   then exits 0.
 * - Metrics: `/metrics` asks every worker for its series (COLLECT_TIMEOUT_MS) and sums them
 *   (cluster/MetricsMerge.ts) with the primary's own (build info, config loads, workers).
 *
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Semaphore from "effect/Semaphore"
import cluster, { type Worker } from "node:cluster"
import * as crypto from "node:crypto"
import type * as http from "node:http"
import * as Ops from "../admin/Ops.ts"
import { UpstreamPools } from "../backends/Pools.ts"
import { ConfigError } from "../config/ConfigError.ts"
import type * as Env from "../config/Env.ts"
import * as Load from "../config/Load.ts"
import * as Watch from "../config/Watch.ts"
import { type LoadedIr, loadIr } from "../Gateway.ts"
import * as LogLevel from "../observability/LogLevel.ts"
import { RequestMetrics } from "../observability/Metrics.ts"
import * as Prometheus from "../observability/Prometheus.ts"
import { releaseStartupMemory } from "../shared/StartupMemory.ts"
import * as Snapshot from "../state/Snapshot.ts"
import { VERSION } from "../Version.ts"
import * as MetricsMerge from "./MetricsMerge.ts"
import * as Protocol from "./Protocol.ts"
import { WORKER_ENV } from "./WorkerEnv.ts"

/** First wait before forking a crashed worker again. */
export const RESTART_BACKOFF_INITIAL_MS = 100
/** The wait doubles per crash up to this. */
export const RESTART_BACKOFF_MAX_MS = 30_000
/** A worker that served this long before crashing restarts after the initial wait again. */
export const RESTART_STABLE_MS = 30_000
/** A worker that has not loaded its first config within this is killed (and restarted). */
export const WORKER_START_TIMEOUT_MS = 60_000
/** A reload answer may take the drain deadline (ports a reload drops are drained); this on top. */
export const RELOAD_REPLY_MARGIN_MS = 10_000
/** A worker that does not send its series within this is left out of the scrape. */
export const COLLECT_TIMEOUT_MS = 2_000
/** Workers still running this long after the drain deadline are killed. */
export const DRAIN_MARGIN_MS = 2_000

/** Families the primary exports itself; the workers' copies would count once per worker. */
export const PRIMARY_FAMILIES: ReadonlySet<string> = new Set([
  "agentgateway_build_info",
  "agentgateway_config_reloads_total",
  "agentgateway_config_synchronized",
  "agentgateway_config_last_reload_success_timestamp_seconds",
  "agentgateway_workers_serving",
  "agentgateway_worker_restarts_total"
])

const workersServing = Metric.gauge("agentgateway_workers_serving", { description: "Worker processes serving the data plane." })
const workerRestarts = Metric.counter("agentgateway_worker_restarts_total", {
  description: "Worker processes forked again after exiting unasked.",
  incremental: true
})

export interface Options {
  /** The config text the process started with, and what errors call its source. */
  readonly text: string
  readonly name: string
  /** The file to watch and re-read on change; undefined for `-c` and stdin (static). */
  readonly watch: string | undefined
  readonly workers: number
  readonly env: Env.Lookup
}

interface Desired {
  readonly seq: number
  readonly text: string
  readonly loaded: LoadedIr
}

type State = Ops.WorkerLoadStatus["state"]

interface Slot {
  readonly id: number
  worker: Worker | undefined
  state: State
  version: string | null
  lastError: { readonly message: string; readonly at: string } | null
  restarts: number
  backoffMs: number
  startedAt: number
  timer: NodeJS.Timeout | undefined
  exited: Promise<void>
  /** Answers awaited from the current worker process, by message seq. */
  readonly waiting: Map<number, (reply: Protocol.ToPrimary | undefined) => void>
}

const errorText = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

/** Runs until SIGTERM/SIGINT (interruption) or `POST /quitquitquit`; the scope's finalizers drain. */
export const run = (options: Options) =>
  LogLevel.withControl((logControl) =>
    Effect.gen(function*() {
      const context = yield* Effect.context<never>()
      const metrics = new RequestMetrics(context)
      metrics.buildInfo(VERSION)

      // Workers must share one session key or an MCP session sealed by one is refused by another.
      const generatedKey = options.env("SESSION_KEY") === undefined ? crypto.randomBytes(32).toString("hex") : undefined
      const env: Env.Lookup = (name) => (name === "SESSION_KEY" && generatedKey !== undefined ? generatedKey : options.env(name))
      const workerEnv: Record<string, string> = {
        [WORKER_ENV]: "1",
        ADMIN_ADDR: "off",
        STATS_ADDR: "off",
        READINESS_ADDR: "off",
        ...(generatedKey === undefined ? {} : { SESSION_KEY: generatedKey })
      }

      /** What `--validate-only` checks: the whole compile, in a scope closed at once. */
      const check = (text: string) =>
        Effect.gen(function*() {
          const loaded = yield* loadIr(text, options.name, env)
          yield* Effect.scoped(Snapshot.build(loaded.ir)).pipe(
            Effect.provide(UpstreamPools.layer),
            Effect.mapError((e) => Load.locateIssues(loaded.source, e))
          )
          return loaded
        })

      let seq = 0
      let desired: Desired = { seq: ++seq, text: options.text, loaded: yield* check(options.text) }
      const configured = LogLevel.parse(desired.loaded.ir.settings.logLevel)
      if ("level" in configured && configured.level !== undefined) logControl.level = logControl.configured = configured.level

      let started = false
      let draining = false
      const shutdown = yield* Deferred.make<void>()
      const log = (effect: Effect.Effect<void>) => Effect.runFork(effect.pipe(Effect.provideContext(context)))

      const slots: Array<Slot> = Array.from({ length: options.workers }, (_, i) => ({
        id: i + 1,
        worker: undefined,
        state: "starting",
        version: null,
        lastError: null,
        restarts: 0,
        backoffMs: RESTART_BACKOFF_INITIAL_MS,
        startedAt: 0,
        timer: undefined,
        exited: Promise.resolve(),
        waiting: new Map()
      }))
      const countServing = () => workersServing.updateUnsafe(slots.filter((s) => s.state === "serving").length, context)

      const post = (slot: Slot, message: Protocol.ToWorker): boolean => {
        const worker = slot.worker
        if (worker === undefined || !worker.isConnected()) return false
        // A worker exiting now closes the channel under the write (EPIPE): with a callback the
        // error comes here instead of as an unhandled 'error' event; its exit is handled anyway.
        worker.send(message, () => undefined)
        return true
      }

      /** Sends a message that is answered (same seq), resolving undefined on timeout or exit. */
      const ask = (slot: Slot, message: Protocol.ToWorker & { readonly seq: number }, timeoutMs: number) =>
        new Promise<Protocol.ToPrimary | undefined>((resolve) => {
          const timer = setTimeout(() => {
            slot.waiting.delete(message.seq)
            resolve(undefined)
          }, timeoutMs)
          slot.waiting.set(message.seq, (reply) => {
            clearTimeout(timer)
            slot.waiting.delete(message.seq)
            resolve(reply)
          })
          if (!post(slot, message)) slot.waiting.get(message.seq)?.(undefined)
        })

      /** Sends a config; resolves null when the worker serves it, else why not. */
      const sendConfig = (slot: Slot, config: Desired, timeoutMs: number): Promise<string | null> =>
        ask(slot, { _tag: "Config", seq: config.seq, name: options.name, text: config.text }, timeoutMs).then((reply) => {
          const at = new Date().toISOString()
          const error = reply === undefined
            ? slot.worker === undefined ? "the worker exited" : `no answer within ${timeoutMs}ms`
            : reply._tag === "Loaded" ? reply.error : "unexpected answer"
          if (error === null) {
            slot.version = config.loaded.version
            slot.lastError = null
            if (slot.state === "starting") slot.state = "serving"
          } else {
            slot.lastError = { message: error, at }
          }
          countServing()
          return error
        })

      const fork = (slot: Slot): Promise<string | null> => {
        slot.timer = undefined
        const worker = cluster.fork(workerEnv)
        slot.worker = worker
        slot.state = "starting"
        slot.startedAt = Date.now()
        slot.exited = new Promise((resolve) => worker.once("exit", () => resolve()))
        worker.on("message", (raw: unknown) => {
          const decoded = Protocol.decodeToPrimary(raw)
          if (Option.isSome(decoded)) slot.waiting.get(decoded.value.seq)?.(decoded.value)
        })
        worker.on("exit", (code, signal) => onExit(slot, worker, code, signal))
        // IPC errors (a channel closing under a write) must not end the primary; the exit follows.
        worker.on("error", () => undefined)
        const first = sendConfig(slot, desired, WORKER_START_TIMEOUT_MS)
        void first.then((error) => {
          // A worker that cannot start is killed; its exit schedules the next attempt.
          if (error !== null && slot.worker === worker) worker.process.kill("SIGKILL")
        })
        return first
      }

      const onExit = (slot: Slot, worker: Worker, code: number | null, signal: string | null) => {
        if (slot.worker !== worker) return
        slot.worker = undefined
        for (const resolve of [...slot.waiting.values()]) resolve(undefined)
        const wasServing = slot.state === "serving"
        if (draining) {
          slot.state = "stopping"
          return countServing()
        }
        slot.state = "restarting"
        countServing()
        if (!started) return
        if (wasServing && Date.now() - slot.startedAt >= RESTART_STABLE_MS) slot.backoffMs = RESTART_BACKOFF_INITIAL_MS
        const delay = slot.backoffMs
        slot.backoffMs = Math.min(slot.backoffMs * 2, RESTART_BACKOFF_MAX_MS)
        slot.restarts++
        workerRestarts.updateUnsafe(1, context)
        log(Effect.logWarning(`worker ${slot.id} (pid ${worker.process.pid}) exited (${signal ?? `code ${code}`}); restarting it in ${delay}ms`))
        slot.timer = setTimeout(() => {
          if (draining) return
          void fork(slot).then((error) => {
            if (error === null) log(Effect.logInfo(`worker ${slot.id} serving again (pid ${slot.worker?.process.pid})`))
            else log(Effect.logError(`worker ${slot.id} failed to start:\n${error}`))
          })
        }, delay)
      }

      // The load history the admin API reports, as the single-process gateway keeps it.
      const history = new Ops.ReloadHistory()
      const recordLoad = (error: string | undefined) => metrics.configLoad(error === undefined, history.record(error))
      const reloadStatus = (): Ops.ReloadStatus =>
        history.status(
          desired.loaded.version,
          slots.map((s) => ({
            id: s.id,
            pid: s.worker?.process.pid ?? null,
            state: s.state,
            version: s.version,
            lastError: s.lastError,
            restarts: s.restarts
          }))
        )

      const perWorker = (failed: ReadonlyArray<readonly [Slot, string]>) =>
        failed.map(([s, e]) => `worker ${s.id}: ${e}`).join("\n")

      /**
       * Drains every worker. Registered before the start (a failed start stops what started) and
       * again after the ops servers, so a shutdown drains while readiness still answers 503.
       */
      const stopWorkers = () =>
        Effect.gen(function*() {
          draining = true
          for (const s of slots) {
            if (s.timer !== undefined) clearTimeout(s.timer)
            s.timer = undefined
            if (s.worker !== undefined) s.state = "stopping"
          }
          const live = slots.filter((s) => s.worker !== undefined)
          if (live.length === 0) return
          const s = desired.loaded.ir.settings
          const deadlineMs = s.terminationMinDeadlineMs + s.terminationDeadlineMs + DRAIN_MARGIN_MS
          yield* Effect.logInfo(`draining ${live.length} workers: waiting up to ${s.terminationDeadlineMs}ms for in-flight requests`)
          for (const slot of live) post(slot, { _tag: "Drain" })
          const all = Promise.all(live.map((slot) => slot.exited))
          const inTime = yield* Effect.promise(() => Promise.race([all.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), deadlineMs).unref())]))
          if (!inTime) {
            for (const slot of live) slot.worker?.process.kill("SIGKILL")
            yield* Effect.logWarning(`workers still running ${deadlineMs}ms after the drain began were killed`)
            yield* Effect.promise(() => all)
          }
        })
      // Start: every worker on the validated config; any that cannot start fails the start.
      yield* Effect.addFinalizer(() => stopWorkers())
      cluster.schedulingPolicy = cluster.SCHED_RR
      // Workers run the file this process was started with (cluster's default `exec`): main.ts,
      // which starts them as workers by WORKER_ENV.
      cluster.setupPrimary({ args: [], serialization: "advanced" })
      const firstErrors = yield* Effect.promise(() => Promise.all(slots.map((s) => fork(s).then((e) => [s, e] as const))))
      const failedStart = firstErrors.flatMap(([s, e]) => (e === null ? [] : [[s, e] as const]))
      if (failedStart.length > 0) {
        return yield* Effect.fail(new ConfigError({ issues: [{ path: "", message: `workers failed to start:\n${perWorker(failedStart)}` }] }))
      }
      started = true
      recordLoad(undefined)

      const lock = yield* Semaphore.make(1)
      const reload = (file: string) =>
        lock.withPermits(1)(Effect.gen(function*() {
          const text = yield* Load.readText(file)
          const loaded = yield* check(text)
          const previous = desired
          const next: Desired = { seq: ++seq, text, loaded }
          // Workers forked from now on start on the new config.
          desired = next
          const live = slots.filter((s) => s.worker !== undefined)
          const timeoutMs = loaded.ir.settings.terminationDeadlineMs + RELOAD_REPLY_MARGIN_MS
          const results = yield* Effect.promise(() => Promise.all(live.map((s) => sendConfig(s, next, timeoutMs).then((e) => [s, e] as const))))
          const failed = results.flatMap(([s, e]) => (e === null ? [] : [[s, e] as const]))
          if (live.length > 0 && failed.length === live.length) desired = previous
          if (failed.length > 0) {
            return yield* Effect.fail(new ConfigError({ issues: [{ path: "", message: `not applied by ${failed.length} of ${live.length} workers:\n${perWorker(failed)}` }] }))
          }
        })).pipe(
          Effect.tap(() => Effect.sync(() => recordLoad(undefined))),
          Effect.tap(() => Effect.logInfo(`config reloaded from ${file} on ${options.workers} workers`)),
          Effect.tapError((e) =>
            Effect.sync(() => recordLoad(e.message)).pipe(
              Effect.andThen(Effect.logError(`config reload failed; the previous config keeps serving:\n${e.message}`))
            )
          )
        )

      /** Every live worker's series, for one scrape. */
      const collect = (): Promise<Array<[Slot, ReadonlyArray<Protocol.WireSeries>]>> =>
        Promise.all(
          slots.filter((s) => s.worker !== undefined).map((s) =>
            ask(s, { _tag: "Collect", seq: ++seq }, COLLECT_TIMEOUT_MS).then((reply): [Slot, ReadonlyArray<Protocol.WireSeries>] => [
              s,
              reply !== undefined && reply._tag === "Series" ? reply.series : []
            ])
          )
        )

      const respond = (res: http.ServerResponse, status: number, type: string, body: string) => {
        res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body) })
        res.end(body)
      }
      const removedMetrics = () => new Set(desired.loaded.ir.settings.metricsRemove ?? [])
      const metricsRoute: Ops.Route = Ops.get((_req, res) => {
        void collect().then(
          (series) => {
            const merged = MetricsMerge.merge(series.map(([, s]) => s), PRIMARY_FAMILIES)
            const body = Prometheus.formatSnapshots([...Metric.snapshotUnsafe(context), ...merged], removedMetrics())
            respond(res, 200, "text/plain; version=0.0.4; charset=utf-8", body)
          },
          (error: unknown) => respond(res, 500, "text/plain", `cannot collect metrics: ${errorText(error)}\n`)
        )
      })
      /** `GET /workers`: each worker's slot, pid, state, config version and requests served. */
      const workersRoute: Ops.Route = Ops.get((_req, res) => {
        void collect().then((series) => {
          const requests = new Map(series.map(([slot, s]) => [
            slot,
            s.reduce((n, x) => (x.id === "agentgateway_requests_total" && x.type === "Counter" ? n + x.count : n), 0)
          ]))
          const body = {
            configured: options.workers,
            workers: slots.map((s) => ({
              id: s.id,
              pid: s.worker?.process.pid ?? null,
              state: s.state,
              version: s.version,
              restarts: s.restarts,
              requests: requests.get(s) ?? null
            }))
          }
          respond(res, 200, "application/json", JSON.stringify(body, null, 2) + "\n")
        })
      })

      const ready = () => started && !draining && slots.some((s) => s.state === "serving")
      const requestShutdown = () => {
        draining = true
        Deferred.doneUnsafe(shutdown, Exit.void)
      }
      const settings = desired.loaded.ir.settings
      yield* Ops.serve("adminAddr", settings.adminAddr, {
        "/config_dump": Ops.configDump(() => desired.loaded.ir, reloadStatus, VERSION),
        "/api/config": Ops.apiConfig(() => desired.loaded.config, reloadStatus),
        "/api/cel": Ops.cel,
        "/cel": Ops.cel,
        "/logging": Ops.logging(logControl, (level) => {
          for (const s of slots) post(s, { _tag: "SetLogLevel", level })
          log(Effect.logInfo(`log level set to ${level} on every worker`))
        }),
        "/quitquitquit": Ops.quit(requestShutdown),
        "/healthz/ready": Ops.readiness(ready),
        "/memory": Ops.memory,
        "/workers": workersRoute
      }, { requireLoopback: true })
      yield* Ops.serve("statsAddr", settings.statsAddr, { "/metrics": metricsRoute, "/stats/prometheus": metricsRoute })
      yield* Ops.serve("readinessAddr", settings.readinessAddr, { "/healthz/ready": Ops.readiness(ready) })

      yield* Effect.addFinalizer(() => stopWorkers())

      if (options.watch !== undefined) {
        const file = options.watch
        yield* Watch.watch(file, Effect.ignore(reload(file)))
      }

      const ports = desired.loaded.ir.binds.map((b) => `:${b.port}`).join(", ")
      yield* Effect.logInfo(
        `effect-agentgateway ${VERSION} serving ${ports || "no ports"} with ${options.workers} workers (config ${options.name})`
      )
      releaseStartupMemory()
      yield* Deferred.await(shutdown)
    })
  )
