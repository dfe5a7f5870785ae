/**
 * The HTTP data plane end to end: real gateway, real upstream, real sockets.
 */
import * as http from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { rawRequest } from "../support/RawHttp.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"

let upstream: Upstream
let gw: Running
let port: number
let closedPort: number

const config = `
backends:
- name: named
  host: 127.0.0.1:$UPSTREAM
  policies:
    requestHeaderModifier:
      set: {x-from-named: "1"}
binds:
- port: $PORT
  listeners:
  - name: main
    routes:
    - name: proxied
      matches:
      - path: {pathPrefix: /api}
      backends:
      - host: 127.0.0.1:$UPSTREAM
    - name: by-name
      matches:
      - path: {pathPrefix: /named}
      backends:
      - backend: named
    - name: hostname-backend
      matches:
      - path: {pathPrefix: /hostname}
      backends:
      - host: localhost:$UPSTREAM
    - name: down
      matches:
      - path: {pathPrefix: /down}
      backends:
      - host: 127.0.0.1:$CLOSED
    - name: empty
      matches:
      - path: {pathPrefix: /empty}
    - name: weighted
      matches:
      - path: {pathPrefix: /weighted}
      backends:
      - host: 127.0.0.1:$CLOSED
        weight: 0
      - host: 127.0.0.1:$UPSTREAM
        weight: 3
    - name: with-cors
      matches:
      - path: {pathPrefix: /cors}
      policies:
        cors: {allowOrigins: ["https://app.example"], exposeHeaders: [x-upstream]}
      backends:
      - host: 127.0.0.1:$CLOSED
    - name: direct-with-header
      matches:
      - path: {exact: /direct}
      policies:
        responseHeaderModifier: {set: {x-route: direct}}
        directResponse: {status: 201, body: created}
`

beforeAll(async () => {
  upstream = await startUpstream()
  port = await freePort()
  closedPort = await freePort()
  gw = await startGateway(config, { vars: { PORT: port, UPSTREAM: upstream.port, CLOSED: closedPort } })
})
afterAll(async () => {
  await gw.stop()
  await upstream.close()
})

interface Echo {
  readonly method: string
  readonly url: string
  readonly headers: Record<string, string>
  readonly body: string
}

describe("proxying", () => {
  it("forwards method, normalised path, raw query and headers; returns the upstream response", async () => {
    const res = await fetch(gw.url(port, "/api/a/../b?x=%2F&y=1"), { headers: { "x-custom": "v" } })
    expect(res.status).toBe(200)
    expect(res.headers.get("x-upstream")).toBe("yes")
    const echo = (await res.json()) as Echo
    expect(echo.method).toBe("GET")
    expect(echo.url).toBe("/api/b?x=%2F&y=1")
    expect(echo.headers["x-custom"]).toBe("v")
    // IP backends keep the client's Host.
    expect(echo.headers["host"]).toBe(`127.0.0.1:${port}`)
  })

  it("rewrites Host for hostname backends", async () => {
    const echo = (await (await fetch(gw.url(port, "/hostname"))).json()) as Echo
    expect(echo.headers["host"]).toBe(`localhost:${upstream.port}`)
  })

  it("uses named backends with their own policies", async () => {
    const echo = (await (await fetch(gw.url(port, "/named/x"))).json()) as Echo
    expect(echo.url).toBe("/named/x")
    expect(echo.headers["x-from-named"]).toBe("1")
  })

  it("strips hop-by-hop headers and the headers Connection names, both ways", async () => {
    const raw = await rawRequest(
      port,
      `GET /api/hopcheck HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, x-internal-auth\r\nx-internal-auth: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers, deflate\r\nProxy-Connection: keep-alive\r\nx-kept: 1\r\n\r\n`
    )
    expect(raw.status).toBe(200)
    const echo = JSON.parse(raw.body) as Echo
    expect(echo.headers["x-internal-auth"]).toBeUndefined()
    expect(echo.headers["keep-alive"]).toBeUndefined()
    expect(echo.headers["proxy-connection"]).toBeUndefined()
    expect(echo.headers["te"]).toBe("trailers")
    expect(echo.headers["x-kept"]).toBe("1")
    const res = await rawRequest(port, `GET /api/hop HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`)
    expect(res.head).not.toMatch(/x-internal/i)
    expect(res.head).toMatch(/x-ok: 1/i)
  })

  it("streams request bodies to the upstream and responses back (1 MiB round trip)", async () => {
    const payload = Buffer.alloc(1024 * 1024)
    for (let i = 0; i < payload.length; i++) payload[i] = i % 251
    const ok = await fetch(gw.url(port, "/api/body"), { method: "POST", body: payload })
    expect(ok.status).toBe(200)
    const back = Buffer.from(await ok.arrayBuffer())
    expect(back.equals(payload)).toBe(true)
  })

  // RequestBody.smallFirst: a small declared body is read before the exchange starts (it keeps
  // young-generation GCs cheap); a larger one still streams as it arrives.
  it("sends a small declared body once it has arrived, and streams a larger one as it arrives", async () => {
    const exchange = async (length: number, first: number) => {
      const before = upstream.received.length
      const body = "z".repeat(length)
      let reachedEarly = false
      const answer = await rawRequest(port, async (write) => {
        write(`POST /api/body HTTP/1.1\r\nhost: gw.test\r\ncontent-length: ${length}\r\nconnection: close\r\n\r\n${body.slice(0, first)}`)
        await new Promise((resolve) => setTimeout(resolve, 300))
        reachedEarly = upstream.received.length > before
        write(body.slice(first))
      })
      return { reachedEarly, status: answer.status, echoed: answer.body === body }
    }
    // Half of it first: a streamed body would reach the upstream with its first bytes.
    const small = await exchange(10, 5)
    expect(small).toEqual({ reachedEarly: false, status: 200, echoed: true })
    const large = await exchange(32 * 1024, 1024)
    expect(large).toEqual({ reachedEarly: true, status: 200, echoed: true })
  })

  it("delivers streamed chunks as they arrive, before the upstream finishes", async () => {
    const started = performance.now()
    const res = await fetch(gw.url(port, "/api/stream?chunks=3&ms=300"))
    expect(res.headers.get("content-type")).toBe("text/event-stream")
    const reader = res.body!.getReader()
    const first = await reader.read()
    const firstAt = performance.now() - started
    expect(new TextDecoder().decode(first.value)).toContain("chunk0")
    // the whole stream takes ≥ 600 ms; the first chunk must not wait for it
    expect(firstAt).toBeLessThan(450)
    let rest = ""
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      rest += new TextDecoder().decode(value)
    }
    expect(rest).toContain("chunk2")
  })

  it("never chooses a backend with weight 0", async () => {
    for (let i = 0; i < 20; i++) expect((await fetch(gw.url(port, "/weighted"))).status).toBe(200)
  })
})

describe("errors map to agentgateway's statuses and short bodies", () => {
  it("unreachable upstream → 503 `upstream call failed`, no internals", async () => {
    const res = await fetch(gw.url(port, "/down"))
    expect(res.status).toBe(503)
    expect(res.headers.get("content-type")).toBe("text/plain")
    expect(await res.text()).toBe("upstream call failed")
  })

  it("no backends → 500 `no valid backends`", async () => {
    const res = await fetch(gw.url(port, "/empty"))
    expect(res.status).toBe(500)
    expect(await res.text()).toBe("no valid backends")
  })

  it("no route → 404 `route not found`", async () => {
    const res = await fetch(gw.url(port, "/nothing-here"))
    expect(res.status).toBe(404)
    expect(await res.text()).toBe("route not found")
  })

  it("CORS headers also reach error responses; response policies apply to direct responses", async () => {
    const res = await fetch(gw.url(port, "/cors"), { headers: { origin: "https://app.example" } })
    expect(res.status).toBe(503)
    expect(res.headers.get("access-control-allow-origin")).toBe("https://app.example")
    expect(res.headers.get("access-control-expose-headers")).toBe("x-upstream")
    const direct = await fetch(gw.url(port, "/direct"))
    expect(direct.status).toBe(201)
    expect(direct.headers.get("x-route")).toBe("direct")
    expect(await direct.text()).toBe("created")
  })
})

describe("bad input the HTTP parser lets through", () => {
  it("duplicate Host → 400", async () => {
    const res = await rawRequest(port, `GET /api HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n`)
    expect(res.status).toBe(400)
    expect(res.body).toBe("invalid request")
  })

  it("underscore in a header name → 400", async () => {
    const res = await rawRequest(port, `GET /api HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n`)
    expect(res.status).toBe(400)
  })

  it("Transfer-Encoding on HTTP/1.0 → 400 and the connection is closed", async () => {
    const res = await rawRequest(port, `POST /api HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`)
    expect(res.status).toBe(400)
    expect(res.head.toLowerCase()).toContain("connection: close")
  })

  it.each([
    ["/api/a%2fb", "encoded slash"],
    ["/api/a%5cb", "encoded backslash"],
    ["/api/a\\b", "backslash"],
    ["/api/a%zz", "bad escape"]
  ])("request target %s (%s) → 400", async (target) => {
    const res = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: a\r\n\r\n`)
    expect(res.status).toBe(400)
  })

  it("`//host` targets stay paths (never a host) and dot segments are resolved before routing", async () => {
    const res = await rawRequest(port, `GET //api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
    expect(res.status).toBe(200)
    expect((JSON.parse(res.body) as Echo).url).toBe("/api/x")
    const escaped = await rawRequest(port, `GET /public/%2e%2e/api/y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
    expect((JSON.parse(escaped.body) as Echo).url).toBe("/api/y")
  })

  it("absolute-form targets route on their authority", async () => {
    const res = await rawRequest(port, `GET http://elsewhere.example/api/abs HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
    expect(res.status).toBe(200)
    expect((JSON.parse(res.body) as Echo).headers["host"]).toBe("elsewhere.example")
  })

  it("more than 100 headers → 431; an oversized head → 431", async () => {
    const many = Array.from({ length: 101 }, (_, i) => `x-h${i}: v\r\n`).join("")
    expect((await rawRequest(port, `GET /api HTTP/1.1\r\nHost: a\r\n${many}\r\n`)).status).toBe(431)
    const big = `x-big: ${"a".repeat(20 * 1024)}\r\n`
    expect((await rawRequest(port, `GET /api HTTP/1.1\r\nHost: a\r\n${big}\r\n`)).status).toBe(431)
  })

  it("a request target over 8 KiB → 414 `uri too long`, nothing sent upstream; 8 KiB exactly is served", async () => {
    const before = upstream.received.length
    const long = await rawRequest(port, `GET /api/${"a".repeat(9 * 1024)} HTTP/1.1\r\nHost: a\r\n\r\n`)
    expect(long.status).toBe(414)
    expect(long.body).toBe("uri too long")
    expect(upstream.received.length).toBe(before)
    const target = `/api/${"b".repeat(8 * 1024 - 5)}`
    expect(target.length).toBe(8 * 1024)
    const fits = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
    expect(fits.status).toBe(200)
  })

  it("a bad pipelined request while a response streams cuts the connection instead of writing a 400 into the body", async () => {
    const net = await import("node:net")
    const data = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1")
      let received = ""
      socket.setEncoding("latin1")
      socket.on("data", (c: string) => {
        received += c
        // Once the streamed response has begun, a broken second request follows on the same connection.
        if (received.includes("\r\n\r\n") && !socket.destroyed && socket.writable) socket.write("\x01junk\r\n\r\n")
      })
      socket.on("close", () => resolve(received))
      socket.on("error", reject)
      socket.write("GET /api/stream?chunks=20&ms=50 HTTP/1.1\r\nHost: a\r\n\r\n")
    })
    expect(data).toMatch(/^HTTP\/1\.1 200/)
    expect(data).not.toContain("400 Bad Request")
  })

  it("a malformed request line gets 400 from the parser and the process stays up", async () => {
    expect((await rawRequest(port, `GARBAGE\r\n\r\n`)).status).toBe(400)
    expect((await fetch(gw.url(port, "/direct"))).status).toBe(201)
  })

  it("a client that disconnects mid-stream does not take the gateway down", async () => {
    await new Promise<void>((resolve) => {
      const req = http.get(gw.url(port, "/api/stream?chunks=20&ms=20"), (res) => {
        res.once("data", () => {
          req.destroy()
          resolve()
        })
      })
      req.on("error", () => undefined)
    })
    await new Promise((r) => setTimeout(r, 100))
    expect((await fetch(gw.url(port, "/direct"))).status).toBe(201)
  })
})

describe("request smuggling and header tricks (security.md §5 #1, #2, #15)", () => {
  const SMUGGLING: Record<string, string> = {
    "Content-Length with Transfer-Encoding": "POST /api/s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two different Content-Lengths": "POST /api/s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello",
    "two equal Content-Lengths": "POST /api/s HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "a Content-Length list": "POST /api/s HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
    "Transfer-Encoding xchunked": "POST /api/s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "Transfer-Encoding chunked, identity": "POST /api/s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "a space before the colon": "POST /api/s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "an obs-fold continuation line": "GET /api/s HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n",
    "bare LF line endings": "GET /api/s HTTP/1.1\nHost: a\nX-A: 1\n\n",
    "a bare CR inside the head": "GET /api/s HTTP/1.1\r\nHost: a\r\nX-A: 1\r\rX-B: 2\r\n\r\n"
  }
  for (const [name, request] of Object.entries(SMUGGLING)) {
    it(`${name} → 400, nothing reaches the upstream`, async () => {
      const before = upstream.received.length
      const res = await rawRequest(port, request, 1500)
      expect(res.status).toBe(400)
      expect(res.head).toMatch(/\r\nconnection: close/i)
      expect(upstream.received.length).toBe(before)
    })
  }

  it("a GET with a body: exactly Content-Length bytes go upstream, and the next pipelined request stays its own", async () => {
    const net = await import("node:net")
    const before = upstream.received.length
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1")
      let data = ""
      socket.setEncoding("latin1")
      socket.on("data", (c: string) => (data += c))
      socket.on("close", () => resolve(data))
      socket.on("error", reject)
      socket.write("GET /api/first HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /api/second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    })
    expect(raw.match(/^HTTP\/1\.1 200/gm)).toHaveLength(2)
    // Two upstream exchanges, in either order: the first waits for its (small) body, the second has none.
    const seen = upstream.received.slice(before).sort((a, b) => a.url.localeCompare(b.url))
    expect(seen.map((r) => r.url)).toEqual(["/api/first", "/api/second"])
    expect(seen[0]!.headers["content-length"]).toBe("5")
    expect(raw).toContain(`"body":"hello"`)
    expect(seen[1]!.headers["content-length"]).toBeUndefined()
  })

  it("prototype-named headers: __proto__ is refused (underscore), constructor & co. are plain headers", async () => {
    const proto = await rawRequest(port, "GET /api/p HTTP/1.1\r\nHost: a\r\n__proto__: x\r\nConnection: close\r\n\r\n")
    expect(proto.status).toBe(400)
    const res = await rawRequest(port, "GET /api/p HTTP/1.1\r\nHost: a\r\nconstructor: evil\r\nhasOwnProperty: y\r\ntoString: z\r\nConnection: close\r\n\r\n")
    expect(res.status).toBe(200)
    const seen = upstream.received.at(-1)!.headers
    expect(seen["constructor"]).toBe("evil")
    expect(seen["hasownproperty"]).toBe("y")
    expect(seen["tostring"]).toBe("z")
    // The gateway's own objects were not touched.
    expect(Object.prototype.hasOwnProperty.call(Object.prototype, "evil")).toBe(false)
    expect(typeof ({} as { toString: unknown }).toString).toBe("function")
  })
})

describe("slow clients", () => {
  it("a client that never finishes its headers is cut off after the header-read deadline", async () => {
    const { HEADERS_TIMEOUT_MS, CONNECTION_CHECK_MS } = await import("../../src/listeners/Listeners.ts")
    const net = await import("node:net")
    const started = performance.now()
    const closedAfter = await new Promise<number>((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => socket.write("GET /api HTTP/1.1\r\nHost: a\r\nX-Slow: "))
      const drip = setInterval(() => socket.write("a"), 500)
      socket.on("data", () => undefined)
      socket.on("close", () => {
        clearInterval(drip)
        resolve(performance.now() - started)
      })
      socket.on("error", () => undefined)
    })
    expect(closedAfter).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - 100)
    expect(closedAfter).toBeLessThan(HEADERS_TIMEOUT_MS + CONNECTION_CHECK_MS + 1500)
  }, 20_000)
})

describe("refused requests", () => {
  it("are logged and counted, with the reason in the log only", async () => {
    const before = gw.logs.length
    const res = await rawRequest(port, `GET /api/a%2fb HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
    expect(res.body).toBe("invalid request")
    await new Promise((r) => setTimeout(r, 50))
    const line = gw.logs.slice(before).find((l) => l.includes("http.status=400"))
    expect(line).toContain('error="encoded slash or backslash in path"')
    const metrics = await (await fetch(`http://127.0.0.1:${gw.ports.stats}/metrics`)).text()
    expect(metrics).toMatch(/agentgateway_requests_total\{[^}]*status="400",reason="InvalidRequest"[^}]*\} \d+/)
  })

  it("CONNECT → 405", async () => {
    const res = await rawRequest(port, `CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n`)
    expect(res.status).toBe(405)
  })
})
