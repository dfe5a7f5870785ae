/**
 * The `agentgateway` command (started by main.ts), the only impure edge: parse flags, then run
 * the gateway until SIGTERM/SIGINT (graceful drain, exit 0) or validate a config and exit.
 * Evaluating this module runs the command.
 *
 *   agentgateway -f config.yaml           serve, hot-reloading the file on change
 *   agentgateway -f -                     read the config from stdin once
 *   agentgateway -c '<yaml or json>'      serve an inline config
 *   agentgateway --validate-only -f FILE  check a config: exit 0, or list every error and exit 1
 *   agentgateway --version | -V
 *
 * @since 0.1.0
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as os from "node:os"
import { parseArgs } from "node:util"
import * as WorkerCount from "./cluster/WorkerCount.ts"
import { ConfigError, formatIssue } from "./config/ConfigError.ts"
import * as Env from "./config/Env.ts"
import * as Load from "./config/Load.ts"
import { type ConfigSource, Gateway, loadIr, validate } from "./Gateway.ts"
import { releaseStartupMemory } from "./shared/StartupMemory.ts"
import { VERSION } from "./Version.ts"

const usage = `usage: agentgateway (-f FILE | -f - | -c CONFIG) [--validate-only]
       agentgateway --version

  -f, --file FILE      config file (YAML or JSON); watched and hot-reloaded. "-" reads stdin once
  -c, --config TEXT    inline config (YAML or JSON), static
      --validate-only  check the config and exit: 0 when valid, 1 with every error listed
  -V, --version        print the version

  WORKER_THREADS=N|auto  serve with N worker processes (default: config.workerThreads, else 1)
`

const fail = (message: string, code = 2): never => {
  process.stderr.write(`${message}\n`)
  process.exit(code)
}

const parsed = (() => {
  try {
    return parseArgs({
      options: {
        file: { type: "string", short: "f" },
        config: { type: "string", short: "c" },
        "validate-only": { type: "boolean" },
        version: { type: "boolean" },
        V: { type: "boolean", short: "V" },
        help: { type: "boolean", short: "h" }
      },
      strict: true
    }).values
  } catch (error) {
    return fail(`${error instanceof Error ? error.message : String(error)}\n\n${usage}`)
  }
})()

if (parsed.help === true) {
  process.stdout.write(usage)
  process.exit(0)
}
if (parsed.version === true) {
  process.stdout.write(`${JSON.stringify({ name: "effect-agentgateway", version: VERSION, node: process.version })}\n`)
  process.exit(0)
}
if (parsed.V === true) {
  process.stdout.write(`agentgateway ${VERSION} (effect-agentgateway)\n`)
  process.exit(0)
}
if (parsed.file !== undefined && parsed.config !== undefined) fail("only one of -f/--file and -c/--config may be given")

const source: ConfigSource = parsed.config !== undefined
  ? { _tag: "Inline", text: parsed.config }
  : parsed.file === "-"
  ? { _tag: "Stdin" }
  : parsed.file !== undefined
  ? { _tag: "File", path: parsed.file, watch: true }
  : fail(`no config given\n\n${usage}`)

/** Config errors are the user's to fix: print them plainly, never as a stack trace. */
const reportFailure = (cause: Cause.Cause<unknown>): number => {
  const error = Cause.squash(cause)
  if (error !== null && typeof error === "object" && "_tag" in error && error._tag === "ConfigError" && "issues" in error) {
    const issues = error.issues as ReadonlyArray<Parameters<typeof formatIssue>[0]>
    process.stderr.write(`invalid config (${issues.length} error${issues.length === 1 ? "" : "s"}):\n`)
    for (const issue of issues) process.stderr.write(`  ${formatIssue(issue)}\n`)
  } else {
    process.stderr.write(`${Cause.pretty(cause)}\n`)
  }
  return 1
}

if (parsed["validate-only"] === true) {
  const exit = await Effect.runPromiseExit(validate(source))
  if (Exit.isSuccess(exit)) {
    const routes = exit.value.binds.reduce((n, b) => n + b.listeners.reduce((m, l) => m + l.routes.length, 0), 0)
    process.stdout.write(`config is valid: ${exit.value.binds.length} bind(s), ${routes} route(s)\n`)
    process.exit(0)
  }
  process.exit(reportFailure(exit.cause))
}

/**
 * How many processes serve: `WORKER_THREADS` alone decides when set; otherwise the config's
 * `workerThreads`, so the config is decoded once here (and again by whoever serves it). Stdin
 * can be read only once: its text is handed on as an inline config named `-`.
 */
const plan = await Effect.runPromiseExit(Effect.gen(function*() {
  const fromEnv = process.env["WORKER_THREADS"]
  if (fromEnv !== undefined && fromEnv.trim() !== "" && source._tag !== "Stdin") {
    const resolved = WorkerCount.resolve(undefined, Env.processLookup, os.availableParallelism())
    if ("message" in resolved) return yield* Effect.fail(new ConfigError({ issues: [{ path: resolved.path, message: resolved.message }] }))
    if (resolved.count === 1) return { workers: 1, text: undefined }
  }
  const name = source._tag === "File" ? source.path : source._tag === "Stdin" ? "-" : "<inline>"
  const text = source._tag === "Inline" ? source.text : yield* Load.readText(source._tag === "File" ? source.path : "-")
  const loaded = yield* loadIr(text, name, Env.processLookup)
  return { workers: loaded.ir.settings.workerThreads, text, name }
}))
if (Exit.isFailure(plan)) process.exit(reportFailure(plan.cause))

const teardown = (exit: Exit.Exit<unknown, unknown>, onExit: (code: number) => void) => {
  if (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)) return onExit(0)
  onExit(reportFailure(exit.cause))
}

if (plan.value.workers > 1 && plan.value.text !== undefined) {
  // A primary supervising worker processes; it serves no traffic itself. Imported here only, so
  // the single-process gateway never evaluates the cluster code.
  const Primary = await import("./cluster/Primary.ts")
  const primary = Primary.run({
    text: plan.value.text,
    name: "name" in plan.value ? plan.value.name : "<inline>",
    watch: source._tag === "File" && source.watch ? source.path : undefined,
    workers: plan.value.workers,
    env: Env.processLookup
  })
  // Exits explicitly: after a `POST /quitquitquit` no signal makes runMain do it, and cluster state may hold the loop.
  NodeRuntime.runMain(Effect.scoped(primary), { disableErrorReporting: true, teardown: (exit) => teardown(exit, (code) => process.exit(code)) })
} else {
  /** Serves until SIGTERM/SIGINT or the admin `POST /quitquitquit`; either way the layer's finalizer drains. */
  const serve = Effect.andThen(Effect.sync(releaseStartupMemory), Effect.flatMap(Effect.service(Gateway), (gateway) => gateway.awaitShutdown))
  const single: ConfigSource = source._tag === "Stdin" && plan.value.text !== undefined ? { _tag: "Inline", text: plan.value.text, name: "-" } : source
  NodeRuntime.runMain(serve.pipe(Effect.provide(Gateway.layer({ source: single }))), { disableErrorReporting: true, teardown })
}
