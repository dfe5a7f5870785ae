/**
 * A cluster worker: the single-process gateway (Gateway.layer) serving the data plane, with its
 * config coming from the primary instead of a file and no ops ports of its own (the primary
 * forks it with `ADMIN_ADDR`, `STATS_ADDR` and `READINESS_ADDR` set to `off`).
 *
 * It waits for the primary's first `Config`, starts on it and answers `Loaded`; later `Config`
 * messages are applied one at a time, in order, each answered with `Loaded`. `Collect` returns
 * the metric registry, `SetLogLevel` changes the level, and `Drain` (or SIGTERM/SIGINT) closes
 * the listeners and waits for in-flight requests up to the drain deadline before exiting 0.
 * When the primary dies, Node's cluster module exits the worker at once.
 *
 * @since 0.1.0
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import { Gateway } from "../Gateway.ts"
import { releaseStartupMemory } from "../shared/StartupMemory.ts"
import * as AtomicLines from "./AtomicLines.ts"
import * as MetricsMerge from "./MetricsMerge.ts"
import * as Protocol from "./Protocol.ts"

const send = (message: Protocol.ToPrimary): Promise<void> =>
  new Promise((resolve) => {
    if (process.send === undefined || !process.connected) return resolve()
    process.send(message, undefined, {}, () => resolve())
  })

const describe = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return error instanceof Error && "_tag" in error && error._tag === "ConfigError" ? error.message : Cause.pretty(cause)
}

export const run = (): void => {
  // Messages that arrive before the gateway is up wait here, in order.
  const early: Array<Protocol.ToWorker> = []
  let handle: ((message: Protocol.ToWorker) => void) | undefined
  let drainRequested: () => void = () => undefined
  let drain = false
  const drained = new Promise<void>((resolve) => {
    drainRequested = resolve
  })
  let start: ((config: typeof Protocol.Config.Type) => void) | undefined

  process.on("message", (raw: unknown) => {
    const decoded = Protocol.decodeToWorker(raw)
    if (Option.isNone(decoded)) return
    const message = decoded.value
    if (message._tag === "Drain") {
      drain = true
      return drainRequested()
    }
    if (handle !== undefined) return handle(message)
    if (message._tag === "Config" && start !== undefined) {
      const begin = start
      start = undefined
      return begin(message)
    }
    if (message._tag === "Collect") {
      void send({ _tag: "Series", seq: message.seq, series: [] })
      return
    }
    early.push(message)
  })

  start = (first) => {
    if (drain) return process.exit(0)
    const program = Effect.gen(function*() {
      const gateway = yield* Gateway
      const context = yield* Effect.context<never>()
      releaseStartupMemory()
      yield* Effect.promise(() => send({ _tag: "Loaded", seq: first.seq, error: null }))
      // Loads run one after another so the primary's order is the order applied.
      let queue: Promise<void> = Promise.resolve()
      const apply = (config: typeof Protocol.Config.Type) => {
        queue = queue.then(() =>
          Effect.runPromiseWith(context)(
            gateway.load(config.text).pipe(
              Effect.matchCause({ onFailure: describe, onSuccess: () => null })
            )
          ).then((error) => send({ _tag: "Loaded", seq: config.seq, error }))
        )
      }
      handle = (message) => {
        switch (message._tag) {
          case "Config":
            return apply(message)
          case "Collect":
            void send({ _tag: "Series", seq: message.seq, series: MetricsMerge.toWire(Metric.snapshotUnsafe(context)) })
            return
          case "SetLogLevel":
            return gateway.setLogLevel(message.level)
          case "Drain":
            return drainRequested()
        }
      }
      for (const message of early.splice(0)) handle(message)
      yield* Effect.raceFirst(gateway.awaitShutdown, Effect.promise(() => drained))
    })
    NodeRuntime.runMain(
      program.pipe(
        Effect.provide(Gateway.layer({ source: { _tag: "Inline", text: first.text, name: first.name }, accessLogSink: AtomicLines.stdoutSink })),
        // Only a failed start is answered here; later failures are answered per load.
        Effect.tapCause((cause) =>
          handle !== undefined
            ? Effect.void
            : Effect.promise(() => send({ _tag: "Loaded", seq: first.seq, error: describe(cause) }))
        )
      ),
      {
        disableErrorReporting: true,
        // The IPC channel keeps the process alive: exit explicitly, 0 after a drain. A failed
        // start exits 1 quietly (the primary reports and logs it).
        teardown: (exit) => process.exit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
      }
    )
  }
}
