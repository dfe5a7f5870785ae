/**
 * `extAuthz` over real sockets: the real gateway from YAML, a real upstream, a gRPC
 * authorization peer speaking Envoy's `Authorization/Check` (grpc-js server) and an HTTP one.
 * Gateway phase (listener policies, before route selection) and route phase, allow with header
 * edits, denials with the service's status/body/headers, failure modes with the peer down,
 * bounded body inclusion, the decision cache, and the HTTP protocol.
 */
import * as grpc from "@grpc/grpc-js"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import * as Proto from "../../src/sidecar/ExtAuthzProto.ts"
import { send } from "../support/Client.ts"
import { allowResponse, type GrpcPeer, type HttpPeer, rawAt, startGrpcPeer, startHttpPeer } from "../support/ExtAuthzPeers.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"

const header = (request: Proto.CheckRequest, name: string) => request.http.headers.find(([k]) => k === name)?.[1]

/** The peer's policy for a request, by the `x-decide` header the test sets. */
const decide = (request: Proto.CheckRequest): Proto.CheckResponse | { grpcError: number } => {
  switch (header(request, "x-decide")) {
    case "deny":
      return {
        code: 7,
        denied: {
          status: 418,
          headers: [{ key: "x-denied-by", value: "peer", appendAction: 0 }, { key: "content-type", value: "application/json", appendAction: 0 }],
          body: "{\"reason\":\"teapot\"}"
        }
      }
    case "deny-bare":
      return { code: 7 }
    case "edit":
      return {
        code: 0,
        ok: {
          headers: [
            { key: "x-user", value: "alice", appendAction: 0 },
            // append_action 0 defers to the deprecated `append` (unset: overwrite), as upstream reads it.
            { key: "x-multi", value: "second", appendAction: 0, append: true },
            { key: "x-once", value: "kept", appendAction: Proto.AppendAction.ADD_IF_ABSENT }
          ],
          headersToRemove: ["x-secret", ":path", "host"],
          queryParametersToSet: [{ key: "tenant", value: "t1" }],
          queryParametersToRemove: ["drop"],
          responseHeadersToAdd: [{ key: "x-authz-trace", value: "abc", appendAction: 0 }]
        },
        dynamicMetadata: { user: "alice" }
      }
    case "error":
      return { grpcError: 13 }
    default:
      return allowResponse
  }
}

describe("extAuthz (gRPC, Envoy Authorization/Check)", () => {
  let upstream: Upstream
  let peer: GrpcPeer
  let gw: Running
  let port: number
  let deadPort: number

  beforeAll(async () => {
    upstream = await startUpstream()
    peer = await startGrpcPeer(decide)
    port = await freePort()
    deadPort = await freePort()
    gw = await startGateway(
      `
binds:
- port: $PORT
  listeners:
  - name: web
    hostname: gateway.test
    policies:
      # Gateway phase: runs before route selection, so even an unrouted path is checked.
      extAuthz:
        host: 127.0.0.1:$PEER
        protocol: {grpc: {context: {phase: gateway}}}
    routes:
    - name: only
      matches: [{path: {pathPrefix: /}}]
      backends: [{host: 127.0.0.1:$UPSTREAM}]
  - name: routes
    routes:
    - name: checked
      matches: [{path: {pathPrefix: /checked}}]
      policies:
        extAuthz:
          host: 127.0.0.1:$PEER
          protocol: {grpc: {context: {phase: route}}}
        transformations:
          request:
            set: {x-seen-user: 'extauthz.user'}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: body
      matches: [{path: {pathPrefix: /body}}]
      policies:
        extAuthz:
          host: 127.0.0.1:$PEER
          includeRequestBody: {maxRequestBytes: 16}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: partial
      matches: [{path: {pathPrefix: /partial}}]
      policies:
        extAuthz:
          host: 127.0.0.1:$PEER
          includeRequestBody: {maxRequestBytes: 16, allowPartialMessage: true, packAsBytes: true}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: cached
      matches: [{path: {pathPrefix: /cached}}]
      policies:
        extAuthz:
          host: 127.0.0.1:$PEER
          includeRequestHeaders: [x-key, x-decide]
          cache: {key: ['request.headers["x-key"]'], ttl: 1m}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: down-deny
      matches: [{path: {pathPrefix: /down/deny}}]
      policies:
        extAuthz: {host: 127.0.0.1:$DEAD}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: down-allow
      matches: [{path: {pathPrefix: /down/allow}}]
      policies:
        extAuthz: {host: 127.0.0.1:$DEAD, failureMode: allow}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: down-status
      matches: [{path: {pathPrefix: /down/status}}]
      policies:
        extAuthz: {host: 127.0.0.1:$DEAD, failureMode: {denyWithStatus: 503}}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: error-allow
      matches: [{path: {pathPrefix: /error}}]
      policies:
        extAuthz: {host: 127.0.0.1:$PEER, failureMode: allow}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: backend-phase
      matches: [{path: {pathPrefix: /backend}}]
      backends:
      - host: 127.0.0.1:$UPSTREAM
        policies:
          extAuthz:
            host: 127.0.0.1:$PEER
            protocol: {grpc: {context: {phase: backend}}}
`,
      { vars: { PORT: port, PEER: peer.port, UPSTREAM: upstream.port, DEAD: deadPort } }
    )
  })

  afterAll(async () => {
    await gw.stop()
    await peer.close()
    await upstream.close()
  })

  beforeEach(() => {
    peer.requests.length = 0
    peer.raw.length = 0
  })

  it("gateway phase: checks before route selection, with the request's attributes", async () => {
    const reply = await send(port, "GET", "/anything?q=1", { host: "gateway.test", "x-decide": "allow", cookie: "a=1" })
    expect(reply.status).toBe(200)
    expect(peer.requests).toHaveLength(1)
    const r = peer.requests[0]!
    expect(r.contextExtensions).toEqual([["phase", "gateway"]])
    expect(r.http.method).toBe("GET")
    expect(r.http.path).toBe("/anything?q=1")
    expect(r.http.host).toBe("gateway.test")
    expect(r.http.scheme).toBe("http")
    expect(r.http.protocol).toBe("HTTP/1.1")
    expect(header(r, ":method")).toBe("GET")
    expect(header(r, ":path")).toBe("/anything?q=1")
    expect(header(r, ":authority")).toBe("gateway.test")
    expect(header(r, "cookie")).toBe("a=1")
    expect(r.source?.address?.address).toBe("127.0.0.1")
    expect(r.destination?.address?.port).toBe(port)
    expect(r.http.id).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/)
    // Hand-check of the raw bytes: attributes(1).request(4).http(2).method(2).
    expect(Buffer.from(rawAt(peer.raw[0]!, [1, 4, 2, 2])[0] as Uint8Array).toString()).toBe("GET")
    // Envoy always sends metadata_context: empty without a verified JWT.
    expect(r.metadata).toEqual([])
  })

  it("gateway phase: a denial needs no route and reaches the client as the service wrote it", async () => {
    const reply = await send(port, "GET", "/", { host: "gateway.test", "x-decide": "deny" })
    expect(reply.status).toBe(418)
    expect(reply.headers["x-denied-by"]).toBe("peer")
    expect(reply.headers["content-type"]).toBe("application/json")
    expect(reply.body).toBe("{\"reason\":\"teapot\"}")
    expect(upstream.received.filter((r) => r.url === "/")).toHaveLength(0)
  })

  it("route phase: header add/remove, query edits, response headers and extauthz.* metadata", async () => {
    const before = upstream.received.length
    const reply = await send(port, "GET", "/checked/x?drop=1&keep=2", { "x-decide": "edit", "x-secret": "s3cr3t", "x-multi": "first", "x-once": "client" })
    expect(reply.status).toBe(200)
    expect(reply.headers["x-authz-trace"]).toBe("abc")
    expect(peer.requests[0]!.contextExtensions).toEqual([["phase", "route"]])
    const got = upstream.received[before]!
    expect(got.url).toBe("/checked/x?keep=2&tenant=t1")
    expect(got.headers["x-user"]).toBe("alice")
    expect(got.headers["x-multi"]).toBe("first, second")
    expect(got.headers["x-once"]).toBe("client")
    expect(got.headers["x-secret"]).toBeUndefined()
    // headers_to_remove never removes the authority.
    expect(got.headers["host"]).toBe(`127.0.0.1:${port}`)
    expect(got.headers["x-seen-user"]).toBe("alice")
  })

  it("route phase: a denial without a response is 403 external authorization failed", async () => {
    const reply = await send(port, "GET", "/checked", { "x-decide": "deny-bare" })
    expect(reply.status).toBe(403)
    expect(reply.headers["content-type"]).toBe("text/plain")
    expect(reply.body).toBe("external authorization failed")
  })

  it("backend phase: checked after the backend is chosen", async () => {
    const reply = await send(port, "GET", "/backend", { "x-decide": "deny" })
    expect(reply.status).toBe(418)
    expect(peer.requests[0]!.contextExtensions).toEqual([["phase", "backend"]])
  })

  it("body: up to maxRequestBytes goes to the service and the upstream still gets it whole", async () => {
    const before = upstream.received.length
    const reply = await send(port, "POST", "/body/echo", { "content-type": "text/plain" }, { body: "small body" })
    expect(reply.status).toBe(200)
    expect(peer.requests[0]!.http.body).toBe("small body")
    expect(peer.requests[0]!.http.size).toBe(10)
    expect(JSON.parse(reply.body).body).toBe("small body")
    expect(upstream.received.length).toBe(before + 1)
  })

  it("body: over maxRequestBytes is 413 without asking the service", async () => {
    const reply = await send(port, "POST", "/body/echo", {}, { body: "x".repeat(17) })
    expect(reply.status).toBe(413)
    expect(reply.body).toBe("external authorization failed")
    expect(peer.requests).toHaveLength(0)
  })

  it("body: allowPartialMessage sends the prefix as raw bytes (size -1); the upstream gets all of it", async () => {
    const body = "0123456789abcdef-and-the-rest"
    const reply = await send(port, "POST", "/partial", {}, { body })
    expect(reply.status).toBe(200)
    const r = peer.requests[0]!
    expect(Buffer.from(r.http.rawBody).toString()).toBe("0123456789abcdef")
    expect(r.http.body).toBe("")
    expect(r.http.size).toBe(-1)
    expect(JSON.parse(reply.body).body).toBe(body)
  })

  it("cache: the same key is decided once; another key asks again", async () => {
    for (let i = 0; i < 3; i++) expect((await send(port, "GET", "/cached", { "x-key": "k1", "x-decide": "deny" })).status).toBe(418)
    expect(peer.requests).toHaveLength(1)
    expect((await send(port, "GET", "/cached", { "x-key": "k2" })).status).toBe(200)
    expect(peer.requests).toHaveLength(2)
    // includeRequestHeaders: only the listed ones, no pseudo-headers.
    expect(peer.requests[1]!.http.headers).toEqual([["x-key", "k2"]])
  })

  it("peer down: deny (default) 403, allow forwards, denyWithStatus answers that status", async () => {
    const deny = await send(port, "GET", "/down/deny")
    expect(deny.status).toBe(403)
    expect(deny.body).toBe("external authorization failed")
    const allow = await send(port, "GET", "/down/allow")
    expect(allow.status).toBe(200)
    expect(JSON.parse(allow.body).url).toBe("/down/allow")
    const status = await send(port, "GET", "/down/status")
    expect(status.status).toBe(503)
    expect(status.body).toBe("Authorization service unavailable")
  })

  it("a gRPC error status is no decision: failureMode allow forwards", async () => {
    const reply = await send(port, "GET", "/error", { "x-decide": "error" })
    expect(reply.status).toBe(200)
    expect(peer.requests).toHaveLength(1)
  })
})

describe("extAuthz (HTTP protocol)", () => {
  let upstream: Upstream
  let peer: HttpPeer
  let gw: Running
  let port: number

  beforeAll(async () => {
    upstream = await startUpstream()
    peer = await startHttpPeer((call) =>
      call.headers["authorization"] === "Bearer good"
        ? { status: 200, headers: { "x-user-id": "u-42" } }
        : { status: 401, headers: { "www-authenticate": "Bearer", "x-reason": "bad token" }, body: "go away" }
    )
    port = await freePort()
    gw = await startGateway(
      `
binds:
- port: $PORT
  listeners:
  - routes:
    - name: http
      policies:
        extAuthz:
          host: 127.0.0.1:$PEER
          protocol:
            http:
              path: '"/verify" + request.path'
              includeResponseHeaders: [x-user-id]
              addRequestHeaders: {x-original-method: request.method}
          includeRequestBody: {maxRequestBytes: 64}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
`,
      { vars: { PORT: port, PEER: peer.port, UPSTREAM: upstream.port } }
    )
  })

  afterAll(async () => {
    await gw.stop()
    await peer.close()
    await upstream.close()
  })

  it("2xx allows and copies includeResponseHeaders onto the upstream request", async () => {
    const reply = await send(port, "POST", "/orders", { authorization: "Bearer good", "x-noise": "n" }, { body: "{\"id\":1}" })
    expect(reply.status).toBe(200)
    const echoed = JSON.parse(reply.body)
    expect(echoed.headers["x-user-id"]).toBe("u-42")
    expect(echoed.body).toBe("{\"id\":1}")
    const call = peer.calls.at(-1)!
    expect(call.method).toBe("POST")
    expect(call.url).toBe("/verify/orders")
    expect(call.headers["authorization"]).toBe("Bearer good")
    expect(call.headers["x-noise"]).toBeUndefined()
    expect(call.headers["x-original-method"]).toBe("POST")
    expect(call.headers["x-envoy-auth-partial-body"]).toBe("false")
    expect(call.body).toBe("{\"id\":1}")
  })

  it("non-2xx: the service's status, headers and body go to the client", async () => {
    const before = upstream.received.length
    const reply = await send(port, "GET", "/orders", { authorization: "Bearer bad" })
    expect(reply.status).toBe(401)
    expect(reply.headers["www-authenticate"]).toBe("Bearer")
    expect(reply.headers["x-reason"]).toBe("bad token")
    expect(reply.body).toBe("go away")
    expect(upstream.received.length).toBe(before)
  })
})

describe("extAuthz (gRPC over TLS, from the side-service's backendTLS)", () => {
  const dir = path.resolve(import.meta.dirname, "../fixtures/tls")
  let upstream: Upstream
  let peer: GrpcPeer
  let gw: Running
  let port: number

  beforeAll(async () => {
    upstream = await startUpstream()
    const credentials = grpc.ServerCredentials.createSsl(null, [{
      cert_chain: fs.readFileSync(path.join(dir, "server.pem")),
      private_key: fs.readFileSync(path.join(dir, "server.key"))
    }])
    peer = await startGrpcPeer(() => allowResponse, credentials)
    port = await freePort()
    const route = (name: string, tls: string) => `
    - name: ${name}
      matches: [{path: {pathPrefix: /${name}}}]
      policies:
        extAuthz:
          host: 127.0.0.1:$PEER
          policies:
            backendTLS: ${tls}
            requestHeaderModifier: {set: {x-api-key: side-secret}}
      backends: [{host: 127.0.0.1:$UPSTREAM}]`
    gw = await startGateway(
      `
binds:
- port: $PORT
  listeners:
  - routes:${route("verified", `{root: ${path.join(dir, "ca.pem")}, hostname: a.example.com}`)}${route("wrongname", `{root: ${path.join(dir, "ca.pem")}, hostname: wrong.example.com}`)}${route("untrusted", "{}")}
`,
      { vars: { PORT: port, PEER: peer.port, UPSTREAM: upstream.port } }
    )
  })

  afterAll(async () => {
    await gw.stop()
    await peer.close()
    await upstream.close()
  })

  it("verifies the service's certificate with backendTLS and sends requestHeaderModifier as metadata", async () => {
    const reply = await send(port, "GET", "/verified")
    expect(reply.status).toBe(200)
    expect(peer.requests).toHaveLength(1)
    expect(peer.metadata[0]!.get("x-api-key")).toEqual(["side-secret"])
  })

  it("a certificate that fails verification is no decision: 403", async () => {
    const before = peer.requests.length
    for (const name of ["wrongname", "untrusted"]) {
      const reply = await send(port, "GET", `/${name}`)
      expect(reply.status).toBe(403)
      expect(reply.body).toBe("external authorization failed")
    }
    expect(peer.requests.length).toBe(before)
  })
})
