/**
 * `backendTLS`: TLS to the upstream, as agentgateway's `http/backendtls.rs` does it. It is a
 * connection setting, not a middleware: `Snapshot.buildBackend` turns it into the https pool
 * of the backend (`UpstreamPools`), with the PEM files read and checked once per snapshot.
 *
 * - Trust: `root` (a PEM bundle) replaces the default roots. The default roots are Node's CA
 *   store, `tls.getCACertificates("default")`: the Mozilla bundle shipped with Node plus
 *   `NODE_EXTRA_CA_CERTS`, or the operating system's store when Node runs with
 *   `--use-system-ca` (or `NODE_USE_SYSTEM_CA=1`). agentgateway reads the OS store; that flag
 *   gives the same here, without making every deployment depend on the host's store.
 * - Name: `hostname`, else the backend's host (DNS name or IP literal), is the name the
 *   certificate must carry; it is also the SNI when it is a DNS name (an IP is never SNI,
 *   RFC 6066: an IP backend sends none, and an IP `hostname` on a DNS-named backend leaves
 *   undici's default, the backend's name).
 * - Verification, in upstream's precedence: `insecureHost` checks the chain but no name;
 *   else `insecure` checks nothing; else `subjectAltNames`, when set, replaces the name check:
 *   one SAN of the certificate must match one entry (DNS names and IPs as hostname
 *   verification matches them, URIs such as `spiffe://…` exactly).
 * - Protocol: the gateway speaks HTTP/1.1 to upstreams, so `http/1.1` is the only ALPN offered.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { createHash, createPrivateKey, X509Certificate } from "node:crypto"
import * as net from "node:net"
import * as tls from "node:tls"
import type { UpstreamTls } from "../backends/Pools.ts"
import { ConfigError } from "../config/ConfigError.ts"
import { opt, unsupported } from "../config/Fields.ts"
import type * as Ir from "../ir/Ir.ts"
import { read } from "../listeners/Tls.ts"

const DNS_LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/
/** The most characters a DNS name may have (RFC 1035). */
const MAX_DNS_NAME = 253

const isDnsName = (name: string) => {
  const bare = name.endsWith(".") ? name.slice(0, -1) : name
  return bare.length > 0 && bare.length <= MAX_DNS_NAME && bare.split(".").every((label) => DNS_LABEL.test(label))
}

const isServerName = (name: string) => net.isIP(name) !== 0 || isDnsName(name)

const isUri = (name: string) => name.includes("://")

const ServerName = Schema.String.check(
  Schema.makeFilter((s: string) => isServerName(s) || `invalid server name "${s}" (expected a DNS name or an IP address)`)
)

const SubjectAltName = Schema.String.check(
  Schema.makeFilter((s: string) =>
    isServerName(s) || isUri(s) || `invalid subject alternative name "${s}" (expected a DNS name, an IP address or a URI such as spiffe://…)`
  )
)

/** The only protocol the upstream connection speaks. */
const HTTP1 = "http/1.1"

const Alpn = Schema.Array(Schema.String).check(
  Schema.makeFilter((list: ReadonlyArray<string>) =>
    (list.length > 0 && list.every((p) => p === HTTP1)) ||
    `only ["${HTTP1}"] is supported: effect-agentgateway speaks HTTP/1.1 to upstreams (h2 is not supported yet)`
  )
)

export const KeyExchangeGroup = Schema.Literals(["X25519", "P-256", "P-384", "X25519_MLKEM768"])
export type KeyExchangeGroup = typeof KeyExchangeGroup.Type

/** agentgateway's group names → OpenSSL's. */
const OPENSSL_GROUP: Record<KeyExchangeGroup, string> = {
  X25519: "X25519",
  "P-256": "P-256",
  "P-384": "P-384",
  X25519_MLKEM768: "X25519MLKEM768"
}

export const Config = Schema.Struct({
  cert: opt(Schema.String, "Client certificate file (PEM) presented to the backend (mTLS); requires `key`."),
  key: opt(Schema.String, "Private key file (PEM) of the client certificate; requires `cert`."),
  root: opt(Schema.String, "CA bundle file (PEM) that verifies the backend's certificate, replacing the default roots (Node's CA store)."),
  hostname: opt(
    ServerName,
    "Name sent as SNI and verified in the backend's certificate. Default: the backend's host (no SNI when it is an IP)."
  ),
  insecure: opt(Schema.Boolean, "Skip all verification of the backend's certificate."),
  insecureHost: opt(Schema.Boolean, "Verify the backend's certificate chain but not its name (takes precedence over `insecure`)."),
  alpn: opt(Alpn, "ALPN protocols offered to the backend. Only `[\"http/1.1\"]` (the default here) is supported."),
  subjectAltNames: opt(
    Schema.Array(SubjectAltName).check(
      Schema.makeFilter((list: ReadonlyArray<string>) =>
        list.length > 0 || "an empty list accepts no certificate; omit subjectAltNames to verify the hostname"
      )
    ),
    "Accept the backend's certificate when one of its SANs matches one of these (DNS names, IPs, or URIs such as `spiffe://…`), instead of verifying `hostname`."
  ),
  keyExchangeGroups: opt(Schema.Array(KeyExchangeGroup), "Key exchange groups offered in the TLS handshake, in order of preference."),
  spiffe: unsupported("backendTLS.spiffe (identity from the SPIFFE Workload API)")
}).check(
  Schema.makeFilter((c: { readonly cert?: string | null; readonly key?: string | null }) => {
    const cert = c.cert !== undefined && c.cert !== null
    const key = c.key !== undefined && c.key !== null
    if (cert === key) return undefined
    return cert ? "cert is set without key: a client certificate needs its private key" : "key is set without cert: a private key needs its client certificate"
  })
).annotate({ description: "TLS settings for connections to the backend; `{}` means TLS verified against the default roots." })
export type Config = typeof Config.Type

/** PEM file contents, read when the snapshot is built. */
export interface Material {
  readonly cert: Buffer | undefined
  readonly key: Buffer | undefined
  readonly root: Buffer | undefined
}

const URI_SAN = /(?:^|, )URI:("(?:[^"\\]|\\.)*"|[^,]*)/g

/** URI SANs of Node's `subjectaltname` text (values with special characters are JSON-quoted). */
const uriSans = (subjectAltName: string | undefined): ReadonlyArray<string> => {
  if (subjectAltName === undefined) return []
  const out: Array<string> = []
  for (const m of subjectAltName.matchAll(URI_SAN)) {
    const value = m[1]!
    if (!value.startsWith("\"")) out.push(value)
    else {
      try {
        const parsed: unknown = JSON.parse(value)
        if (typeof parsed === "string") out.push(parsed)
      } catch {
        // A malformed entry matches nothing.
      }
    }
  }
  return out
}

type IdentityCheck = (hostname: string, cert: tls.PeerCertificate) => Error | undefined

const noNameCheck: IdentityCheck = () => undefined

/** The name Node would verify is replaced by ours: `hostname`, or the target host. */
const nameCheck = (name: string): IdentityCheck => (_hostname, cert) => tls.checkServerIdentity(name, cert)

const sanCheck = (names: ReadonlyArray<string>): IdentityCheck => {
  const uris = names.filter(isUri)
  const hosts = names.filter((n) => !isUri(n))
  const wanted = names.join(", ")
  return (_hostname, cert) => {
    if (uris.length > 0) {
      const found = uriSans(cert.subjectaltname)
      if (uris.some((u) => found.includes(u))) return undefined
    }
    for (const host of hosts) if (tls.checkServerIdentity(host, cert) === undefined) return undefined
    return new Error(`certificate SANs (${cert.subjectaltname ?? "none"}) match none of subjectAltNames (${wanted})`)
  }
}

const digest = (pem: Buffer | undefined) => (pem === undefined ? "" : createHash("sha256").update(pem).digest("hex"))

const present = <A>(value: A | null | undefined): value is A => value !== undefined && value !== null

/**
 * How the certificate is verified and what undici gets for one target. Pure: no files, no
 * sockets; the secure context (roots, client certificate, groups) is built once here so a new
 * connection does not parse the PEM bundle again.
 */
export const connectOptions = (config: Config, material: Material, target: Ir.HostTarget): UpstreamTls => {
  const name = present(config.hostname) ? config.hostname : target.host
  const sni = net.isIP(name) === 0 ? name : undefined
  const sans = present(config.subjectAltNames) ? config.subjectAltNames : undefined
  const mode = config.insecureHost === true
    ? "insecureHost"
    : config.insecure === true
    ? "insecure"
    : sans !== undefined
    ? "subjectAltNames"
    : "hostname"
  const groups = present(config.keyExchangeGroups) ? config.keyExchangeGroups.map((g) => OPENSSL_GROUP[g]).join(":") : undefined
  const secureContext = tls.createSecureContext({
    ...(material.root === undefined ? {} : { ca: material.root }),
    ...(material.cert === undefined ? {} : { cert: material.cert }),
    ...(material.key === undefined ? {} : { key: material.key }),
    ...(groups === undefined ? {} : { ecdhCurve: groups })
  })
  const checkServerIdentity = mode === "insecureHost" || mode === "insecure"
    ? noNameCheck
    : mode === "subjectAltNames" && sans !== undefined
    ? sanCheck(sans)
    : nameCheck(name)
  return {
    key: JSON.stringify([mode, name, sni ?? "", mode === "subjectAltNames" ? sans : [], groups ?? "", digest(material.root), digest(material.cert), digest(material.key)]),
    connect: {
      secureContext,
      ...(sni === undefined ? {} : { servername: sni }),
      rejectUnauthorized: mode !== "insecure",
      checkServerIdentity
    }
  }
}

const issue = (path: string, message: string) => new ConfigError({ issues: [{ path, message }] })

const causeText = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g

/** Every certificate of a PEM file must parse: OpenSSL silently skips garbage in a CA list. */
const checkCertificates = (pem: Buffer, file: string, path: string): Effect.Effect<void, ConfigError> =>
  Effect.gen(function*() {
    const blocks = pem.toString("latin1").match(PEM_CERTIFICATE) ?? []
    if (blocks.length === 0) return yield* Effect.fail(issue(path, `no PEM certificate in ${file}`))
    for (const block of blocks) {
      yield* Effect.try({ try: () => new X509Certificate(block), catch: (cause) => issue(path, `invalid certificate in ${file}: ${causeText(cause)}`) })
    }
  })

/** Reads and checks the PEM files, then builds the connection options; errors name the field. */
export const load = (config: Config, target: Ir.HostTarget, path: string): Effect.Effect<UpstreamTls, ConfigError> =>
  Effect.gen(function*() {
    let root: Buffer | undefined
    if (present(config.root)) {
      root = yield* read(config.root, `${path}.root`)
      yield* checkCertificates(root, config.root, `${path}.root`)
    }
    let cert: Buffer | undefined
    if (present(config.cert)) {
      cert = yield* read(config.cert, `${path}.cert`)
      yield* checkCertificates(cert, config.cert, `${path}.cert`)
    }
    let key: Buffer | undefined
    if (present(config.key)) {
      const file = config.key
      const pem = yield* read(file, `${path}.key`)
      yield* Effect.try({ try: () => createPrivateKey(pem), catch: (cause) => issue(`${path}.key`, `invalid private key in ${file}: ${causeText(cause)}`) })
      key = pem
    }
    const material: Material = { cert, key, root }
    return yield* Effect.try({
      try: () => connectOptions(config, material, target),
      // What is left once each file parses: a key that is not the certificate's, or groups
      // this OpenSSL does not know.
      catch: (cause) => issue(path, `invalid TLS settings: ${causeText(cause)}`)
    })
  })
