import { describe, expect, it } from "vitest"
import { compile, prefixMatcher } from "../../src/routing/Match.ts"
import { request } from "../support/Requests.ts"

describe("path prefix", () => {
  it("matches on segment boundaries", () => {
    const api = prefixMatcher("/api")
    expect(api("/api")).toBe(true)
    expect(api("/api/")).toBe(true)
    expect(api("/api/x")).toBe(true)
    expect(api("/apiary")).toBe(false)
    expect(api("/ap")).toBe(false)
    const slash = prefixMatcher("/api/")
    expect(slash("/api")).toBe(true)
    expect(slash("/api/v1")).toBe(true)
    expect(slash("/apiv1")).toBe(false)
    expect(prefixMatcher("/")("/anything")).toBe(true)
  })
})

describe("compile", () => {
  it("exact paths are byte-equal (no trailing-slash tolerance)", () => {
    const m = compile({ path: { exact: "/api/v1/users" } })
    expect(m.matches(request({ path: "/api/v1/users" }))).toBe(true)
    expect(m.matches(request({ path: "/api/v1/users/" }))).toBe(false)
    expect(m.pathKind).toBe("exact")
  })

  it("regex matches the whole path", () => {
    const m = compile({ path: { regex: "/v[0-9]+/items" } })
    expect(m.matches(request({ path: "/v2/items" }))).toBe(true)
    expect(m.matches(request({ path: "/x/v2/items" }))).toBe(false)
    expect(m.matches(request({ path: "/v2/items/more" }))).toBe(false)
  })

  it("defaults to prefix /", () => {
    const m = compile({})
    expect(m.matches(request({ path: "/whatever" }))).toBe(true)
    expect(m.pathKind).toBe("prefix")
    expect(m.pathLength).toBe(1)
  })

  it("method is an exact compare", () => {
    const m = compile({ method: "GET" })
    expect(m.matches(request({ method: "GET" }))).toBe(true)
    expect(m.matches(request({ method: "POST" }))).toBe(false)
  })

  it("headers match any repeated value, exact or full regex; all must match", () => {
    const m = compile({
      headers: [
        { name: "X-Header", value: { regex: "test-[0-9]" } },
        { name: "x-env", value: { exact: "prod" } }
      ]
    })
    expect(m.matches(request({ headers: { "x-header": "test-1", "x-env": "prod" } }))).toBe(true)
    expect(m.matches(request({ headers: { "x-header": ["nope", "test-2"], "x-env": "prod" } }))).toBe(true)
    expect(m.matches(request({ headers: { "x-header": "test-12", "x-env": "prod" } }))).toBe(false)
    expect(m.matches(request({ headers: { "x-header": "test-1" } }))).toBe(false)
    // A comma-joined value is one value.
    expect(compile({ headers: [{ name: "x", value: { exact: "a" } }] }).matches(request({ headers: { x: "a, b" } }))).toBe(false)
  })

  it("pseudo-headers", () => {
    expect(compile({ headers: [{ name: ":method", value: { exact: "PUT" } }] }).matches(request({ method: "PUT" }))).toBe(true)
    expect(compile({ headers: [{ name: ":authority", value: { exact: "a.b" } }] }).matches(request({ host: "a.b" }))).toBe(true)
    expect(compile({ headers: [{ name: ":path", value: { regex: "/p\\?x=1" } }] }).matches(request({ path: "/p", query: "?x=1" }))).toBe(true)
  })

  it("query parameters are form-decoded; missing never matches", () => {
    const m = compile({ query: [{ name: "param", value: { exact: "hello world" } }] })
    expect(m.matches(request({ query: "?param=hello+world" }))).toBe(true)
    expect(m.matches(request({ query: "?param=hello%20world&x=1" }))).toBe(true)
    expect(m.matches(request({ query: "?other=1" }))).toBe(false)
    expect(m.matches(request({ query: "" }))).toBe(false)
    const re = compile({ query: [{ name: "v", value: { regex: "[0-9]+" } }] })
    expect(re.matches(request({ query: "?v=12" }))).toBe(true)
    expect(re.matches(request({ query: "?v=12a" }))).toBe(false)
  })

  it("invalid regexes throw when compiled (a config error, not a request error)", () => {
    expect(() => compile({ path: { regex: "(" } })).toThrow()
  })
})
