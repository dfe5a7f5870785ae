/**
 * How many worker processes serve the data plane: `WORKER_THREADS`, else `config.workerThreads`,
 * else 1. A positive integer (or its decimal string) or `auto` (the cores Node may use,
 * `os.availableParallelism()`). 1 is the single-process gateway with no cluster at all.
 *
 * @since 0.1.0
 */
import type * as Env from "../config/Env.ts"

/** More workers than this is a typo, not a machine: each one is a whole Node process. */
export const MAX_WORKERS = 256

export const DEFAULT_WORKERS = 1

export type Resolved = { readonly count: number } | { readonly path: string; readonly message: string }

const parse = (value: string | number, cores: number): number | undefined => {
  if (typeof value === "number") return Number.isInteger(value) ? value : undefined
  const text = value.trim().toLowerCase()
  if (text === "auto") return Math.max(1, cores)
  return /^\d+$/.test(text) ? Number(text) : undefined
}

export const resolve = (configured: string | number | null | undefined, env: Env.Lookup, cores: number): Resolved => {
  const fromEnv = env("WORKER_THREADS")
  const [raw, path] = fromEnv !== undefined && fromEnv.trim() !== ""
    ? [fromEnv, "WORKER_THREADS"]
    : configured === undefined || configured === null
    ? [undefined, ""]
    : [configured, "config.workerThreads"]
  if (raw === undefined) return { count: DEFAULT_WORKERS }
  const count = parse(raw, cores)
  if (count === undefined || count < 1) {
    return { path, message: `must be a positive integer or "auto", got ${JSON.stringify(raw)}` }
  }
  if (count > MAX_WORKERS) return { path, message: `at most ${MAX_WORKERS} workers, got ${count}` }
  return { count }
}
