/**
 * backendTLS without sockets: the config → undici connect options mapping (which name is SNI,
 * which checks run, what tells pools apart), checked against the fixture certificates, and the
 * config errors of the whole load path (decode, then reading and checking the PEM files).
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { X509Certificate } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import type * as tls from "node:tls"
import { describe, expect, it } from "vitest"
import { formatIssue } from "../../src/config/ConfigError.ts"
import { validate } from "../../src/Gateway.ts"
import type * as Ir from "../../src/ir/Ir.ts"
import * as BackendTls from "../../src/policies/BackendTls.ts"

const dir = path.resolve(import.meta.dirname, "../fixtures/tls")
const pem = (name: string) => fs.readFileSync(path.join(dir, name))
/** The peer certificate objects Node hands to `checkServerIdentity`. */
const peer = (name: string): tls.PeerCertificate => new X509Certificate(pem(name)).toLegacyObject()
/** SANs: localhost, a.example.com, b.example.com, 127.0.0.1. */
const server = peer("server.pem")
/** SANs: URI spiffe://example.org/ns/default/sa/upstream, DNS upstream.internal. */
const uriServer = peer("uri-server.pem")

const dns = (host: string): Ir.HostTarget => ({ _tag: "Host", host, port: 8443, isHostname: true })
const ip: Ir.HostTarget = { _tag: "Host", host: "127.0.0.1", port: 8443, isHostname: false }
const none: BackendTls.Material = { cert: undefined, key: undefined, root: undefined }
const withRoot: BackendTls.Material = { cert: undefined, key: undefined, root: pem("ca.pem") }

const options = (config: BackendTls.Config, target: Ir.HostTarget, material = withRoot) =>
  BackendTls.connectOptions(config, material, target)

/** Runs the options' identity check as Node would after the chain verified. */
const identity = (config: BackendTls.Config, target: Ir.HostTarget, cert: tls.PeerCertificate) => {
  const check = options(config, target).connect.checkServerIdentity
  if (check === undefined) throw new Error("expected a checkServerIdentity")
  return check(target.host, cert)?.message
}

describe("backendTLS connect options", () => {
  it("{} verifies the chain and the backend's DNS name, which is also the SNI", () => {
    const o = options({}, dns("a.example.com"), none)
    expect(o.connect.servername).toBe("a.example.com")
    expect(o.connect.rejectUnauthorized).toBe(true)
    expect(identity({}, dns("a.example.com"), server)).toBeUndefined()
    expect(identity({}, dns("c.example.com"), server)).toMatch(/^Hostname\/IP does not match certificate's altnames: Host: c\.example\.com\. is not in the cert's altnames/)
  })

  it("an IP backend is verified against its IP and sends no SNI", () => {
    const o = options({}, ip)
    expect(o.connect.servername).toBeUndefined()
    expect(identity({}, ip, server)).toBeUndefined()
    expect(identity({}, { ...ip, host: "127.0.0.2" }, server)).toMatch(/IP: 127\.0\.0\.2 is not in the cert's list/)
  })

  it("hostname replaces the backend's host as SNI and as the verified name", () => {
    expect(options({ hostname: "b.example.com" }, ip).connect.servername).toBe("b.example.com")
    expect(identity({ hostname: "b.example.com" }, ip, server)).toBeUndefined()
    expect(identity({ hostname: "wrong.example.com" }, ip, server)).toMatch(/Host: wrong\.example\.com\. is not in the cert's altnames/)
    // An IP hostname is verified as an IP and is never put in SNI (RFC 6066); undici then
    // derives the SNI from a DNS-named backend itself.
    expect(options({ hostname: "127.0.0.1" }, dns("x.internal")).connect.servername).toBeUndefined()
    expect(identity({ hostname: "127.0.0.1" }, dns("x.internal"), server)).toBeUndefined()
  })

  it("insecure verifies nothing", () => {
    const o = options({ insecure: true }, dns("c.example.com"))
    expect(o.connect.rejectUnauthorized).toBe(false)
    expect(identity({ insecure: true }, dns("c.example.com"), server)).toBeUndefined()
  })

  it("insecureHost verifies the chain but no name, and wins over insecure (upstream's precedence)", () => {
    for (const config of [{ insecureHost: true }, { insecureHost: true, insecure: true }, { insecureHost: true, subjectAltNames: ["nope.example.com"] }]) {
      expect(options(config, dns("c.example.com")).connect.rejectUnauthorized).toBe(true)
      expect(identity(config, dns("c.example.com"), server)).toBeUndefined()
    }
  })

  it("subjectAltNames replaces the name check: any listed DNS name, IP or URI SAN matches", () => {
    const target = dns("not-in-the-cert.example.com")
    expect(identity({ subjectAltNames: ["x.example.com", "b.example.com"] }, target, server)).toBeUndefined()
    expect(identity({ subjectAltNames: ["127.0.0.1"] }, target, server)).toBeUndefined()
    expect(identity({ subjectAltNames: ["spiffe://example.org/ns/default/sa/upstream"] }, target, uriServer)).toBeUndefined()
    expect(identity({ subjectAltNames: ["spiffe://example.org/ns/default/sa/other", "x.example.com"] }, target, uriServer)).toBe(
      "certificate SANs (URI:spiffe://example.org/ns/default/sa/upstream, DNS:upstream.internal) match none of subjectAltNames (spiffe://example.org/ns/default/sa/other, x.example.com)"
    )
    // The target's own name does not count once subjectAltNames is set.
    expect(identity({ subjectAltNames: ["x.example.com"] }, dns("a.example.com"), server)).toMatch(/match none of subjectAltNames \(x\.example\.com\)/)
    // A URI is matched exactly, never as a DNS name.
    expect(identity({ subjectAltNames: ["spiffe://upstream.internal"] }, target, uriServer)).toMatch(/match none/)
  })

  it("the pool key tells every TLS difference apart, PEM contents included", () => {
    const key = (config: BackendTls.Config, material = withRoot, target = dns("a.example.com")) => options(config, target, material).key
    const all = [
      key({}),
      key({}, none),
      key({}, { cert: pem("client.pem"), key: pem("client.key"), root: pem("ca.pem") }),
      key({}, { cert: undefined, key: undefined, root: pem("server.pem") }),
      key({ hostname: "b.example.com" }),
      key({ insecure: true }),
      key({ insecureHost: true }),
      key({ subjectAltNames: ["b.example.com"] }),
      key({ subjectAltNames: ["a.example.com"] }),
      key({ keyExchangeGroups: ["P-384"] })
    ]
    expect(new Set(all).size).toBe(all.length)
    expect(key({ hostname: "a.example.com" })).toBe(key({ hostname: "a.example.com" }))
    expect(key({ alpn: ["http/1.1"] })).toBe(key({}))
  })
})

const errors = async (yaml: string): Promise<ReadonlyArray<string>> => {
  const exit = await Effect.runPromiseExit(validate({ _tag: "Inline", text: yaml }))
  if (Exit.isSuccess(exit)) return []
  const error = Cause.squash(exit.cause)
  if (typeof error === "object" && error !== null && "issues" in error && Array.isArray(error.issues)) return error.issues.map(formatIssue)
  throw new Error(String(error))
}

const onRoute = (tlsYaml: string) => `
binds:
- port: 3000
  listeners:
  - routes:
    - policies:
        backendTLS: ${tlsYaml}
      backends:
      - host: 127.0.0.1:8443
`
const onBackend = (tlsYaml: string) => `
binds:
- port: 3000
  listeners:
  - routes:
    - backends:
      - host: 127.0.0.1:8443
        policies:
          backendTLS: ${tlsYaml}
`
const f = (name: string) => path.join(dir, name)

describe("backendTLS config", () => {
  it("decodes and compiles on a route and on a backend", async () => {
    expect(await errors(onRoute("{}"))).toEqual([])
    expect(await errors(onBackend(`{root: ${f("ca.pem")}, cert: ${f("client.pem")}, key: ${f("client.key")}, hostname: a.example.com, alpn: [http/1.1], keyExchangeGroups: [X25519, P-256, P-384, X25519_MLKEM768]}`))).toEqual([])
    expect(await errors(onBackend(`{subjectAltNames: [a.example.com, 10.0.0.1, "spiffe://td/ns/x/sa/y"], insecureHost: false, insecure: false}`))).toEqual([])
  })

  it("rejects what it cannot do, naming the field", async () => {
    expect(await errors(onRoute("{alpn: [h2, http/1.1]}"))).toEqual([
      `<inline>:7:22 binds[0].listeners[0].routes[0].policies.backendTLS.alpn: only ["http/1.1"] is supported: effect-agentgateway speaks HTTP/1.1 to upstreams (h2 is not supported yet)`
    ])
    expect(await errors(onBackend("{spiffe: {}}"))).toEqual([
      "<inline>:9:24 binds[0].listeners[0].routes[0].backends[0].policies.backendTLS.spiffe: backendTLS.spiffe (identity from the SPIFFE Workload API) is not supported yet by effect-agentgateway"
    ])
  })

  it("rejects inconsistent settings at decode time", async () => {
    const [certOnly] = await errors(onBackend(`{cert: ${f("client.pem")}}`))
    expect(certOnly).toMatch(/backends\[0\]\.policies\.backendTLS: cert is set without key: a client certificate needs its private key$/)
    const [keyOnly] = await errors(onBackend(`{key: ${f("client.key")}}`))
    expect(keyOnly).toMatch(/backends\[0\]\.policies\.backendTLS: key is set without cert: a private key needs its client certificate$/)
    const [emptySans] = await errors(onBackend("{subjectAltNames: []}"))
    expect(emptySans).toMatch(/backendTLS\.subjectAltNames: an empty list accepts no certificate; omit subjectAltNames to verify the hostname$/)
    const [badSan] = await errors(onBackend(`{subjectAltNames: ["not a name"]}`))
    expect(badSan).toMatch(/backendTLS\.subjectAltNames\[0\]: invalid subject alternative name "not a name"/)
    const [badHost] = await errors(onBackend(`{hostname: "a..b"}`))
    expect(badHost).toMatch(/backendTLS\.hostname: invalid server name "a\.\.b" \(expected a DNS name or an IP address\)$/)
    const [badGroup] = await errors(onBackend("{keyExchangeGroups: [X448]}"))
    expect(badGroup).toMatch(/backendTLS\.keyExchangeGroups\[0\]: /)
  })

  it("a missing, unreadable or invalid PEM file is a config error naming the field", async () => {
    const at = "binds[0].listeners[0].routes[0].backends[0].policies.backendTLS"
    const [missing] = await errors(onBackend("{root: /nonexistent/ca.pem}"))
    expect(missing).toMatch(new RegExp(`^<inline>:9:\\d+ ${at.replace(/[.[\]]/g, "\\$&")}\\.root: cannot read /nonexistent/ca\\.pem: ENOENT`))
    const [notPem] = await errors(onBackend(`{root: ${f("README.md")}}`))
    expect(notPem).toContain(`${at}.root: no PEM certificate in ${f("README.md")}`)
    const [keyAsCert] = await errors(onBackend(`{cert: ${f("client.key")}, key: ${f("client.key")}}`))
    expect(keyAsCert).toContain(`${at}.cert: no PEM certificate in ${f("client.key")}`)
    const [certAsKey] = await errors(onBackend(`{cert: ${f("client.pem")}, key: ${f("client.pem")}}`))
    expect(certAsKey).toContain(`${at}.key: invalid private key in ${f("client.pem")}`)
    const [mismatch] = await errors(onBackend(`{cert: ${f("client.pem")}, key: ${f("server.key")}}`))
    expect(mismatch).toMatch(/backendTLS: invalid TLS settings: .*key values mismatch/)
  })
})
