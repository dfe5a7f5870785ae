/**
 * timeout, retry, requestMirror and delay through real sockets: a scripted upstream that fails
 * on purpose, a mirror upstream, a closed port, and clients that give up early.
 */
import * as net from "node:net"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as http from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { validate } from "../../src/Gateway.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { startUpstream, type Upstream } from "../support/Upstream.ts"

interface Seen {
  readonly url: string
  readonly method: string
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
  /** True when the gateway closed the exchange before the response was finished. */
  abandoned: boolean
}

/**
 * An upstream scripted by path: `/fail/<key>/<n>/<status>` answers `status` to the first `n`
 * requests of `<key>` and 200 after; `/reset/<key>/<n>` destroys the socket of the first `n`;
 * `/hang/<key>` never answers; `/slow-then/<key>/<status>` answers `status` at once to the
 * first request and nothing to the next. Segments before the keyword are ignored (route
 * prefixes). Everything it received is recorded, bodies included.
 */
const KEYWORDS = new Set(["fail", "reset", "hang", "slow-then"])

const startScripted = async () => {
  const seen: Array<Seen> = []
  const counts = new Map<string, number>()
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const entry: Seen = { url: req.url ?? "", method: req.method ?? "", headers: req.headers, body: Buffer.concat(chunks).toString(), abandoned: false }
      seen.push(entry)
      res.on("close", () => void (entry.abandoned = !res.writableFinished))
      const all = new URL(req.url ?? "/", "http://x").pathname.split("/").filter((p) => p !== "")
      // Anything before the keyword is the gateway route's prefix.
      const parts = all.slice(Math.max(all.findIndex((p) => KEYWORDS.has(p)), 0))
      const key = `${parts[0]}/${parts[1]}`
      const n = (counts.get(key) ?? 0) + 1
      counts.set(key, n)
      const answer = (status: number, body: string) => {
        res.writeHead(status, { "content-type": "text/plain", "x-attempt": String(n) })
        res.end(body)
      }
      switch (parts[0]) {
        case "fail":
          return n <= Number(parts[2]) ? answer(Number(parts[3]), `failure ${n}`) : answer(200, `ok after ${n}`)
        case "reset":
          return n <= Number(parts[2]) ? req.socket.destroy() : answer(200, `ok after ${n}`)
        case "hang":
          return
        case "slow-then":
          return n === 1 ? answer(Number(parts[2]), "first") : undefined
        default:
          return answer(200, "plain")
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  return {
    port,
    seen,
    of: (prefix: string) => seen.filter((s) => s.url.startsWith(prefix)),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
  }
}

const eventually = async (check: () => boolean, ms = 3000): Promise<void> => {
  const until = Date.now() + ms
  while (!check()) {
    if (Date.now() > until) throw new Error("condition not met in time")
    await new Promise((r) => setTimeout(r, 20))
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

let scripted: Awaited<ReturnType<typeof startScripted>>
let mirror: Awaited<ReturnType<typeof startScripted>>
let echo: Upstream
let gw: Running
let port: number
let closedPort: number
/** Accepts and at once drops every connection: a backend that fails every attempt, on a port no other test can take. */
let dropper: net.Server

beforeAll(async () => {
  scripted = await startScripted()
  mirror = await startScripted()
  echo = await startUpstream()
  port = await freePort()
  dropper = net.createServer((socket) => socket.destroy())
  await new Promise<void>((resolve) => dropper.listen(0, "127.0.0.1", resolve))
  const address = dropper.address()
  closedPort = typeof address === "object" && address !== null ? address.port : 0
  gw = await startGateway(
    `
binds:
- port: $PORT
  listeners:
  - routes:
    - name: retry
      matches: [{path: {pathPrefix: /fail}}, {path: {pathPrefix: /reset}}]
      policies:
        retry: {attempts: 2, codes: [503]}
      backends: [{host: 127.0.0.1:$SCRIPTED}]
    - name: retry-default
      matches: [{path: {pathPrefix: /default}}]
      policies:
        retry: {codes: [429]}
      backends: [{host: 127.0.0.1:$SCRIPTED}]
    - name: retry-closed
      matches: [{path: {pathPrefix: /closed}}]
      policies:
        retry: {attempts: 2, codes: []}
      backends: [{host: 127.0.0.1:$CLOSED}]
    - name: request-timeout
      matches: [{path: {pathPrefix: /hang}}]
      policies:
        timeout: {requestTimeout: 300ms}
      backends: [{host: 127.0.0.1:$SCRIPTED}]
    - name: backend-timeout
      matches: [{path: {pathPrefix: /slow-then}}]
      policies:
        timeout: {backendRequestTimeout: 300ms}
        retry: {codes: [503]}
      backends: [{host: 127.0.0.1:$SCRIPTED}]
    - name: timeout-over-backoff
      matches: [{path: {pathPrefix: /backoff}}]
      policies:
        timeout: {requestTimeout: 300ms}
        retry: {codes: [503], backoff: 10s}
      backends: [{host: 127.0.0.1:$SCRIPTED}]
    - name: cancel
      matches: [{path: {pathPrefix: /cancel}}]
      policies:
        retry: {codes: [503], backoff: 1s}
      backends: [{host: 127.0.0.1:$SCRIPTED}]
    - name: mirrored
      matches: [{path: {pathPrefix: /mirrored}}]
      policies:
        requestMirror: {backend: {host: 127.0.0.1:$MIRROR}, percentage: 1}
      backends: [{host: 127.0.0.1:$ECHO}]
    - name: mirrored-named
      matches: [{path: {pathPrefix: /named}}]
      policies:
        requestMirror: {backend: {backend: shadow}, percentage: 1.0}
      backends: [{host: 127.0.0.1:$ECHO}]
    - name: mirror-hangs
      matches: [{path: {pathPrefix: /hang-mirror}}]
      policies:
        requestMirror: {backend: {host: 127.0.0.1:$MIRROR}, percentage: 1}
      backends: [{host: 127.0.0.1:$ECHO}]
    - name: mirror-dead
      matches: [{path: {pathPrefix: /dead-mirror}}]
      policies:
        requestMirror: {backend: {host: 127.0.0.1:$CLOSED}, percentage: 1}
      backends: [{host: 127.0.0.1:$ECHO}]
    - name: delayed
      matches: [{path: {pathPrefix: /delayed}}]
      policies:
        delay: {duration: 200ms}
      backends: [{host: 127.0.0.1:$SCRIPTED}]
    - name: delayed-long
      matches: [{path: {pathPrefix: /delay-cancel}}]
      policies:
        delay: {duration: 1s}
      backends: [{host: 127.0.0.1:$SCRIPTED}]
backends:
- name: shadow
  host: 127.0.0.1:$MIRROR
  policies:
    requestHeaderModifier: {set: {x-shadow: "yes"}}
`,
    { vars: { PORT: port, SCRIPTED: scripted.port, MIRROR: mirror.port, ECHO: echo.port, CLOSED: closedPort } }
  )
})
afterAll(async () => {
  await gw.stop()
  await Promise.all([scripted.close(), mirror.close(), echo.close(), new Promise<void>((resolve) => dropper.close(() => resolve()))])
})

describe("retry", () => {
  it("retries a status in codes, numbering each retry with x-retry-attempt", async () => {
    const res = await fetch(gw.url(port, "/fail/a/2/503"))
    expect(res.status).toBe(200)
    expect(await res.text()).toBe("ok after 3")
    expect(scripted.of("/fail/a/").map((s) => s.headers["x-retry-attempt"])).toEqual([undefined, "1", "2"])
  })

  it("answers the last response when retries run out", async () => {
    const res = await fetch(gw.url(port, "/fail/b/9/503"))
    expect(res.status).toBe(503)
    expect(await res.text()).toBe("failure 3")
    expect(scripted.of("/fail/b/")).toHaveLength(3)
  })

  it("attempts defaults to one retry", async () => {
    const res = await fetch(gw.url(port, "/default/fail/c/9/429"))
    expect(res.status).toBe(429)
    expect(scripted.of("/default/fail/c/").map((s) => s.headers["x-retry-attempt"])).toEqual([undefined, "1"])
  })

  it("retries a connection reset before the response head", async () => {
    const res = await fetch(gw.url(port, "/reset/d/1"))
    expect(res.status).toBe(200)
    expect(await res.text()).toBe("ok after 2")
    expect(scripted.of("/reset/d/").map((s) => s.headers["x-retry-attempt"])).toEqual([undefined, "1"])
  })

  it("a backend that drops every connection ends in 503 upstream call failed", async () => {
    const res = await fetch(gw.url(port, "/closed"))
    expect(res.status).toBe(503)
    expect(await res.text()).toBe("upstream call failed")
  })

  it("replays a small request body on every attempt", async () => {
    const res = await fetch(gw.url(port, "/fail/e/1/503"), { method: "POST", body: "small body" })
    expect(res.status).toBe(200)
    expect(scripted.of("/fail/e/").map((s) => s.body)).toEqual(["small body", "small body"])
  })

  it("forwards a body over 64 KiB once, whole, without retrying", async () => {
    const body = "x".repeat(64 * 1024 + 1)
    const res = await fetch(gw.url(port, "/fail/f/1/503"), { method: "POST", body })
    expect(res.status).toBe(503)
    expect(await res.text()).toBe("failure 1")
    const seen = scripted.of("/fail/f/")
    expect(seen).toHaveLength(1)
    expect(seen[0]!.body.length).toBe(body.length)
  })

  it("a client gone during the backoff stops the retries", async () => {
    const controller = new AbortController()
    const pending = fetch(gw.url(port, "/cancel/fail/g/9/503"), { signal: controller.signal }).catch((e: unknown) => e)
    await eventually(() => scripted.of("/cancel/fail/g/").length === 1)
    controller.abort()
    await pending
    await sleep(1300)
    expect(scripted.of("/cancel/fail/g/")).toHaveLength(1)
  })
})

describe("timeout", () => {
  it("requestTimeout answers 504 request timeout and abandons the upstream exchange", async () => {
    const res = await fetch(gw.url(port, "/hang/h"))
    expect(res.status).toBe(504)
    expect(await res.text()).toBe("request timeout")
    const seen = scripted.of("/hang/h")
    expect(seen).toHaveLength(1)
    await eventually(() => seen[0]!.abandoned)
  })

  it("backendRequestTimeout bounds each attempt: the retry that hangs answers 504 upstream call timeout", async () => {
    const res = await fetch(gw.url(port, "/slow-then/i/503"))
    expect(res.status).toBe(504)
    expect(await res.text()).toBe("upstream call timeout")
    const seen = scripted.of("/slow-then/i/")
    expect(seen.map((s) => s.headers["x-retry-attempt"])).toEqual([undefined, "1"])
    await eventually(() => seen[1]!.abandoned)
  })

  it("requestTimeout also covers the retry backoff", async () => {
    const res = await fetch(gw.url(port, "/backoff/fail/j/9/503"))
    expect(res.status).toBe(504)
    expect(await res.text()).toBe("request timeout")
    expect(scripted.of("/backoff/fail/j/")).toHaveLength(1)
  })
})

describe("requestMirror", () => {
  it("sends a body-less copy to the mirror; the client gets the real upstream's answer", async () => {
    const res = await fetch(gw.url(port, "/mirrored/k?q=1"), { method: "POST", body: "payload", headers: { "x-trace": "t1" } })
    expect(res.status).toBe(200)
    const echoed = (await res.json()) as { body: string; url: string }
    expect(echoed.body).toBe("payload")
    await eventually(() => mirror.of("/mirrored/k").length === 1)
    const copy = mirror.of("/mirrored/k")[0]!
    expect(copy.method).toBe("POST")
    expect(copy.url).toBe("/mirrored/k?q=1")
    expect(copy.headers["x-trace"]).toBe("t1")
    expect(copy.body).toBe("")
    // content-length is dropped from the copy; undici frames a body-less POST as 0.
    expect(copy.headers["content-length"]).toBe("0")
    expect(copy.headers["transfer-encoding"]).toBeUndefined()
  })

  it("mirrors to a named backend with that backend's policies", async () => {
    const res = await fetch(gw.url(port, "/named/l"))
    expect(res.status).toBe(200)
    await eventually(() => mirror.of("/named/l").length === 1)
    const copy = mirror.of("/named/l")[0]!
    expect(copy.headers["x-shadow"]).toBe("yes")
    expect(copy.headers["content-length"]).toBeUndefined()
  })

  it("a mirror that never answers does not hold the response", async () => {
    const res = await fetch(gw.url(port, "/hang-mirror/hang/o"))
    expect(res.status).toBe(200)
    await eventually(() => mirror.of("/hang-mirror/hang/o").length === 1)
    // The mirror is still waiting for its answer while the client has its own.
    expect(mirror.of("/hang-mirror/hang/o")[0]!.abandoned).toBe(false)
  })

  it("a mirror that refuses connections does not affect the response", async () => {
    const res = await fetch(gw.url(port, "/dead-mirror"))
    expect(res.status).toBe(200)
    expect(((await res.json()) as { url: string }).url).toBe("/dead-mirror")
  })
})

describe("config", () => {
  const issuesOf = async (yaml: string) => {
    const exit = await Effect.runPromiseExit(validate({ _tag: "Inline", text: yaml }))
    if (Exit.isSuccess(exit)) return []
    const error = Cause.squash(exit.cause)
    return typeof error === "object" && error !== null && "issues" in error && Array.isArray(error.issues)
      ? error.issues.map((i: { path: string; message: string; line?: number }) => ({ path: i.path, message: i.message, line: i.line }))
      : [{ path: "?", message: String(error), line: undefined }]
  }
  const route = (policies: string) => `
binds:
- port: 3999
  listeners:
  - routes:
    - policies:
        ${policies}
      backends: [{host: 127.0.0.1:8080}]
`

  it("a mirror to an undefined named backend is refused, with its location", async () => {
    expect(await issuesOf(route("requestMirror: {backend: {backend: nope}, percentage: 1}"))).toEqual([
      {
        path: "binds[0].listeners[0].routes[0].policies.requestMirror.backend.backend",
        message: "backend \"nope\" is not defined in backends (or is not a host backend)",
        line: 7
      }
    ])
  })

  it("a mirror host that is not host:port is refused", async () => {
    const issues = await issuesOf(route("requestMirror: {backend: {host: \"http://x:1\"}, percentage: 1}"))
    expect(issues.map((i) => [i.path, i.message])).toEqual([
      ["binds[0].listeners[0].routes[0].policies.requestMirror.backend.host", "invalid host \"http://x:1\": expected host:port, not a URL"]
    ])
  })

  it("a delay expression that does not compile names the field", async () => {
    const issues = await issuesOf(route("delay: {duration: \"random() < \"}"))
    expect(issues.map((i) => i.path)).toEqual(["binds[0].listeners[0].routes[0].policies.delay.duration"])
    expect(issues[0]?.message).toMatch(/^invalid CEL expression "random\(\) < "/)
  })
})

describe("delay", () => {
  it("delays, then forwards", async () => {
    const res = await fetch(gw.url(port, "/delayed/m"))
    expect(res.status).toBe(200)
    expect(await res.text()).toBe("plain")
    expect(scripted.of("/delayed/m")).toHaveLength(1)
  })

  it("a client gone mid-delay never reaches the backend", async () => {
    const controller = new AbortController()
    const pending = fetch(gw.url(port, "/delay-cancel/n"), { signal: controller.signal }).catch((e: unknown) => e)
    await sleep(100)
    controller.abort()
    await pending
    await sleep(1300)
    expect(scripted.of("/delay-cancel/n")).toHaveLength(0)
  })
})
