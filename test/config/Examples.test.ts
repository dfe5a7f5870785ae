/**
 * Every config this project ships validates, completely (decode, normalise, compile).
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { validate } from "../../src/Gateway.ts"

const dir = path.resolve(import.meta.dirname, "../../examples")
const shipped = fs.readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((f) => /\.(ya?ml|json)$/.test(f)).sort()

describe("shipped examples", () => {
  it("include the quickstart", () => {
    expect(shipped).toContain("quickstart.yaml")
  })

  it.each(shipped)("%s validates", async (file) => {
    const exit = await Effect.runPromiseExit(validate({ _tag: "File", path: path.join(dir, file), watch: false }))
    expect(Exit.isSuccess(exit) ? "valid" : String(exit.cause)).toBe("valid")
  })
})
