/**
 * The V8 heap settings a serving gateway makes (src/shared/StartupMemory.ts: the young-generation
 * cap, scavenges on the main thread, the old generation's growth), in a fresh Node process each time: V8 heap sizing is per process, and this one's is vitest's. The workload
 * keeps a rolling window of objects alive, so scavenges have survivors and V8 grows the young
 * generation as it does under proxy load, in small tasks as requests are (the cap is applied
 * between tasks, so one task that allocates several young generations' worth can overshoot it).
 * The capped child starts as a serving gateway does: `releaseStartupMemory` (a memory-reducing
 * collection, which shrinks the young generation below V8's initial 16 MiB, then the cap).
 */
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { OLD_GENERATION_GROWTH_PERCENT, semiSpaceGrowthFactor, YOUNG_SEMI_SPACE_MIB } from "../../src/shared/StartupMemory.ts"

const MODULE = fileURLToPath(new URL("../../src/shared/StartupMemory.ts", import.meta.url))
const MIB = 1024 * 1024

/**
 * Runs `prelude` and then the workload in a fresh child (no NODE_OPTIONS): a rolling window of
 * objects, in small tasks as requests are, with `afterTask` run between tasks. Returns stdout.
 */
const runChild = (
  nodeArgs: ReadonlyArray<string>,
  prelude: string,
  afterTask: string,
  rounds: number,
  shape: { readonly perTask: number; readonly window: number } = { perTask: 10_000, window: 40_000 }
): string => {
  const script = `
    ${prelude}
    let window = []
    for (let round = 0; round < ${rounds}; round++) {
      for (let i = 0; i < ${shape.perTask}; i++) {
        window.push({ i, s: "x" + i })
        if (window.length > ${shape.window}) window = []
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

describe("semiSpaceGrowthFactor", () => {
  const limit = 2 * YOUNG_SEMI_SPACE_MIB * MIB
  it("lets the young generation double while that stays within the cap", () => {
    expect(semiSpaceGrowthFactor(1 * MIB, limit)).toBe(2)
    expect(semiSpaceGrowthFactor(2 * MIB, limit)).toBe(2)
    expect(semiSpaceGrowthFactor(4 * MIB, limit)).toBe(2)
    // Pages in transit during a scavenge.
    expect(semiSpaceGrowthFactor(4.25 * MIB, limit)).toBe(2)
  })

  it("stops growth at the cap, and from a size V8 shrank to where doubling would pass it", () => {
    expect(semiSpaceGrowthFactor(limit, limit)).toBe(1)
    expect(semiSpaceGrowthFactor(limit + MIB / 2, limit)).toBe(1)
    // 2 × 3 MiB after V8 shrank it: doubling gave 12 MiB under `bench:http`.
    expect(semiSpaceGrowthFactor(6 * MIB, limit)).toBe(1)
  })
})

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

/**
 * The old generation's size in a child whose workload keeps ~20 MiB alive and promotes garbage
 * steadily, as a gateway's scavenges promote requests in flight (a 1 MiB semi-space, so the
 * rolling window outlives scavenges): the largest old space seen between tasks. Here V8's own
 * factor read 98.7 MiB, 1.3× 32.4 and 4× 96.2.
 */
const oldGeneration = (options: { readonly apply: boolean; readonly nodeArgs?: ReadonlyArray<string> }) => {
  const out = runChild(
    ["--max-semi-space-size=1", ...(options.nodeArgs ?? [])],
    `
    import { getHeapSpaceStatistics } from "node:v8"
    const { limitOldGenerationGrowth } = await import(${JSON.stringify(MODULE)})
    const applied = ${options.apply} ? limitOldGenerationGrowth() : false
    const kept = []
    for (let i = 0; i < 250_000; i++) kept.push({ i, s: "kept" + i })
    let largest = 0
    const old = () => getHeapSpaceStatistics().find((s) => s.space_name === "old_space").space_size
    // Reading kept at exit keeps it alive: a module variable nothing reads later is dead to V8,
    // which then collects it and the old generation stays small with or without the limit.
    process.on("beforeExit", () => console.log(JSON.stringify({ applied, largest, kept: kept.length })))
    `,
    "largest = Math.max(largest, old())",
    50_000,
    { perTask: 200, window: 20_000 }
  )
  return JSON.parse(out.trim()) as { applied: boolean; largest: number }
}

describe("limitOldGenerationGrowth", () => {
  // V8's dynamic factor reaches 4× (what --heap-growing-percent=300 fixes), the case it prevents.
  it("at V8's highest growth factor, the old generation grows far past what is kept", () => {
    const { largest } = oldGeneration({ apply: false, nodeArgs: ["--heap-growing-percent=300"] })
    expect(largest).toBeGreaterThan(70 * MIB)
  }, 60_000)

  it(`collects the old generation again at ${1 + OLD_GENERATION_GROWTH_PERCENT / 100}× what a full collection kept`, () => {
    const { applied, largest } = oldGeneration({ apply: true })
    expect(applied).toBe(true)
    expect(largest).toBeLessThan(50 * MIB)
  }, 60_000)

  it("leaves an operator's own --heap-growing-percent alone", () => {
    const { applied, largest } = oldGeneration({ apply: true, nodeArgs: ["--heap-growing-percent=300"] })
    expect(applied).toBe(false)
    expect(largest).toBeGreaterThan(70 * MIB)
  }, 60_000)
})
