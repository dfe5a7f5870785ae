/**
 * Request bodies that stop arriving while they stream to the upstream (security.md #9; the
 * listener's BodyWatch.ts), with REQUEST_BODY_IDLE_TIMEOUT at 300 ms: a stalled upload is
 * answered 408 and its upstream request aborted, and so is one a policy is buffering; a slow but steady upload and a body the
 * upstream is slow to read both pass; an upload that stalls after the answer loses its connection; "0s" turns the watch off (a bad value: test/config/EnvLimits.test.ts).
 */
import { once } from "node:events"
import * as http from "node:http"
import * as net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { BODY_IDLE_TIMEOUT_ENV } from "../../src/config/Normalize.ts"
import { freePorts, type Running, startGateway } from "../support/Harness.ts"

interface Seen {
  readonly path: string
  bytes: number
  outcome: "complete" | "aborted" | "open"
}

/** An upstream: `/count` reads and counts the body, `/lazy` waits 1.2 s before reading, `/early` answers at once, unread. */
const startUpstream = async () => {
  const seen: Array<Seen> = []
  const server = http.createServer((req, res) => {
    const entry: Seen = { path: req.url ?? "", bytes: 0, outcome: "open" }
    seen.push(entry)
    req.on("data", (chunk: Buffer) => {
      entry.bytes += chunk.length
    })
    req.on("end", () => {
      entry.outcome = "complete"
      if (!res.headersSent) res.end(String(entry.bytes))
    })
    req.on("aborted", () => {
      entry.outcome = "aborted"
    })
    res.on("close", () => {
      if (entry.outcome === "open") entry.outcome = "aborted"
    })
    if (req.url?.startsWith("/lazy")) {
      req.pause()
      setTimeout(() => req.resume(), 1200)
    } else if (req.url?.startsWith("/early")) {
      req.pause()
      res.end("early")
    }
  })
  server.listen(0, "127.0.0.1")
  await once(server, "listening")
  const port = (server.address() as net.AddressInfo).port
  return { port, seen, close: () => new Promise<void>((resolve) => server.close(() => resolve())) }
}

const config = (upstream: number) => `
binds:
- port: $P0
  listeners:
  - routes:
    - name: buffered
      matches: [{path: {pathPrefix: /buffered}}]
      policies:
        authorization: {rules: ['json(request.body).action == "read"']}
      backends: [{host: 127.0.0.1:${upstream}}]
    - backends: [{host: 127.0.0.1:${upstream}}]
`

/** Opens a connection, sends a POST head declaring `length` bytes, and returns the socket with what it reads. */
const openUpload = async (port: number, path: string, length: number) => {
  const socket = net.connect(port, "127.0.0.1")
  await once(socket, "connect")
  let received = ""
  socket.setEncoding("latin1")
  socket.on("data", (chunk: string) => {
    received += chunk
  })
  const closed = once(socket, "close").then(() => Date.now())
  socket.on("error", () => {})
  socket.write(`POST ${path} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/octet-stream\r\ncontent-length: ${length}\r\n\r\n`)
  return { socket, received: () => received, closed }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Waits until what the upload's connection read matches `pattern` (or `ms` passed). */
const answered = async (upload: { readonly received: () => string }, pattern: RegExp, ms = 5000) => {
  const deadline = Date.now() + ms
  while (!pattern.test(upload.received()) && Date.now() < deadline) await sleep(20)
}

describe("a request body that stops arriving", () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>
  let gw: Running
  let port: number

  beforeAll(async () => {
    upstream = await startUpstream()
    ;[port] = (await freePorts(1)) as [number]
    gw = await startGateway(config(upstream.port), { vars: { P0: port, [BODY_IDLE_TIMEOUT_ENV]: "300ms" } })
  })
  afterAll(async () => {
    await gw?.stop()
    await upstream?.close()
  })

  it("is answered 408 with the connection closed, and its upstream request is aborted", async () => {
    const started = Date.now()
    const upload = await openUpload(port, "/count/stalled", 100_000)
    upload.socket.write(Buffer.alloc(1000, 1))
    const closedAt = await upload.closed
    expect(upload.received()).toMatch(/^HTTP\/1\.1 408 /)
    expect(upload.received()).toMatch(/\r\nconnection: close\r\n/i)
    expect(upload.received()).toMatch(/request body timeout$/)
    // 300 ms of silence, found by a check every 75 ms; far less than any fixed request deadline.
    expect(closedAt - started).toBeGreaterThanOrEqual(300)
    expect(closedAt - started).toBeLessThan(3000)
    await sleep(50)
    const entry = upstream.seen.find((s) => s.path === "/count/stalled")
    expect(entry?.outcome).toBe("aborted")
    expect(entry?.bytes).toBeLessThan(100_000)
    expect(gw.logs.some((l) => l.includes("http.path=/count/stalled") && l.includes("http.status=408"))).toBe(true)
  })

  it("is answered 408 while a policy buffers it too, before any upstream request", async () => {
    const before = upstream.seen.length
    const upload = await openUpload(port, "/buffered/stalled", 100)
    upload.socket.write('{"action":')
    await upload.closed
    expect(upload.received()).toMatch(/^HTTP\/1\.1 408 [\s\S]*request body timeout$/)
    expect(upstream.seen.length).toBe(before)
  })

  it("lets a body a policy buffers through when it comes slowly but steadily", async () => {
    const body = '{"action":"read"}'
    const upload = await openUpload(port, "/buffered/steady", body.length)
    for (const ch of body) {
      upload.socket.write(ch)
      await sleep(40)
    }
    await answered(upload, /\r\n\r\n\d+$/)
    expect(upload.received()).toMatch(new RegExp(`^HTTP/1\\.1 200 [\\s\\S]*\\r\\n\\r\\n${body.length}$`))
    upload.socket.destroy()
  })

  it("lets a slow but steady upload through", async () => {
    const upload = await openUpload(port, "/count/steady", 10 * 1000)
    for (let i = 0; i < 10; i++) {
      upload.socket.write(Buffer.alloc(1000, 2))
      await sleep(150)
    }
    await answered(upload, /\r\n\r\n10000$/)
    expect(upload.received()).toMatch(/^HTTP\/1\.1 200 /)
    expect(upload.received()).toMatch(/\r\n\r\n10000$/)
    upload.socket.destroy()
  })

  it("does not blame the client for an upstream slow to read the body", async () => {
    const size = 24 * 1024 * 1024
    const upload = await openUpload(port, "/lazy/backpressure", size)
    upload.socket.write(Buffer.alloc(size, 3))
    await answered(upload, /\r\n\r\n\d+$/, 15_000)
    expect(upload.received()).toMatch(/^HTTP\/1\.1 200 /)
    expect(upload.received()).toMatch(new RegExp(`\\r\\n\\r\\n${size}$`))
    upload.socket.destroy()
  }, 20_000)

  it("closes the connection of an upload that stalls after it was answered", async () => {
    const upload = await openUpload(port, "/early/answered", 100_000)
    upload.socket.write(Buffer.alloc(1000, 4))
    const started = Date.now()
    const closedAt = await upload.closed
    expect(upload.received()).toMatch(/^HTTP\/1\.1 200 /)
    expect(upload.received()).toMatch(/early$/)
    expect(closedAt - started).toBeLessThan(3000)
  })
})

describe("REQUEST_BODY_IDLE_TIMEOUT", () => {
  it("0s turns the watch off", async () => {
    const upstream = await startUpstream()
    const [port] = (await freePorts(1)) as [number]
    const gw = await startGateway(config(upstream.port), { vars: { P0: port, [BODY_IDLE_TIMEOUT_ENV]: "0s" } })
    try {
      const upload = await openUpload(port, "/count/off", 2000)
      upload.socket.write(Buffer.alloc(1000, 5))
      await sleep(900)
      expect(upload.received()).toBe("")
      upload.socket.write(Buffer.alloc(1000, 5))
      await answered(upload, /\r\n\r\n2000$/)
      expect(upload.received()).toMatch(/^HTTP\/1\.1 200 [\s\S]*\r\n\r\n2000$/)
      upload.socket.destroy()
    } finally {
      await gw.stop()
      await upstream.close()
    }
  })
})
