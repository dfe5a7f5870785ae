import { describe, expect, it } from "vitest"
import { normalizePath, normalizeTarget } from "../../src/routing/Path.ts"

describe("normalizePath", () => {
  it.each([
    ["/", "/"],
    ["/a/b", "/a/b"],
    ["/a/b/", "/a/b/"],
    ["/a/./b", "/a/b"],
    ["/a/../b", "/b"],
    ["/a/b/..", "/a/"],
    ["/a/b/.", "/a/b/"],
    ["/../../etc/passwd", "/etc/passwd"],
    ["/public/%2e%2e/admin", "/admin"],
    ["/public/.%2e/admin", "/admin"],
    ["/public/%2E%2E/admin", "/admin"],
    ["//admin", "/admin"],
    ["/a//b///c", "/a/b/c"],
    ["/%7Euser", "/~user"],
    ["/a%20b", "/a%20b"],
    ["/a%c3%a9", "/a%C3%A9"],
    ["/a%41", "/aA"],
    ["/api:v1;x=1", "/api:v1;x=1"]
  ])("%s → %s", (input, expected) => {
    expect(normalizePath(input)).toBe(expected)
  })

  it.each([
    ["/a%2fb", "encoded slash"],
    ["/a%2Fb", "encoded slash"],
    ["/a%5cb", "encoded slash"],
    ["/a\\b", "backslash"],
    ["/a%zz", "malformed"],
    ["/a%2", "malformed"],
    ["/a%00b", "NUL"]
  ])("rejects %s", (input, reason) => {
    const result = normalizePath(input)
    expect(typeof result).toBe("object")
    expect(typeof result === "object" ? result.error : "").toContain(reason)
  })
})

describe("normalizeTarget", () => {
  it("splits the query without touching it", () => {
    expect(normalizeTarget("/a/../b?x=%2f&y=..")).toEqual({ authority: undefined, path: "/b", query: "?x=%2f&y=.." })
  })
  it("takes the authority of an absolute-form target", () => {
    expect(normalizeTarget("http://evil.example/a?q")).toEqual({ authority: "evil.example", path: "/a", query: "?q" })
    expect(normalizeTarget("http://h")).toEqual({ authority: "h", path: "/", query: "" })
  })
  it("rejects fragments and other forms", () => {
    expect(normalizeTarget("/public#/../admin")).toHaveProperty("error")
    expect(normalizeTarget("*")).toHaveProperty("error")
    expect(normalizeTarget("example.com:443")).toHaveProperty("error")
  })
})
