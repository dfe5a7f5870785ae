/**
 * Config regexes against hostile input: a catastrophically backtracking pattern finishes (V8
 * falls back to its linear engine), through route path matching and both CEL regex functions.
 * The bound (5 s) is far from both outcomes, so no machine speed is really asserted.
 */
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import * as Cel from "../../src/cel/Cel.ts"
import * as CelContext from "../../src/cel/Context.ts"
import { fullRegex } from "../../src/routing/Match.ts"
import * as LinearRegex from "../../src/shared/LinearRegex.ts"
import { request } from "../support/Requests.ts"

// 28 characters: about 25 s per match for a backtracking engine on the CI machine, milliseconds for the linear one.
const hostile = "a".repeat(28) + "!"

/** Whether the synchronous `f` returned within `ms`. */
const finishes = (f: () => unknown, ms: number): boolean => {
  const start = performance.now()
  f()
  return performance.now() - start < ms
}

describe("config regexes cannot be made to backtrack forever", () => {
  it("route regex matches", () => {
    const re = fullRegex("/(a+)+")
    expect(finishes(() => re.test("/" + hostile), 5000)).toBe(true)
    expect(re.test("/aaa")).toBe(true)
  })

  it("CEL matches() and regexReplace()", async () => {
    const matches = await Effect.runPromise(Cel.compileBool(`request.path.matches("^/(a+)+$")`, "test"))
    const replace = await Effect.runPromise(Cel.compile(`request.path.regexReplace("^/(a+)+$", "x")`, "test"))
    const act = CelContext.forRequest(request({ path: "/" + hostile }))
    expect(finishes(() => matches.evalBool(act), 5000)).toBe(true)
    expect(finishes(() => replace.evalValue(act), 5000)).toBe(true)
    expect(matches.evalBool(CelContext.forRequest(request({ path: "/aaa" })))).toBe(true)
    expect(replace.evalValue(CelContext.forRequest(request({ path: "/aaa" })))).toBe("x")
  })

  it("keeps Unicode syntax working", () => {
    expect(LinearRegex.compile("^\\p{L}+$").test("héllo")).toBe(true)
    expect(LinearRegex.compile("^a.c$").test("abc")).toBe(true)
  })
})
