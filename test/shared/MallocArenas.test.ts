/**
 * When a serving gateway re-executes itself with glibc's arenas capped (src/shared/MallocArenas.ts).
 * The re-execution itself, with the real command, is in test/e2e/Cli.test.ts.
 */
import { describe, expect, it } from "vitest"
import { MALLOC_ARENAS, plan } from "../../src/shared/MallocArenas.ts"

describe("MallocArenas.plan", () => {
  const env = { PATH: "/usr/bin", NODE_OPTIONS: "--max-old-space-size=512" }

  it("caps the arenas of a Linux process that can re-execute, keeping the rest of its environment", () => {
    expect(plan(env, ["--enable-source-maps"], "linux", true)).toEqual({ ...env, MALLOC_ARENA_MAX: String(MALLOC_ARENAS) })
  })

  it("leaves the process as it is when the operator set MALLOC_ARENA_MAX, in a cluster worker, under an inspector, off Linux or without execve", () => {
    expect(plan({ ...env, MALLOC_ARENA_MAX: "8" }, [], "linux", true)).toBeUndefined()
    expect(plan({ ...env, MALLOC_ARENA_MAX: "" }, [], "linux", true)).toBeUndefined()
    expect(plan({ ...env, NODE_UNIQUE_ID: "1" }, [], "linux", true)).toBeUndefined()
    expect(plan(env, ["--inspect=9229"], "linux", true)).toBeUndefined()
    expect(plan(env, ["--inspect-brk"], "linux", true)).toBeUndefined()
    expect(plan({ ...env, NODE_OPTIONS: "--max-old-space-size=512 --inspect" }, [], "linux", true)).toBeUndefined()
    expect(plan(env, [], "darwin", true)).toBeUndefined()
    expect(plan(env, [], "linux", false)).toBeUndefined()
  })
})
