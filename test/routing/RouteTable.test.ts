import { describe, expect, it } from "vitest"
import type { RouteMatch } from "../../src/config/LocalConfig.ts"
import { compile } from "../../src/routing/Match.ts"
import { ListenerTable, RouteTable } from "../../src/routing/RouteTable.ts"
import { request, type RequestSpec } from "../support/Requests.ts"

interface R {
  readonly key: string
  readonly hostnames?: ReadonlyArray<string>
  readonly matches?: ReadonlyArray<RouteMatch>
}

const table = (routes: ReadonlyArray<R>) =>
  new RouteTable(
    routes.map((r) => ({
      route: r.key,
      key: r.key,
      hostnames: r.hostnames ?? [],
      matches: (r.matches ?? [{ path: { pathPrefix: "/" } }]).map(compile)
    }))
  )

const find = (t: RouteTable<string>, spec: RequestSpec) => t.find(request(spec))?.route

describe("route precedence", () => {
  it("exact beats prefix; longer prefix beats shorter; prefix and regex share a rank ordered by length", () => {
    const t = table([
      { key: "a-root", matches: [{ path: { pathPrefix: "/" } }] },
      { key: "b-api", matches: [{ path: { pathPrefix: "/api" } }] },
      { key: "c-api-v1", matches: [{ path: { pathPrefix: "/api/v1" } }] },
      { key: "d-exact", matches: [{ path: { exact: "/api/v1/users" } }] },
      { key: "e-regex", matches: [{ path: { regex: "/api/v1/u.*" } }] }
    ])
    expect(find(t, { path: "/api/v1/users" })).toBe("d-exact")
    // regex "/api/v1/u.*" (10 chars) is longer than prefix "/api/v1" (7 chars)
    expect(find(t, { path: "/api/v1/ux" })).toBe("e-regex")
    expect(find(t, { path: "/api/v1/x" })).toBe("c-api-v1")
    expect(find(t, { path: "/api/x" })).toBe("b-api")
    expect(find(t, { path: "/other" })).toBe("a-root")
  })

  it("method, then header count, then query count break ties", () => {
    const t = table([
      { key: "plain", matches: [{ path: { pathPrefix: "/x" } }] },
      { key: "method", matches: [{ path: { pathPrefix: "/x" }, method: "GET" }] },
      { key: "headers", matches: [{ path: { pathPrefix: "/x" }, headers: [{ name: "a", value: { exact: "1" } }] }] },
      { key: "query", matches: [{ path: { pathPrefix: "/x" }, query: [{ name: "q", value: { exact: "1" } }] }] }
    ])
    expect(find(t, { path: "/x", method: "GET", headers: { a: "1" }, query: "?q=1" })).toBe("method")
    expect(find(t, { path: "/x", method: "POST", headers: { a: "1" }, query: "?q=1" })).toBe("headers")
    expect(find(t, { path: "/x", method: "POST", query: "?q=1" })).toBe("query")
    expect(find(t, { path: "/x", method: "POST" })).toBe("plain")
  })

  it("ties fall to the lexical route key (route10 before route2)", () => {
    const t = table([{ key: "route2" }, { key: "route10" }])
    expect(find(t, { path: "/" })).toBe("route10")
  })

  it("a route matches if any of its matches does", () => {
    const t = table([{ key: "r", matches: [{ path: { exact: "/a" } }, { path: { exact: "/b" } }] }])
    expect(find(t, { path: "/b" })).toBe("r")
    expect(find(t, { path: "/c" })).toBeUndefined()
  })
})

describe("route hostnames", () => {
  const t = table([
    { key: "exact", hostnames: ["a.example.com"], matches: [{ path: { pathPrefix: "/only" } }] },
    { key: "wild", hostnames: ["*.example.com"] },
    { key: "deeper", hostnames: ["*.b.example.com"] },
    { key: "any" }
  ])
  it("exact bucket first, then most specific wildcard, then routes without hostnames", () => {
    expect(find(t, { host: "a.example.com", path: "/only" })).toBe("exact")
    // the exact bucket has no match for this path, so the wildcard bucket is tried
    expect(find(t, { host: "a.example.com", path: "/other" })).toBe("wild")
    expect(find(t, { host: "x.b.example.com" })).toBe("deeper")
    expect(find(t, { host: "x.y.example.com" })).toBe("wild")
    expect(find(t, { host: "example.com" })).toBe("any")
    expect(find(t, { host: "other.org" })).toBe("any")
  })
})

describe("listener selection", () => {
  const t = new ListenerTable([
    { hostname: "", listener: "catch-all" },
    { hostname: "*.example.com", listener: "wild" },
    { hostname: "*.api.example.com", listener: "wild-api" },
    { hostname: "www.example.com", listener: "exact" }
  ])
  it("exact, then longest wildcard, then catch-all", () => {
    expect(t.find("www.example.com")).toBe("exact")
    expect(t.find("v1.api.example.com")).toBe("wild-api")
    expect(t.find("shop.example.com")).toBe("wild")
    expect(t.find("example.com")).toBe("catch-all")
  })
  it("no catch-all ⇒ no listener", () => {
    expect(new ListenerTable([{ hostname: "a.com", listener: "a" }]).find("b.com")).toBeUndefined()
  })
})
