/**
 * glibc's malloc arenas, capped for a serving gateway (`main.ts`, before anything else loads).
 *
 * - glibc gives each thread that contends for the allocator an arena of its own, up to 8 per core,
 *   and keeps what an arena grew to. In a gateway the threads are V8's helpers (concurrent
 *   marking, compilation, sweeping) and libuv's pool; under `npm run bench:http` their arenas held
 *   40–60 MiB at the end of the load, the difference between a peak of 120–140 and 170–190 MiB.
 * - The cap is `MALLOC_ARENA_MAX`, read by glibc when the process starts, so it cannot be set from
 *   JavaScript in a running process: {@link limitMallocArenas} replaces the process with itself
 *   (`process.execve`: the same pid, arguments, flags, stdio) with `MALLOC_ARENA_MAX` set.
 * - It does nothing when the operator set `MALLOC_ARENA_MAX` (any value: set it to keep another
 *   cap, or 8 × cores for glibc's default), off Linux, without `process.execve`, in a cluster
 *   worker (it inherits the primary's environment) and under an inspector flag (a debugger
 *   attached to the first process would lose it).
 *
 * @since 0.1.0
 */
import { operatorSet } from "./StartupMemory.ts"

/** The arenas a gateway process may use: the main one and one shared by every helper thread. */
export const MALLOC_ARENAS = 2

const INSPECTOR_FLAG = /(?:^|\s)--inspect/

/** The environment and arguments to re-execute with, or undefined when the process is left as it is. */
export const plan = (
  env: NodeJS.ProcessEnv,
  execArgv: ReadonlyArray<string>,
  platform: NodeJS.Platform,
  canExec: boolean
): NodeJS.ProcessEnv | undefined => {
  if (platform !== "linux" || !canExec) return undefined
  if (env["MALLOC_ARENA_MAX"] !== undefined || env["NODE_UNIQUE_ID"] !== undefined) return undefined
  if (operatorSet(INSPECTOR_FLAG, execArgv, env)) return undefined
  return { ...env, MALLOC_ARENA_MAX: String(MALLOC_ARENAS) }
}

/**
 * Re-executes this process with `MALLOC_ARENA_MAX` when {@link plan} says so; returns only when
 * it does not (or when `execve` fails: the process then serves as it is).
 */
export const limitMallocArenas = (): void => {
  const execve = process.execve
  const env = plan(process.env, process.execArgv, process.platform, typeof execve === "function")
  if (env === undefined || execve === undefined) return
  try {
    execve.call(process, process.execPath, [process.execPath, ...process.execArgv, ...process.argv.slice(1)], env)
  } catch {
    // execve(2) failed (the binary moved, a seccomp filter): serve without the cap.
  }
}
