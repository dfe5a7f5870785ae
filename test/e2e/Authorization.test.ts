/**
 * `authorization` through real sockets: the real gateway from YAML, a real upstream, requests
 * sent with `node:http` so every header is exactly what the test wrote. Covers the three
 * phases (listener before route selection, route, backend) and the accumulation of rule sets.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"
import { type Reply, send } from "../support/Client.ts"


const expectDenied = (reply: Reply) => {
  expect(reply.status).toBe(403)
  expect(reply.headers["content-type"]).toBe("text/plain")
  expect(reply.body).toBe("authorization failed")
}

describe("authorization", () => {
  let upstream: Upstream
  let gw: Running
  let port: number

  beforeAll(async () => {
    upstream = await startUpstream()
    port = await freePort()
    gw = await startGateway(
      `
binds:
- port: $PORT
  listeners:
  - name: web
    policies:
      # Gateway phase, before route selection: denies even requests no route would match.
      authorization:
        rules:
        - deny: 'default(request.headers["x-block"], "") == "listener"'
    routes:
    - name: header
      matches: [{path: {pathPrefix: /header}}]
      policies:
        authorization:
          rules:
          - 'request.headers["x-env"] == "prod"'
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: loopback
      matches: [{path: {pathPrefix: /loopback}}]
      policies:
        authorization:
          rules:
          - |
            cidr("127.0.0.0/8").containsIP(source.address) || cidr("::1/128").containsIP(source.address)
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: private
      matches: [{path: {pathPrefix: /private}}]
      policies:
        authorization: {rules: ['cidr("10.0.0.0/8").containsIP(source.address)']}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: needs-jwt
      matches: [{path: {pathPrefix: /jwt-allow}}]
      policies:
        authorization: {rules: ['has(jwt.sub)']}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: jwt-deny
      matches: [{path: {pathPrefix: /jwt-deny}}]
      policies:
        authorization: {rules: [{deny: 'jwt.sub == "mallory"'}]}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: require
      matches: [{path: {pathPrefix: /require}}]
      policies:
        authorization:
          rules:
          - require: 'request.headers["x-tenant"] == "acme"'
          - deny: 'request.method == "DELETE"'
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: body
      matches: [{path: {pathPrefix: /body}}]
      policies:
        authorization: {rules: ['json(request.body).action == "read"']}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: open
      matches: [{path: {pathPrefix: /open}}]
      policies:
        authorization: {rules: ['request.method == "GET"']}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: backend-phase
      matches: [{path: {pathPrefix: /backend}}]
      backends:
      - host: 127.0.0.1:$UPSTREAM
        policies:
          authorization:
            rules:
            - 'backend.name.endsWith("/backend-phase/backend0") && request.path != "/backend/denied"'
policies:
# Route phase, targeted at the listener: merged into every route of it.
- name: {name: listener-route-phase, namespace: default}
  target: {gateway: {gatewayName: default, gatewayNamespace: default, listenerName: web}}
  policy:
    authorization:
      rules:
      - deny: 'request.path.endsWith("/listener-denied")'
`,
      { vars: { PORT: port, UPSTREAM: upstream.port } }
    )
  })
  afterAll(async () => {
    await gw.stop()
    await upstream.close()
  })

  it("an allowed request reaches the upstream unchanged", async () => {
    const before = upstream.received.length
    const res = await send(port, "GET", "/header/x?q=1", { "x-env": "prod" })
    expect(res.status).toBe(200)
    expect(res.headers["x-upstream"]).toBe("yes")
    expect(upstream.received.length).toBe(before + 1)
    expect(upstream.received.at(-1)?.url).toBe("/header/x?q=1")
  })

  it("a denied request gets 403 `authorization failed` and never reaches the upstream", async () => {
    const before = upstream.received.length
    expectDenied(await send(port, "GET", "/header/x", { "x-env": "dev" }))
    // The header is absent: the allow rule errors, which does not allow.
    expectDenied(await send(port, "GET", "/header/x"))
    expect(upstream.received.length).toBe(before)
  })

  it("source.address rules with cidr().containsIP()", async () => {
    expect((await send(port, "GET", "/loopback")).status).toBe(200)
    expectDenied(await send(port, "GET", "/private"))
  })

  it("without a JWT policy, rules naming jwt error: an allow rule does not allow, a deny rule denies", async () => {
    const before = upstream.received.length
    expectDenied(await send(port, "GET", "/jwt-allow"))
    // Stricter than upstream, which lets this request through: an erroring deny rule denies.
    expectDenied(await send(port, "GET", "/jwt-deny"))
    expect(upstream.received.length).toBe(before)
  })

  it("require and deny rules without allow rules", async () => {
    expect((await send(port, "POST", "/require", { "x-tenant": "acme" })).status).toBe(200)
    expectDenied(await send(port, "POST", "/require", { "x-tenant": "other" }))
    expectDenied(await send(port, "POST", "/require"))
    expectDenied(await send(port, "DELETE", "/require", { "x-tenant": "acme" }))
  })

  it("a rule reading request.body sees the body, and the upstream still gets it whole", async () => {
    const body = JSON.stringify({ action: "read", pad: "x".repeat(10_000) })
    const res = await send(port, "POST", "/body", { "content-type": "application/json" }, { body })
    expect(res.status).toBe(200)
    // The upstream's /body endpoint pipes the body back as it arrives.
    expect(res.body.length).toBe(body.length)
    expect(res.body).toBe(body)
    expectDenied(await send(port, "POST", "/body", {}, { body: JSON.stringify({ action: "write" }) }))
    // Not JSON: json() errors, the allow rule does not allow.
    expectDenied(await send(port, "POST", "/body", {}, { body: "plain" }))
  })

  it("a listener-level deny (gateway phase) denies although the route allows", async () => {
    expect((await send(port, "GET", "/open")).status).toBe(200)
    expectDenied(await send(port, "GET", "/open", { "x-block": "listener" }))
    // Before route selection: even a path no route matches is answered 403, not 404.
    expectDenied(await send(port, "GET", "/no-such-route", { "x-block": "listener" }))
    expect((await send(port, "GET", "/no-such-route")).status).toBe(404)
  })

  it("a route-phase deny targeted at the listener accumulates with the route's own rules", async () => {
    expectDenied(await send(port, "GET", "/open/listener-denied"))
    expectDenied(await send(port, "GET", "/header/listener-denied", { "x-env": "prod" }))
    expectDenied(await send(port, "POST", "/open/x"))
  })

  it("backend phase: rules on the backend reference run once the backend is chosen", async () => {
    const res = await send(port, "GET", "/backend/ok")
    expect(res.status).toBe(200)
    expect(res.headers["x-upstream"]).toBe("yes")
    expectDenied(await send(port, "GET", "/backend/denied"))
    expectDenied(await send(port, "GET", "/backend/listener-denied"))
  })
})
