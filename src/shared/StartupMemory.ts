/**
 * Memory of a gateway process, set once it serves (Cli.ts, cluster/Worker.ts, cluster/Primary.ts;
 * never on library import).
 *
 * - Start-up (module loading, schema construction, config decoding) grows V8's young generation
 *   to its maximum, and an idle process never gives that back. One memory-reducing collection once
 *   the first config serves returns it (about 18 MiB of resident memory; `npm run bench:http`
 *   reports idle RSS).
 * - Under load Node 24 lets the young generation grow to 2 × 32 MiB, and the request-body chunks
 *   it keeps reachable between scavenges add more: a 64 KiB POST load peaked at 245–283 MiB.
 *   The gateway stops that growth at 2 × {@link YOUNG_SEMI_SPACE_MIB} MiB, what
 *   `node --max-semi-space-size=4` does. With 2 × 8 MiB a 64 KiB POST load peaked at 145–190 MiB
 *   instead of 240–260; 2 × 4 MiB read 130–145 against 155–173 in the same runs, with the same
 *   CPU per small GET and less per 64 KiB POST (the request-body chunks are freed sooner;
 *   README, Operating → Memory).
 * - V8 sizes the young generation from flags read at start-up, so a plain `node dist/main.js`
 *   cannot pass it; what V8 does read at each growth is `--semi-space-growth-factor`, so after
 *   every collection the factor is 1 (no growth) at the limit and V8's default 2 below it.
 * - An operator's own `--max-semi-space-size`, `--min-semi-space-size` or
 *   `--semi-space-growth-factor` (command line or NODE_OPTIONS) wins: then nothing is changed,
 *   and `--semi-space-growth-factor=2` is the uncapped default back.
 * - Scavenges run on the main thread ({@link scavengeOnMainThread}).
 * - The old generation is collected again at 1.3× what the last full collection kept
 *   ({@link limitOldGenerationGrowth}), not at V8's dynamic 1.1–4×.
 *
 * @since 0.1.0
 */
import { PerformanceObserver } from "node:perf_hooks"
import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"

/** Largest semi-space the gateway lets V8's young generation grow to, MiB. */
export const YOUNG_SEMI_SPACE_MIB = 4

const OPERATOR_FLAG = /--(?:max-semi-space-size|min-semi-space-size|semi-space-growth-factor)\b/
/** V8 takes `_` for `-` and `--noflag` for `--no-flag`. */
const OPERATOR_SCAVENGE_FLAG = /--(?:no[-_]?)?parallel[-_]scavenge\b/

/** Whether the operator gave node a flag: on the command line (`execArgv`) or in NODE_OPTIONS. */
export const operatorSet = (flag: RegExp, execArgv: ReadonlyArray<string> = process.execArgv, env: NodeJS.ProcessEnv = process.env): boolean =>
  flag.test(execArgv.join(" ")) || flag.test(env["NODE_OPTIONS"] ?? "")

/** Sets V8 `flag` unless the operator passed one `operatorFlag` matches; returns whether it set it. Idempotent. */
const setUnlessOperatorSet = (operatorFlag: RegExp, flag: string): boolean => {
  if (operatorSet(operatorFlag)) return false
  setFlagsFromString(flag)
  return true
}

const youngGenerationBytes = (): number => {
  for (const space of getHeapSpaceStatistics()) if (space.space_name === "new_space") return space.space_size
  return 0
}

/** What `new_space` may read above its capacity: pages in transit during a scavenge. */
const IN_TRANSIT_SLACK_BYTES = 2 * 1024 * 1024

/**
 * The factor V8 may grow a young generation of `youngBytes` by without passing `limitBytes`: 2
 * while doubling stays within it, else 1 (no growth). V8 also shrinks the young generation to
 * sizes between the powers of two (6 MiB after an idle spell between two loads), and from there a
 * factor of 2 passed the cap (12 MiB seen under `bench:http`). `new_space` counts pages in
 * transit too (4.25 MiB at 2 × 2 MiB), hence the slack.
 */
export const semiSpaceGrowthFactor = (youngBytes: number, limitBytes: number): 1 | 2 =>
  2 * youngBytes > limitBytes + IN_TRANSIT_SLACK_BYTES ? 1 : 2

let capping = false

/**
 * Keeps the young generation at or below 2 × `semiSpaceMiB` MiB from now on (both semi-spaces),
 * unless the operator sized it. Returns whether it does. Idempotent.
 */
export const capYoungGeneration = (semiSpaceMiB: number = YOUNG_SEMI_SPACE_MIB): boolean => {
  if (capping) return true
  if (operatorSet(OPERATOR_FLAG)) return false
  capping = true
  const limit = 2 * semiSpaceMiB * 1024 * 1024
  let factor = 2
  const check = (): void => {
    const next = semiSpaceGrowthFactor(youngGenerationBytes(), limit)
    if (next === factor) return
    factor = next
    setFlagsFromString(`--semi-space-growth-factor=${next}`)
  }
  check()
  new PerformanceObserver(check).observe({ entryTypes: ["gc"] })
  return true
}

/**
 * `--no-parallel-scavenge`, which V8 reads at each scavenge, unless the operator passed
 * `--parallel-scavenge` or `--no-parallel-scavenge`. What survives a gateway's scavenge is what
 * is in flight (a few hundred KiB), while a parallel scavenge wakes V8's helper threads each time,
 * every few hundred requests: they cost more CPU than they save (4–10 µs per small GET on 2 cores,
 * where they compete with the event loop, the load and the upstream), and the pause stays under
 * a millisecond without them. `bench:http -- --compare` read 0.94–0.95× the CPU per small GET
 * and `bench:mcp -- --compare` 0.87–0.89× per tools/call (README, Operating → Memory). Idempotent.
 */
export const scavengeOnMainThread = (): boolean => setUnlessOperatorSet(OPERATOR_SCAVENGE_FLAG, "--no-parallel-scavenge")

/**
 * How far V8 lets the old generation grow past what the last full collection kept before it
 * collects again, percent: `--heap-growing-percent`, which V8 reads at each full collection.
 * V8's own factor is dynamic, 1.1× to 4× by the collector's measured speed against the
 * program's, and a gateway's old generation is mostly garbage promoted by scavenges (requests in
 * flight across two of them): with 16–18 MiB kept, some runs of `bench:http` (a high factor) let
 * it reach 53–61 MiB, and V8 did not give those pages back (peak RSS 154 and 164 MiB, against
 * 119–126 in the runs with the limit). 1.3× is V8's own factor when it grows conservatively.
 */
export const OLD_GENERATION_GROWTH_PERCENT = 30

const OPERATOR_GROWTH_FLAG = /--heap[-_]growing[-_]percent\b/

/**
 * `--heap-growing-percent=` {@link OLD_GENERATION_GROWTH_PERCENT}, unless the operator passed
 * `--heap-growing-percent`. Returns whether it set it. Idempotent.
 */
export const limitOldGenerationGrowth = (percent: number = OLD_GENERATION_GROWTH_PERCENT): boolean =>
  setUnlessOperatorSet(OPERATOR_GROWTH_FLAG, `--heap-growing-percent=${percent}`)

export const releaseStartupMemory = (): void => {
  setFlagsFromString("--expose-gc")
  const gc: unknown = runInNewContext("gc")
  if (typeof gc === "function") gc({ type: "major", execution: "sync", flavor: "last-resort" })
  capYoungGeneration()
  scavengeOnMainThread()
  limitOldGenerationGrowth()
}
