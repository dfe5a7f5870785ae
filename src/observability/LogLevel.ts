/**
 * The process log level, changeable at runtime (admin `POST /logging?level=debug`), as
 * upstream's `config.logging.level`: `off`, `error`, `warn`, `info`, `debug` or `trace`. The
 * gateway's Effect loggers are wrapped so every log call checks the current level; request
 * events (the access log) are written at `info`, so `warn` and above silence them too.
 *
 * Upstream also takes per-module clauses (`info,agent_core=trace`); they are accepted and
 * validated, and only the bare level applies here (the gateway has one log scope).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import type * as LogLevelModule from "effect/LogLevel"
import * as References from "effect/References"
import type { LevelGate } from "./AccessLog.ts"

export const LEVELS = ["off", "error", "warn", "info", "debug", "trace"] as const
export type Level = (typeof LEVELS)[number]

const rank: Record<Level, number> = { off: 0, error: 1, warn: 2, info: 3, debug: 4, trace: 5 }

const effectRank: Record<LogLevelModule.LogLevel, number> = { None: 0, Fatal: 1, Error: 1, Warn: 2, Info: 3, Debug: 4, Trace: 5, All: 5 }

const isLevel = (s: string): s is Level => (LEVELS as ReadonlyArray<string>).includes(s)

const MODULE_CLAUSE = /^[A-Za-z_][A-Za-z0-9_:]*=(off|error|warn|info|debug|trace)$/

/** Parses a level spec (`debug`, `info,foo=trace`); the bare level, or the error upstream gives. */
export const parse = (spec: string): { readonly level: Level | undefined } | { readonly error: string } => {
  let level: Level | undefined
  for (const raw of spec.split(",")) {
    const clause = raw.trim().toLowerCase()
    if (clause === "") continue
    if (isLevel(clause)) level = clause
    else if (!MODULE_CLAUSE.test(clause)) return { error: `level ${raw.trim()} is invalid` }
  }
  return { level }
}

export class Control implements LevelGate {
  level: Level
  /** What the config asked for; `reset` returns to it. */
  configured: Level

  constructor(level: Level = "info") {
    this.level = level
    this.configured = level
  }

  get requestLogs(): boolean {
    return rank[this.level] >= rank.info
  }

  enabled(level: LogLevelModule.LogLevel): boolean {
    return effectRank[level] <= rank[this.level] && level !== "None"
  }
}

/**
 * Runs `f` with the current loggers wrapped by `control` (and the Effect minimum level opened, so
 * `debug` reaches them when asked for).
 */
export const withControl = <A, E, R>(f: (control: Control) => Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.gen(function*() {
    const control = new Control()
    const current = yield* Effect.service(Logger.CurrentLoggers)
    const wrapped = new Set<Logger.Logger<unknown, unknown>>()
    for (const logger of current) {
      wrapped.add(Logger.make((options) => (control.enabled(options.logLevel) ? logger.log(options) : undefined)))
    }
    return yield* f(control).pipe(
      Effect.provideService(Logger.CurrentLoggers, wrapped),
      Effect.provideService(References.MinimumLogLevel, "All")
    )
  })
