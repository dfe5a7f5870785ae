import { Effect, Exit } from "effect"
import * as http from "node:http"
import * as net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as ProxyError from "../../src/pipeline/ProxyError.ts"
import * as RequestBody from "../../src/pipeline/RequestBody.ts"
import { ProxyRequest } from "../../src/pipeline/RequestContext.ts"
import * as Headers from "../../src/shared/headers.ts"

/** A server whose handler reads the body with RequestBody.read and reports the outcome. */
let server: http.Server
let port = 0
const outcomes: Array<Exit.Exit<Uint8Array | undefined, ProxyError.ProxyError>> = []

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const ctx = new ProxyRequest(req, "POST", "/", "", "h", "h", "http", "HTTP/1.1", Headers.empty(), "127.0.0.1", 1, 0)
    ctx.hasBody = true
    Effect.runCallback(RequestBody.read(ctx, 1024), {
      onExit: (exit) => {
        outcomes.push(exit)
        res.end()
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const address = server.address()
  port = typeof address === "object" && address !== null ? address.port : 0
})
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())))

const slowClient = (sendRest: boolean): Promise<void> =>
  new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.write("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nx")
      if (sendRest) {
        let sent = 1
        const timer = setInterval(() => {
          socket.write("y")
          if (++sent === 10) clearInterval(timer)
        }, 20)
      }
    })
    socket.on("data", () => {
      socket.destroy()
      resolve()
    })
    socket.on("error", () => resolve())
  })

describe("RequestBody.read", () => {
  it("reads a body whose chunks come apart, whole (the listener's BodyWatch bounds pauses: test/e2e/SlowBody)", async () => {
    outcomes.length = 0
    await slowClient(true)
    const exit = outcomes[0]
    expect(exit !== undefined && Exit.isSuccess(exit) ? Buffer.from(exit.value ?? new Uint8Array()).toString() : "failed").toBe("xyyyyyyyyy")
  })
})
