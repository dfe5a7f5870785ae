/**
 * Clients that stop reading the response (security.md #9, slow read; the listener's
 * SendWatch.ts), with RESPONSE_SEND_TIMEOUT at 500 ms: a streamed body and one a policy
 * buffered are both cut, the upstream exchange aborted and the access log says why; a slow
 * but steady reader and a quiet stream are never cut; "0s" turns the watch off (a bad value:
 * test/config/EnvLimits.test.ts).
 */
import { once } from "node:events"
import * as http from "node:http"
import * as net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { SEND_TIMEOUT_ENV } from "../../src/config/Normalize.ts"
import { freePorts, type Running, startGateway } from "../support/Harness.ts"

const MiB = 1024 * 1024
/** Far more than the loopback socket buffers of both ends hold (about 4 MiB here; Linux caps them at 4 + 6 MiB by default). */
const BIG = 32 * MiB
const CHUNK = Buffer.alloc(64 * 1024, 0x61)

interface Seen {
  readonly path: string
  outcome: "finished" | "aborted" | "open"
}

/**
 * `/stream`: BIG bytes chunked, written with backpressure; `/sized`: 24 MiB with a
 * content-length in one write; `/quiet`: a first byte, 1.5 s of nothing, then the rest.
 */
const startUpstream = async () => {
  const seen: Array<Seen> = []
  const server = http.createServer((req, res) => {
    const entry: Seen = { path: req.url ?? "", outcome: "open" }
    seen.push(entry)
    res.on("finish", () => {
      entry.outcome = "finished"
    })
    res.on("close", () => {
      if (entry.outcome === "open") entry.outcome = "aborted"
    })
    if (req.url?.startsWith("/stream")) {
      res.writeHead(200, { "content-type": "application/octet-stream" })
      let sent = 0
      const pump = () => {
        while (sent < BIG && !res.destroyed) {
          sent += CHUNK.length
          if (!res.write(CHUNK)) return void res.once("drain", pump)
        }
        if (!res.destroyed) res.end()
      }
      pump()
    } else if (req.url?.startsWith("/sized")) {
      res.writeHead(200, { "content-length": String(24 * MiB) })
      res.end(Buffer.alloc(24 * MiB, 0x62))
    } else {
      res.writeHead(200, { "content-type": "text/event-stream" })
      res.write("a")
      setTimeout(() => res.end("b"), 1500)
    }
  })
  server.listen(0, "127.0.0.1")
  await once(server, "listening")
  const port = (server.address() as net.AddressInfo).port
  return { port, seen, close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }) }
}

const config = (upstream: number) => `
frontendPolicies:
  http: {maxBufferSize: 33554432}
binds:
- port: $P0
  listeners:
  - routes:
    - name: buffered
      matches: [{path: {pathPrefix: /buffered}}]
      policies:
        urlRewrite: {path: {prefix: /sized}}
        transformations: {response: {set: {x-length: 'string(size(response.body))'}}}
      backends: [{host: 127.0.0.1:${upstream}}]
    - backends: [{host: 127.0.0.1:${upstream}}]
`

/** A GET on a raw connection; with `stall` it stops reading at the first bytes of the response. */
const openDownload = async (port: number, path: string, stall = false) => {
  const socket = net.connect(port, "127.0.0.1")
  await once(socket, "connect")
  let received = 0
  let head = ""
  socket.on("data", (chunk: Buffer) => {
    received += chunk.length
    if (head === "") {
      head = chunk.toString("latin1").split("\r\n")[0] ?? ""
      if (stall) socket.pause()
    }
  })
  socket.on("error", () => {})
  const closed = once(socket, "close")
  socket.write(`GET ${path} HTTP/1.1\r\nhost: gw\r\n\r\n`)
  while (head === "") await sleep(10)
  return { socket, received: () => received, head: () => head, closed }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const until = async (condition: () => boolean, ms: number) => {
  const deadline = Date.now() + ms
  while (!condition() && Date.now() < deadline) await sleep(20)
}

describe("a client that stops reading the response", () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>
  let gw: Running
  let port: number

  beforeAll(async () => {
    upstream = await startUpstream()
    ;[port] = (await freePorts(1)) as [number]
    gw = await startGateway(config(upstream.port), { vars: { P0: port, [SEND_TIMEOUT_ENV]: "500ms" } })
  })
  afterAll(async () => {
    await gw?.stop()
    await upstream?.close()
  })

  const logged = (path: string) => gw.logs.find((l) => l.includes(`http.path=${path}`))

  it("loses its connection when a streamed body is not taken, and the upstream exchange is aborted", async () => {
    const started = Date.now()
    const download = await openDownload(port, "/stream/stalled", true)
    await until(() => logged("/stream/stalled") !== undefined, 5000)
    const took = Date.now() - started
    expect(logged("/stream/stalled")).toContain('error="response send timeout"')
    // 500 ms without progress, found by a check every 125 ms.
    expect(took).toBeGreaterThanOrEqual(500)
    expect(took).toBeLessThan(4000)
    await until(() => upstream.seen.find((s) => s.path === "/stream/stalled")?.outcome !== "open", 2000)
    expect(upstream.seen.find((s) => s.path === "/stream/stalled")?.outcome).toBe("aborted")
    // What the kernel already held still arrives, then the end: never the whole body.
    download.socket.resume()
    await download.closed
    expect(download.head()).toBe("HTTP/1.1 200 OK")
    expect(download.received()).toBeLessThan(BIG)
  })

  it("loses its connection when a body a policy buffered is not taken", async () => {
    const download = await openDownload(port, "/buffered/stalled", true)
    await until(() => logged("/buffered/stalled") !== undefined, 5000)
    expect(logged("/buffered/stalled")).toContain('error="response send timeout"')
    download.socket.resume()
    await download.closed
    expect(download.received()).toBeLessThan(24 * MiB)
  })

  it("keeps a slow reader that takes some bytes within every limit", async () => {
    const download = await openDownload(port, "/stream/steady")
    // About 1.5 MiB per 300 ms: the whole body in ~6 s, each pause well under 500 ms.
    while (download.received() < BIG && !download.socket.destroyed) {
      download.socket.pause()
      await sleep(300)
      const target = download.received() + 1.5 * MiB
      download.socket.resume()
      await until(() => download.received() >= target || download.socket.destroyed, 1000)
    }
    await until(() => logged("/stream/steady") !== undefined, 2000)
    expect(logged("/stream/steady")).not.toContain("response send timeout")
    expect(download.received()).toBeGreaterThan(BIG)
    expect(upstream.seen.find((s) => s.path === "/stream/steady")?.outcome).toBe("finished")
    download.socket.destroy()
  }, 30_000)

  it("does not cut a stream that has nothing to send", async () => {
    const download = await openDownload(port, "/quiet/stream")
    await until(() => logged("/quiet/stream") !== undefined, 4000)
    expect(logged("/quiet/stream")).toContain("http.status=200")
    expect(logged("/quiet/stream")).not.toContain("error=")
    expect(download.socket.destroyed).toBe(false)
    download.socket.destroy()
  })
})

describe("RESPONSE_SEND_TIMEOUT", () => {
  it("0s turns the watch off", async () => {
    const upstream = await startUpstream()
    const [port] = (await freePorts(1)) as [number]
    const gw = await startGateway(config(upstream.port), { vars: { P0: port, [SEND_TIMEOUT_ENV]: "0s" } })
    try {
      const download = await openDownload(port, "/stream/off", true)
      await sleep(1500)
      expect(gw.logs.some((l) => l.includes("http.path=/stream/off"))).toBe(false)
      expect(upstream.seen.find((s) => s.path === "/stream/off")?.outcome).toBe("open")
      download.socket.resume()
      await until(() => download.received() > BIG, 10_000)
      expect(download.received()).toBeGreaterThan(BIG)
      download.socket.destroy()
    } finally {
      await gw.stop()
      await upstream.close()
    }
  }, 20_000)
})
