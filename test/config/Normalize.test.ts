/**
 * Config → IR: names and keys as agentgateway derives them, both front-ends, and the policy
 * merge rules (route phase: most specific replaces; backend phase: first found wins).
 */
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { loadIr } from "../../src/Gateway.ts"
import type * as Ir from "../../src/ir/Ir.ts"

const ir = (yaml: string): Ir.Snapshot => Effect.runSync(loadIr(yaml, "config.yaml", () => undefined)).ir
const fails = (yaml: string): string => {
  const exit = Effect.runSyncExit(loadIr(yaml, "config.yaml", () => undefined))
  if (exit._tag === "Success") throw new Error("expected a config error")
  return String(exit.cause)
}

describe("binds", () => {
  it("derives default names and keys", () => {
    const snap = ir(`
binds:
- port: 3000
  listeners:
  - routes:
    - backends: [{host: "127.0.0.1:8080"}, {host: "svc.local:80", weight: 2}]
`)
    const listener = snap.binds[0]!.listeners[0]!
    expect(snap.binds[0]!.key).toBe("bind/3000")
    expect(listener.name).toBe("listener0")
    expect(listener.key).toBe("default/default/bind/3000/listener0")
    const route = listener.routes[0]!
    expect(route.name).toBe("route0")
    expect(route.key).toBe("default/default/bind/3000/listener0/default/route0")
    expect(route.matches).toEqual([{ path: { pathPrefix: "/" } }])
    expect(route.backends.map((b) => [b.name, b.weight, b.target._tag === "Host" && b.target.isHostname])).toEqual([
      ["/default/default/bind/3000/listener0/default/route0/backend0", 1, false],
      ["/default/default/bind/3000/listener0/default/route0/backend1", 2, true]
    ])
  })

  it("parses host targets, including IPv6", () => {
    const snap = ir(`binds: [{port: 1, listeners: [{routes: [{backends: [{host: "[::1]:9000"}]}]}]}]`)
    expect(snap.binds[0]!.listeners[0]!.routes[0]!.backends[0]!.target).toEqual({ _tag: "Host", host: "::1", port: 9000, isHostname: false })
    expect(fails(`binds: [{port: 1, listeners: [{routes: [{backends: [{host: "http://x:80"}]}]}]}]`)).toContain("not a URL")
    expect(fails(`binds: [{port: 1, listeners: [{routes: [{backends: [{host: "x"}]}]}]}]`)).toContain("expected host:port")
  })
})

describe("gateways + routes", () => {
  it("attaches routes without gateways to the implicit default gateway", () => {
    const snap = ir(`
gateways:
  default: {port: 3000}
  alt:
    port: 3001
    listeners:
    - name: a
      hostname: a.example.com
    - hostname: b.example.com
routes:
- name: r0
  backends: [{host: "127.0.0.1:1"}]
- name: r1
  gateways: alt/a
  backends: [{host: "127.0.0.1:1"}]
- name: r2
  gateways: [alt]
  backends: [{host: "127.0.0.1:1"}]
`)
    const [def, alt] = snap.binds
    expect(def!.listeners[0]!.key).toBe("gateway/default")
    expect(def!.listeners[0]!.routes.map((r) => r.key)).toEqual(["gateway/default/default/r0"])
    expect(alt!.listeners.map((l) => [l.key, l.hostname])).toEqual([
      ["gateway/alt/a", "a.example.com"],
      ["gateway/alt/listener1", "b.example.com"]
    ])
    expect(alt!.listeners[0]!.routes.map((r) => r.name)).toEqual(["r1", "r2"])
    expect(alt!.listeners[1]!.routes.map((r) => r.name)).toEqual(["r2"])
  })

  it("requires a default gateway for routes without gateways, and unique ports", () => {
    expect(fails(`gateways: {x: {port: 1}}\nroutes: [{backends: [{host: "a:1"}]}]`)).toContain('a gateway named "default" must exist')
    expect(fails(`gateways: {default: {port: 1}}\nbinds: [{port: 1, listeners: []}]`)).toContain("port 1 is configured by both")
    expect(fails(`gateways: {default: {port: 1}}\nroutes: [{gateways: nope, backends: [{host: "a:1"}]}]`)).toContain('gateway "nope" is not defined')
  })
})

describe("policy merge", () => {
  it("route phase: a route's own policy replaces one inherited from its gateway; others are kept", () => {
    const snap = ir(`
binds:
- port: 3000
  listeners:
  - name: l
    routes:
    - name: r
      policies:
        requestHeaderModifier: {add: {from: route}}
      backends: [{host: "127.0.0.1:1"}]
policies:
- name: {name: p1, namespace: default}
  target: {gateway: {gatewayName: default, gatewayNamespace: default, listenerName: l}}
  policy:
    requestHeaderModifier: {add: {from: gateway}}
- name: {name: p2, namespace: default}
  target: {gateway: {gatewayName: default, gatewayNamespace: default}}
  policy:
    responseHeaderModifier: {add: {from: gateway}}
- name: {name: p3, namespace: default}
  target: {route: {name: r, namespace: default}}
  policy:
    cors: {allowOrigins: ["*"]}
`)
    const route = snap.binds[0]!.listeners[0]!.routes[0]!
    expect(route.policies.requestHeaderModifier).toEqual({ add: { from: "route" } })
    expect(route.policies.responseHeaderModifier).toEqual({ add: { from: "gateway" } })
    expect(route.policies.cors).toEqual({ allowOrigins: ["*"] })
  })

  it("backend phase: the backend reference's own policy wins over the named backend's (no deep merge)", () => {
    const snap = ir(`
backends:
- name: backend1
  host: 127.0.0.1:1
  policies:
    requestHeaderModifier: {add: {x-backend-req: "1"}}
    responseHeaderModifier: {add: {x-backend-resp: "1"}}
binds:
- port: 3000
  listeners:
  - routes:
    - backends:
      - backend: backend1
        policies:
          requestHeaderModifier: {add: {x-backend-route-req: "1"}}
`)
    const ref = snap.binds[0]!.listeners[0]!.routes[0]!.backends[0]!
    expect(ref.name).toBe("/backend1")
    expect(ref.policies.requestHeaderModifier).toEqual({ add: { "x-backend-route-req": "1" } })
    expect(ref.policies.responseHeaderModifier).toEqual({ add: { "x-backend-resp": "1" } })
  })

  it("gateway phase: listener policies, then targeted gateway-phase policies, first wins", () => {
    const snap = ir(`
binds:
- port: 3000
  listeners:
  - name: l
    policies:
      cors: {allowOrigins: ["https://own"]}
policies:
- name: {name: p, namespace: default}
  target: {gateway: {gatewayName: default, gatewayNamespace: default}}
  phase: gateway
  policy:
    cors: {allowOrigins: ["https://targeted"]}
`)
    expect(snap.binds[0]!.listeners[0]!.policies.cors).toEqual({ allowOrigins: ["https://own"] })
  })

  it("a targeted policy must hold exactly one policy", () => {
    expect(
      fails(`
policies:
- name: {name: p, namespace: default}
  target: {route: {name: r, namespace: default}}
  policy: {cors: {allowOrigins: ["*"]}, responseHeaderModifier: {add: {a: b}}}
`)
    ).toContain("exactly one policy")
  })
})
