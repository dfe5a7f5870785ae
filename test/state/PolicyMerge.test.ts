import { describe, expect, it } from "vitest"
import { firstFoundWins, mostSpecificReplaces } from "../../src/state/PolicyMerge.ts"

describe("policy merge", () => {
  it("most specific replaces, per key", () => {
    expect(mostSpecificReplaces<Record<string, unknown>>({ a: 1, b: 1 }, { b: 2 }, { c: 3 })).toEqual({ a: 1, b: 2, c: 3 })
  })
  it("first found wins, per key", () => {
    expect(firstFoundWins<Record<string, unknown>>({ b: "ref" }, { a: "named", b: "named" })).toEqual({ a: "named", b: "ref" })
  })
  it("null and absent values never replace", () => {
    expect(mostSpecificReplaces<Record<string, unknown>>({ a: 1 }, { a: null }, { a: undefined })).toEqual({ a: 1 })
  })
  it("authorization rule sets accumulate whichever way the rest merges", () => {
    const gateway = { authorization: { rules: ["a"] }, cors: "g" }
    const route = { authorization: { rules: [{ deny: "b" }] }, cors: "r" }
    expect(mostSpecificReplaces<Record<string, unknown>>(gateway, route)).toEqual({ authorization: { rules: ["a", { deny: "b" }] }, cors: "r" })
    expect(firstFoundWins<Record<string, unknown>>(route, gateway)).toEqual({ authorization: { rules: ["a", { deny: "b" }] }, cors: "r" })
    expect(mostSpecificReplaces<Record<string, unknown>>({ mcpAuthorization: { rules: [1] } }, { mcpAuthorization: { rules: [2] } })).toEqual({
      mcpAuthorization: { rules: [1, 2] }
    })
  })
})
