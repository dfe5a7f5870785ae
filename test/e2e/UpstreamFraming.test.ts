/**
 * An upstream whose response framing is ambiguous (security.md §5 #5: Content-Length with
 * Transfer-Encoding, two different Content-Lengths, a malformed chunk) must not be relayed as if
 * it were fine, and its connection must not be reused for the next request, where the leftover
 * bytes would become the next client's response. The upstream is a raw TCP server writing the
 * bytes exactly; it answers well-formed on any path but the named ones.
 */
import * as net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { send } from "../support/Client.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"

const GOOD = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ngood"
const BAD: Record<string, string> = {
  "/clte": "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled",
  "/twocl": "HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 40\r\n\r\nfourHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled",
  "/badchunk": "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
}

describe("upstream responses with ambiguous framing", () => {
  let upstream: net.Server
  let gw: Running
  let port: number
  const connections: Array<net.Socket> = []

  beforeAll(async () => {
    upstream = net.createServer((socket) => {
      connections.push(socket)
      let buffered = ""
      socket.on("data", (chunk) => {
        buffered += chunk.toString("latin1")
        let end: number
        while ((end = buffered.indexOf("\r\n\r\n")) !== -1) {
          const path = /^[A-Z]+ (\S+)/.exec(buffered)?.[1] ?? "/"
          buffered = buffered.slice(end + 4)
          socket.write(BAD[path] ?? GOOD)
        }
      })
      socket.on("error", () => {})
    })
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve))
    port = await freePort()
    gw = await startGateway(
      `
binds:
- port: $PORT
  listeners:
  - routes:
    - backends:
      - host: 127.0.0.1:${(upstream.address() as net.AddressInfo).port}
`,
      { vars: { PORT: port } }
    )
  })
  afterAll(async () => {
    await gw.stop()
    for (const c of connections) c.destroy()
    upstream.close()
  })

  /** What the client gets: refused before the head (agentgateway's 503), or cut after it. */
  const EXPECTED: Record<string, { status: number; body: string }> = {
    "/clte": { status: 503, body: "upstream call failed" },
    "/twocl": { status: 503, body: "upstream call failed" },
    // The head was already sent when the bad chunk came: the only honest signal is to cut the stream.
    "/badchunk": { status: 0, body: "socket hang up" }
  }

  for (const path of Object.keys(BAD)) {
    it(`${path}: the client never sees the smuggled bytes, and the next request is answered correctly`, async () => {
      const bad = await send(port, "GET", path).catch((e: Error) => ({ status: 0, body: e.message }))
      expect({ status: bad.status, body: bad.body }).toEqual(EXPECTED[path])
      for (let i = 0; i < 3; i++) {
        const next = await send(port, "GET", "/fine")
        expect(next).toEqual(expect.objectContaining({ status: 200, body: "good" }))
      }
    })
  }
})
