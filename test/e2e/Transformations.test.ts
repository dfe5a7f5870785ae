/**
 * transformations (gateway, route and backend phase), CEL direct responses and retry
 * conditions through real sockets: the real gateway from YAML, a real upstream.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"
import { type Reply, send } from "../support/Client.ts"


const echoed = (reply: Reply) => JSON.parse(reply.body) as { method: string; url: string; headers: Record<string, string>; body: string }

describe("transformations and CEL direct responses over real sockets", () => {
  let upstream: Upstream
  let gw: Running
  let port: number

  beforeAll(async () => {
    upstream = await startUpstream()
    port = await freePort()
    gw = await startGateway(
      `
frontendPolicies:
  http: {maxBufferSize: 256}
binds:
- port: $PORT
  listeners:
  - policies:
      transformations:
        request: {set: {x-gateway: '"gw"'}}
        response: {set: {x-gateway-seen: 'default(metadata.route, "none")'}}
    routes:
    - name: rewrite
      matches: [{path: {pathPrefix: /t}}]
      policies:
        transformations:
          request:
            metadata: {route: '"rewrite"'}
            set:
              x-from-client: 'request.headers["x-in"] + "-seen"'
              ":path": '"/rewritten" + request.path.stripPrefix("/t") + "?q=" + request.headers["x-in"]'
              ":method": '"PUT"'
            remove: [x-secret]
          response:
            set: {x-upstream-url: 'json(response.body).url', ":status": "202"}
            body: 'toJson({"seen": json(response.body).method, "metadata": metadata.route})'
      backends:
      - host: 127.0.0.1:$UPSTREAM
        policies:
          transformations:
            request: {add: {x-backend: '"be"'}}
    - name: big
      matches: [{path: {pathPrefix: /big}}]
      policies:
        transformations:
          response:
            set: {x-has-body: 'string(has(response.body))'}
            body: 'response.body + b"!"'
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: direct
      matches: [{path: {pathPrefix: /direct}}]
      policies:
        transformations:
          response:
            set: {":status": "201", x-transformed: '"yes"'}
        directResponse:
          status: 200
          headers: {x-path: request.path}
          bodyExpression: '"hello " + request.headers["x-name"]'
    - name: conditional
      matches: [{path: {pathPrefix: /cond}}]
      policies:
        transformations:
          conditional:
          - condition: 'request.headers["x-env"] == "canary"'
            request: {set: {x-branch: '"canary"'}}
          - request: {set: {x-branch: '"stable"'}}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
    - name: retry-condition
      matches: [{path: {pathPrefix: /retry}}]
      policies:
        retry: {codes: [], condition: 'response.code == 404', precondition: 'request.method == "GET"'}
      backends: [{host: 127.0.0.1:$UPSTREAM}]
`,
      { vars: { PORT: port, UPSTREAM: upstream.port } }
    )
  })

  afterAll(async () => {
    await gw.stop()
    await upstream.close()
  })

  it("route, backend and gateway transformations edit what the upstream gets and what the client gets", async () => {
    const reply = await send(port, "GET", "/t/items", { "x-in": "abc", "x-secret": "s" })
    expect(reply.status).toBe(202)
    expect(reply.headers["x-upstream-url"]).toBe("/rewritten/items?q=abc")
    expect(reply.headers["x-gateway-seen"]).toBe("rewrite")
    expect(JSON.parse(reply.body)).toEqual({ seen: "PUT", metadata: "rewrite" })
    expect(reply.headers["content-length"]).toBe(String(Buffer.byteLength(reply.body)))
    const seen = upstream.received.at(-1)!
    expect(seen.method).toBe("PUT")
    expect(seen.url).toBe("/rewritten/items?q=abc")
    expect(seen.headers["x-from-client"]).toBe("abc-seen")
    expect(seen.headers["x-gateway"]).toBe("gw")
    expect(seen.headers["x-backend"]).toBe("be")
    expect(seen.headers["x-secret"]).toBeUndefined()
  })

  it("a failing header expression removes the header instead of passing the client's through", async () => {
    const reply = await send(port, "GET", "/t/x", { "x-from-client": "forged" })
    // x-in is missing: the expression errors, and x-from-client is removed.
    expect(upstream.received.at(-1)!.headers["x-from-client"]).toBeUndefined()
    expect(reply.status).toBe(202)
  })

  it("over maxBufferSize the upstream body streams through untouched and response.body is absent", async () => {
    const small = await send(port, "POST", "/big/body", { "content-type": "text/plain" }, { body: "tiny" })
    expect(small.body).toBe("tiny!")
    expect(small.headers["x-has-body"]).toBe("true")
    const payload = "x".repeat(5000)
    const big = await send(port, "POST", "/big/body", { "content-type": "text/plain" }, { body: payload })
    expect(big.status).toBe(200)
    expect(big.headers["x-has-body"]).toBe("false")
    expect(big.body).toBe(payload)
  })

  it("a CEL direct response gets the route's response transformation", async () => {
    const reply = await send(port, "GET", "/direct/me", { "x-name": "agw" })
    expect(reply.status).toBe(201)
    expect(reply.body).toBe("hello agw")
    expect(reply.headers["x-path"]).toBe("/direct/me")
    expect(reply.headers["x-transformed"]).toBe("yes")
    expect(reply.headers["x-gateway-seen"]).toBe("none")
  })

  it("conditional transformations pick the first matching entry", async () => {
    expect(echoed(await send(port, "GET", "/cond", { "x-env": "canary" })).headers["x-branch"]).toBe("canary")
    expect(echoed(await send(port, "GET", "/cond")).headers["x-branch"]).toBe("stable")
  })

  it("retry condition retries a response it matches; the precondition turns retries off", async () => {
    const before = upstream.received.length
    const get = await send(port, "GET", "/retry/status/404")
    expect(get.status).toBe(404)
    expect(upstream.received.length - before).toBe(2)
    expect(upstream.received.at(-1)!.headers["x-retry-attempt"]).toBe("1")
    const post = await send(port, "POST", "/retry/status/404")
    expect(post.status).toBe(404)
    expect(upstream.received.length - before).toBe(3)
  })
})
