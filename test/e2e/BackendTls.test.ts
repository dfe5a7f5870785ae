/**
 * backendTLS over real sockets: the gateway calls real node:https upstreams whose certificates
 * come from the test CA in test/fixtures/tls (not trusted by Node's default store), and each
 * upstream reports the SNI and the client certificate it saw.
 */
import * as fs from "node:fs"
import * as https from "node:https"
import * as path from "node:path"
import { TLSSocket } from "node:tls"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Running, startGateway } from "../support/Harness.ts"

const dir = path.resolve(import.meta.dirname, "../fixtures/tls")
const pem = (name: string) => fs.readFileSync(path.join(dir, name))

interface Seen {
  readonly servername: string | false
  readonly clientCn: string | null
  readonly host: string | undefined
  readonly url: string | undefined
  readonly alpn: string | false | null
}

interface HttpsUpstream {
  readonly port: number
  readonly close: () => Promise<void>
}

const startHttps = (options: https.ServerOptions, host = "127.0.0.1"): Promise<HttpsUpstream> => {
  const server = https.createServer(options, (req, res) => {
    const socket = req.socket
    if (!(socket instanceof TLSSocket)) throw new Error("expected a TLS socket")
    const peer = socket.getPeerCertificate()
    const seen: Seen = {
      servername: socket.servername ?? false,
      clientCn: typeof peer.subject?.CN === "string" ? peer.subject.CN : null,
      host: req.headers.host,
      url: req.url,
      alpn: socket.alpnProtocol
    }
    req.resume()
    res.writeHead(200, { "content-type": "application/json" })
    res.end(JSON.stringify(seen))
  })
  // Handshake failures are the point of several tests; they must not crash the upstream.
  server.on("tlsClientError", () => undefined)
  return new Promise((resolve) => {
    server.listen(0, host, () => {
      const address = server.address()
      resolve({
        port: typeof address === "object" && address !== null ? address.port : 0,
        close: () =>
          new Promise((r) => {
            server.close(() => r())
            server.closeAllConnections()
          })
      })
    })
  })
}

let gw: Running
let plain: HttpsUpstream
let mutual: HttpsUpstream
let uri: HttpsUpstream
let p384: HttpsUpstream

const server = { cert: pem("server.pem"), key: pem("server.key"), ALPNProtocols: ["h2", "http/1.1"] }

beforeAll(async () => {
  plain = await startHttps(server)
  mutual = await startHttps({ ...server, ca: pem("ca.pem"), requestCert: true, rejectUnauthorized: true })
  uri = await startHttps({ cert: pem("uri-server.pem"), key: pem("uri-server.key") })
  p384 = await startHttps({ ...server, ecdhCurve: "P-384" })
  const route = (name: string, port: number, tlsYaml: string, where: "route" | "backend" = "backend", host = "127.0.0.1") =>
    where === "route"
      ? `
    - name: ${name}
      matches: [{path: {pathPrefix: /${name}}}]
      policies:
        backendTLS: ${tlsYaml}
      backends: [{host: "${host}:${port}"}]`
      : `
    - name: ${name}
      matches: [{path: {pathPrefix: /${name}}}]
      backends:
      - host: "${host}:${port}"
        policies:
          backendTLS: ${tlsYaml}`
  const root = `root: ${path.join(dir, "ca.pem")}`
  gw = await startGateway(`
binds:
- port: 0
  listeners:
  - routes:${
    [
      route("root", plain.port, `{${root}}`, "route"),
      route("system", plain.port, "{}"),
      route("insecure", plain.port, "{insecure: true}", "route"),
      route("insecurehost", plain.port, `{${root}, insecureHost: true, hostname: wrong.example.com}`),
      route("insecurehostsystem", plain.port, "{insecureHost: true}"),
      route("withcert", mutual.port, `{${root}, cert: ${path.join(dir, "client.pem")}, key: ${path.join(dir, "client.key")}}`),
      route("withoutcert", mutual.port, `{${root}}`),
      route("sni", plain.port, `{${root}, hostname: a.example.com}`, "route"),
      route("wronghost", plain.port, `{${root}, hostname: wrong.example.com}`),
      route("dns", plain.port, `{${root}}`, "backend", "localhost"),
      route("sanok", uri.port, `{${root}, subjectAltNames: ["spiffe://example.org/ns/default/sa/upstream"]}`, "route"),
      route("sanbad", uri.port, `{${root}, subjectAltNames: ["spiffe://example.org/ns/default/sa/other"]}`),
      route("sanbadhost", uri.port, `{${root}}`),
      route("kexok", p384.port, `{${root}, keyExchangeGroups: [P-384]}`),
      route("kexbad", p384.port, `{${root}, keyExchangeGroups: [X25519]}`),
      route("alpn", plain.port, `{${root}, alpn: [http/1.1]}`)
    ].join("")
  }
`)
})
afterAll(async () => {
  await gw.stop()
  await Promise.all([plain.close(), mutual.close(), uri.close(), p384.close()])
})

const port = () => {
  const first = gw.ports.data.values().next()
  if (first.done === true) throw new Error("no data port")
  return first.value
}

const get = async (name: string) => {
  const res = await fetch(gw.url(port(), `/${name}/x`))
  return { status: res.status, body: await res.text() }
}

const seen = async (name: string): Promise<Seen> => {
  const res = await get(name)
  expect(res.status).toBe(200)
  return JSON.parse(res.body) as Seen
}

/** The access-log `error` of the last request to `/name/x` (logged as the response completes). */
const loggedError = async (name: string): Promise<string> => {
  for (let attempt = 0; attempt < 100; attempt++) {
    const line = gw.logs.findLast((l) => l.includes(`http.path=/${name}/x`))
    if (line !== undefined) return /error="([^"]*)"/.exec(line)?.[1] ?? ""
    await new Promise((r) => setTimeout(r, 10))
  }
  throw new Error(`no access log line for /${name}/x`)
}

/** The upstream refused: a short 503 for the client, the real reason only in the log. */
const failsWith = async (name: string, reason: RegExp) => {
  expect(await get(name)).toEqual({ status: 503, body: "upstream call failed" })
  expect(await loggedError(name)).toMatch(reason)
}

describe("backendTLS", () => {
  it("a custom root verifies the upstream; an IP backend sends no SNI; only http/1.1 is offered", async () => {
    // An IP backend gets the client's Host header, as without TLS.
    expect(await seen("root")).toEqual({ servername: false, clientCn: null, host: `127.0.0.1:${port()}`, url: "/root/x", alpn: "http/1.1" })
    expect((await seen("alpn")).alpn).toBe("http/1.1")
  })

  it("the default roots (Node's CA store) do not trust the test CA", async () => {
    await failsWith("system", /^upstream call failed: unable to verify the first certificate/)
  })

  it("insecure skips verification", async () => {
    expect((await seen("insecure")).url).toBe("/insecure/x")
  })

  it("insecureHost skips the name check but still verifies the chain", async () => {
    expect((await seen("insecurehost")).servername).toBe("wrong.example.com")
    await failsWith("insecurehostsystem", /^upstream call failed: unable to verify the first certificate/)
  })

  it("cert and key answer an upstream that requires a client certificate", async () => {
    expect((await seen("withcert")).clientCn).toBe("test-client")
    // TLS 1.3: the client's handshake completes before the upstream rejects it and hangs up.
    await failsWith("withoutcert", /^upstream call failed: (other side closed|.*certificate required)/)
  })

  it("hostname is the SNI and the verified name", async () => {
    expect(await seen("sni")).toMatchObject({ servername: "a.example.com", host: `127.0.0.1:${port()}` })
    await failsWith("wronghost", /^upstream call failed: Hostname\/IP does not match certificate's altnames: Host: wrong\.example\.com\./)
  })

  it("a DNS backend is its own SNI, and the Host header is still rewritten to it", async () => {
    expect(await seen("dns")).toMatchObject({ servername: "localhost", host: `localhost:${plain.port}` })
  })

  it("subjectAltNames accepts a certificate by a listed SAN, instead of the host name", async () => {
    expect((await seen("sanok")).url).toBe("/sanok/x")
    await failsWith(
      "sanbad",
      /^upstream call failed: certificate SANs \(URI:spiffe:\/\/example\.org\/ns\/default\/sa\/upstream, DNS:upstream\.internal\) match none of subjectAltNames \(spiffe:\/\/example\.org\/ns\/default\/sa\/other\)$/
    )
    // Without subjectAltNames the same certificate fails: it does not name 127.0.0.1.
    await failsWith("sanbadhost", /^upstream call failed: Hostname\/IP does not match certificate's altnames: IP: 127\.0\.0\.1 is not in the cert's list/)
  })

  it("keyExchangeGroups restricts the groups offered", async () => {
    expect((await seen("kexok")).url).toBe("/kexok/x")
    await failsWith("kexbad", /^upstream call failed: .*alert handshake failure/)
  })
})
