/**
 * The policy pipeline through real sockets: header modifiers at route and backend level,
 * CORS in the gateway phase (before route selection) and in the route phase, on the
 * gateways + routes form.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { rawRequest } from "../support/RawHttp.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"

let upstream: Upstream
let gw: Running
let port: number

beforeAll(async () => {
  upstream = await startUpstream()
  port = await freePort()
  gw = await startGateway(
    `
gateways:
  default:
    port: $PORT
    cors:
      allowOrigins: ["https://portal.example"]
      allowMethods: [GET]
routes:
- name: modified
  matches: [{path: {pathPrefix: /mod}}]
  policies:
    requestHeaderModifier:
      add: {x-added: route}
      set: {x-set: route}
      remove: [x-illegal-header]
    responseHeaderModifier:
      set: {x-resp: route}
      remove: [x-upstream]
  backends:
  - host: 127.0.0.1:$UPSTREAM
    policies:
      requestHeaderModifier:
        add: {x-backend: ref}
      responseHeaderModifier:
        add: {x-backend-resp: ref}
`,
    { vars: { PORT: port, UPSTREAM: upstream.port } }
  )
})
afterAll(async () => {
  await gw.stop()
  await upstream.close()
})

describe("pipeline", () => {
  it("route and backend header modifiers both apply, on the request and on the response", async () => {
    const res = await fetch(gw.url(port, "/mod"), { headers: { "x-illegal-header": "1", "x-set": "client" } })
    expect(res.status).toBe(200)
    const echo = (await res.json()) as { headers: Record<string, string> }
    expect(echo.headers["x-added"]).toBe("route")
    expect(echo.headers["x-set"]).toBe("route")
    expect(echo.headers["x-illegal-header"]).toBeUndefined()
    expect(echo.headers["x-backend"]).toBe("ref")
    expect(res.headers.get("x-resp")).toBe("route")
    expect(res.headers.get("x-backend-resp")).toBe("ref")
    expect(res.headers.get("x-upstream")).toBeNull()
  })

  it("gateway-phase CORS answers a preflight before any route is selected", async () => {
    const res = await fetch(gw.url(port, "/no-such-route"), {
      method: "OPTIONS",
      headers: { origin: "https://portal.example", "access-control-request-method": "GET" }
    })
    expect(res.status).toBe(200)
    expect(res.headers.get("access-control-allow-origin")).toBe("https://portal.example")
    expect(res.headers.get("access-control-allow-methods")).toBe("GET")
    expect(upstream.received.some((r) => r.url === "/no-such-route")).toBe(false)
  })

  it("gateway-phase CORS headers reach a 404 from route selection", async () => {
    const res = await fetch(gw.url(port, "/no-such-route"), { headers: { origin: "https://portal.example" } })
    expect(res.status).toBe(404)
    expect(res.headers.get("access-control-allow-origin")).toBe("https://portal.example")
  })
})

describe("listener selection", () => {
  it("a port whose listeners all have host names answers 404 `listener not found` for other hosts", async () => {
    const p = await freePort()
    const named = await startGateway(
      `
binds:
- port: $P
  listeners:
  - name: only-a
    hostname: a.example.com
    routes:
    - policies: {directResponse: {status: 200, body: a}}
  - name: wild
    hostname: "*.b.example.com"
    routes:
    - policies: {directResponse: {status: 200, body: b}}
`,
      { vars: { P: p } }
    )
    try {
      const get = (host: string) => rawRequest(p, `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
      expect((await get("a.example.com")).body).toBe("a")
      expect((await get("x.y.b.example.com:8080")).body).toBe("b")
      const miss = await get("c.example.com")
      expect(miss.status).toBe(404)
      expect(miss.body).toBe("listener not found")
    } finally {
      await named.stop()
    }
  })
})
