/**
 * HTTPS listeners: server TLS from PEM files, listener choice by host on one port, and mTLS
 * with a client CA. Fixtures in test/fixtures/tls were made with:
 *   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 36500 -subj "/CN=effect-agentgateway test CA"
 *   openssl req -newkey ec … -keyout server.key -subj "/CN=localhost" | openssl x509 -req -CA ca.pem … (SAN localhost, a/b.example.com, 127.0.0.1)
 *   the same for client.pem with extendedKeyUsage=clientAuth
 */
import * as fs from "node:fs"
import * as https from "node:https"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"

const dir = path.resolve(import.meta.dirname, "../fixtures/tls")
const file = (name: string) => path.join(dir, name)
const ca = fs.readFileSync(file("ca.pem"))

const get = (port: number, options: { host?: string; servername?: string; cert?: Buffer; key?: Buffer } = {}) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port,
        path: "/",
        ca,
        servername: options.servername ?? "localhost",
        headers: { host: options.host ?? "localhost" },
        ...(options.cert === undefined ? {} : { cert: options.cert }),
        ...(options.key === undefined ? {} : { key: options.key }),
        agent: false
      },
      (res) => {
        let body = ""
        res.setEncoding("utf8")
        res.on("data", (c: string) => (body += c))
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
      }
    )
    req.on("error", reject)
    req.end()
  })

let gw: Running
let tlsPort: number
let mtlsPort: number

beforeAll(async () => {
  tlsPort = await freePort()
  mtlsPort = await freePort()
  gw = await startGateway(
    `
binds:
- port: $TLS
  listeners:
  - name: a
    hostname: a.example.com
    protocol: HTTPS
    tls: {cert: $DIR/server.pem, key: $DIR/server.key}
    routes:
    - policies: {directResponse: {status: 200, body: "listener a"}}
  - name: fallback
    protocol: HTTPS
    tls: {cert: $DIR/server.pem, key: $DIR/server.key}
    routes:
    - policies: {directResponse: {status: 200, body: "fallback"}}
- port: $MTLS
  listeners:
  - protocol: HTTPS
    tls: {cert: $DIR/server.pem, key: $DIR/server.key, root: $DIR/ca.pem}
    routes:
    - policies: {directResponse: {status: 200, body: "mutual"}}
`,
    { vars: { TLS: tlsPort, MTLS: mtlsPort, DIR: dir } }
  )
})
afterAll(() => gw.stop())

describe("HTTPS listeners", () => {
  it("serve TLS with the configured certificate", async () => {
    expect(await get(tlsPort)).toEqual({ status: 200, body: "fallback" })
  })

  it("choose the listener by host on a shared port", async () => {
    expect(await get(tlsPort, { host: "a.example.com", servername: "a.example.com" })).toEqual({ status: 200, body: "listener a" })
    expect(await get(tlsPort, { host: "b.example.com", servername: "b.example.com" })).toEqual({ status: 200, body: "fallback" })
  })

  it("require a client certificate signed by the root when root is set (mTLS)", async () => {
    await expect(get(mtlsPort)).rejects.toThrow()
    expect(await get(mtlsPort, { cert: fs.readFileSync(file("client.pem")), key: fs.readFileSync(file("client.key")) })).toEqual({
      status: 200,
      body: "mutual"
    })
  })

  it("a missing certificate file is a config error naming the field", async () => {
    const p = await freePort()
    await expect(
      startGateway(`
binds:
- port: ${p}
  listeners:
  - protocol: HTTPS
    tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}
`)
    ).rejects.toThrow(/<inline>:6:\d+ binds\[0\]\.listeners\[0\]\.tls\.cert: cannot read \/nonexistent\/cert\.pem/)
  })
})

/** A gateway with one HTTPS listener answering 200 "ok", and `settings` (top-level YAML) before it. */
const oneHttpsListener = (port: number, settings: string) =>
  startGateway(
    `${settings}binds:
- port: $PORT
  listeners:
  - protocol: HTTPS
    tls: {cert: $DIR/server.pem, key: $DIR/server.key}
    routes:
    - policies: {directResponse: {status: 200, body: "ok"}}
`,
    { vars: { PORT: port, DIR: dir } }
  )

describe("frontendPolicies.tls.handshakeTimeout", () => {
  it("closes a connection that never completes its TLS handshake", async () => {
    const net = await import("node:net")
    const port = await freePort()
    const quick = await oneHttpsListener(port, "frontendPolicies:\n  tls: {handshakeTimeout: 300ms}\n")
    try {
      // A client that connects and then says nothing (a slowloris of the handshake).
      const closedAfter = await new Promise<number>((resolve, reject) => {
        const start = Date.now()
        const socket = net.connect(port, "127.0.0.1")
        socket.on("error", () => {})
        socket.on("close", () => resolve(Date.now() - start))
        setTimeout(() => {
          socket.destroy()
          reject(new Error("still open after 3 s"))
        }, 3000)
      })
      expect(closedAfter).toBeGreaterThanOrEqual(250)
      // A client that does handshake is served as usual.
      expect(await get(port)).toEqual({ status: 200, body: "ok" })
    } finally {
      await quick.stop()
    }
  })
})

describe("draining an HTTPS listener", () => {
  it("does not wait past its deadline for a connection that never finished its handshake", async () => {
    const net = await import("node:net")
    const port = await freePort()
    const running = await oneHttpsListener(port, "config:\n  connectionTerminationDeadline: 300ms\n")
    // Connected, silent: still within the 15 s handshake timeout when the gateway stops.
    const socket = net.connect(port, "127.0.0.1")
    socket.on("error", () => {})
    await new Promise((resolve) => socket.once("connect", resolve))
    const closed = new Promise((resolve) => socket.once("close", resolve))
    const start = Date.now()
    await running.stop()
    expect(Date.now() - start).toBeLessThan(5000)
    await closed
  }, 20_000)
})
