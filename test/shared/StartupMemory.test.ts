/**
 * The young-generation cap a serving gateway sets (src/shared/StartupMemory.ts), in a fresh Node
 * process each time: V8 heap sizing is per process, and this one's is vitest's. The workload
 * keeps a rolling window of objects alive, so scavenges have survivors and V8 grows the young
 * generation as it does under proxy load, in small tasks as requests are (the cap is applied
 * between tasks, so one task that allocates several young generations' worth can overshoot it).
 * The capped child starts as a serving gateway does: `releaseStartupMemory` (a memory-reducing
 * collection, which shrinks the young generation below V8's initial 16 MiB, then the cap).
 */
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { YOUNG_SEMI_SPACE_MIB } from "../../src/shared/StartupMemory.ts"

const MODULE = fileURLToPath(new URL("../../src/shared/StartupMemory.ts", import.meta.url))
const MIB = 1024 * 1024

/**
 * Runs `prelude` and then the workload in a fresh child (no NODE_OPTIONS): a rolling window of
 * objects, in small tasks as requests are, with `afterTask` run between tasks. Returns stdout.
 */
const runChild = (nodeArgs: ReadonlyArray<string>, prelude: string, afterTask: string, rounds: number): string => {
  const script = `
    ${prelude}
    let window = []
    for (let round = 0; round < ${rounds}; round++) {
      for (let i = 0; i < 10_000; i++) {
        window.push({ i, s: "x" + i })
        if (window.length > 40_000) window = []
      }
      // The observer runs between tasks, as it does between requests.
      await new Promise((resolve) => setImmediate(resolve))
      ${afterTask}
    }
  `
  return execFileSync(process.execPath, [...nodeArgs, "--input-type=module", "-e", script], {
    encoding: "utf8",
    env: { ...process.env, NODE_OPTIONS: "" }
  })
}

/** Runs the workload in a child; returns whether the cap was installed and the young generation's size. */
const youngGeneration = (options: { readonly cap: boolean; readonly nodeArgs?: ReadonlyArray<string> }) => {
  const out = runChild(
    options.nodeArgs ?? [],
    `
    import { getHeapSpaceStatistics } from "node:v8"
    const { capYoungGeneration, releaseStartupMemory } = await import(${JSON.stringify(MODULE)})
    if (${options.cap}) releaseStartupMemory()
    const installed = ${options.cap} ? capYoungGeneration() : false
    let largest = 0
    const size = () => getHeapSpaceStatistics().find((s) => s.space_name === "new_space").space_size
    process.on("beforeExit", () => console.log(JSON.stringify({ installed, largest })))
    `,
    "largest = Math.max(largest, size())",
    3000
  )
  return JSON.parse(out.trim()) as { installed: boolean; largest: number }
}

describe("capYoungGeneration", () => {
  it("without it, the workload grows V8's young generation past the cap", () => {
    const { largest } = youngGeneration({ cap: false })
    expect(largest).toBeGreaterThan(48 * MIB)
  }, 60_000)

  // \`new_space\` also counts pages in transit, so V8's own \`--max-semi-space-size=4\` reads 8–8.5 MiB on this workload.
  it(`keeps the young generation at 2 × ${YOUNG_SEMI_SPACE_MIB} MiB`, () => {
    const { installed, largest } = youngGeneration({ cap: true })
    expect(installed).toBe(true)
    expect(largest).toBeLessThanOrEqual(3 * YOUNG_SEMI_SPACE_MIB * MIB)
    expect(largest).toBeGreaterThanOrEqual(2 * YOUNG_SEMI_SPACE_MIB * MIB)
  }, 60_000)

  it("leaves an operator's own young-generation flag alone", () => {
    const { installed, largest } = youngGeneration({ cap: true, nodeArgs: ["--max-semi-space-size=16"] })
    expect(installed).toBe(false)
    expect(largest).toBeGreaterThan(3 * YOUNG_SEMI_SPACE_MIB * MIB)
  }, 60_000)
})

/**
 * Scavenges in a child run with `--trace-parallel-scavenge`, which prints one line per scavenge
 * task (`scavenge[…]: time=…`) and, with `--trace-gc`, one per scavenge: the most tasks any one
 * scavenge had after `scavengeOnMainThread` (when `apply`) returned; earlier ones are not counted.
 */
const APPLIED = "scavenge flag applied="
const tasksPerScavenge = (options: { readonly apply: boolean; readonly nodeArgs?: ReadonlyArray<string> }) => {
  const out = runChild(
    [...(options.nodeArgs ?? []), "--trace-parallel-scavenge", "--trace-gc"],
    `
    const { scavengeOnMainThread } = await import(${JSON.stringify(MODULE)})
    console.log(${JSON.stringify(APPLIED)} + (${options.apply} ? scavengeOnMainThread() : false))
    `,
    "",
    200
  )
  const lines = out.split("\n")
  const from = lines.findIndex((line) => line.startsWith(APPLIED))
  let tasks = 0
  let most = 0
  let scavenges = 0
  for (const line of lines.slice(from + 1)) {
    if (/\bscavenge\[[^\]]*\]: time=/.test(line)) tasks++
    else if (/\bScavenge\b/.test(line)) {
      scavenges++
      most = Math.max(most, tasks)
      tasks = 0
    }
  }
  return { applied: lines[from] === `${APPLIED}true`, scavenges, most }
}

describe("scavengeOnMainThread", () => {
  it("without it, V8 scavenges with several tasks", () => {
    const { scavenges, most } = tasksPerScavenge({ apply: false })
    expect(scavenges).toBeGreaterThan(10)
    expect(most).toBeGreaterThan(1)
  }, 60_000)

  it("makes every later scavenge one task, on the main thread", () => {
    const { applied, scavenges, most } = tasksPerScavenge({ apply: true })
    expect(applied).toBe(true)
    expect(scavenges).toBeGreaterThan(10)
    expect(most).toBe(1)
  }, 60_000)

  it("leaves an operator's own parallel-scavenge flag alone", () => {
    const { applied, most } = tasksPerScavenge({ apply: true, nodeArgs: ["--parallel-scavenge"] })
    expect(applied).toBe(false)
    expect(most).toBeGreaterThan(1)
  }, 60_000)
})
