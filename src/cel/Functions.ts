/**
 * agentgateway's CEL function library on top of cel-js's standard one (`schema/cel-functions.md`):
 * JSON, encodings, digests, `default`/`coalesce`, map helpers, header views, query accessors,
 * the strings and math extensions, and the Kubernetes IP/CIDR library. Registered once, on the
 * one process-wide Environment (Cel.ts). Handlers throw `EvaluationError`; Program turns every
 * throw into an evaluation error value, so none of them reaches the request path.
 *
 * @since 0.1.0
 */
import * as Json from "../shared/Json.ts"
import { type ASTNode, type Environment, EvaluationError } from "@marcbachmann/cel-js"
import { createHash, randomUUID } from "node:crypto"
import * as net from "node:net"
import * as LinearRegex from "../shared/LinearRegex.ts"
import * as Headers from "../shared/headers.ts"

// ---------------------------------------------------------------------------------------------
// Values: conversions between JSON and CEL (ints are BigInt, bytes are Uint8Array)
// ---------------------------------------------------------------------------------------------

const INTEGER_SOURCE = /^-?\d+$/

/**
 * Parses JSON into CEL values: integral numbers become `int` (BigInt, exact from the source
 * text), others `double`, as serde_json → cel does upstream.
 */
export const parseJson = (text: string): unknown =>
  // Bounded nesting, checked before parsing: `json(request.body)` reads a client's body.
  Json.parseBounded(text, Json.MAX_NESTING, (_key, value: unknown, context?: { source?: string }) => {
    if (typeof value !== "number") return value
    const source = context?.source
    if (source !== undefined) return INTEGER_SOURCE.test(source) ? BigInt(source) : value
    return Number.isSafeInteger(value) ? BigInt(value) : value
  })

/** Converts an already-decoded JSON value (JWT claims, metadata) into CEL values. */
export const fromJson = (value: unknown): unknown => {
  if (typeof value === "number") return Number.isInteger(value) && Number.isSafeInteger(value) ? BigInt(value) : value
  if (Array.isArray(value)) return value.map(fromJson)
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = fromJson(v)
    return out
  }
  return value
}

const utf8 = new TextDecoder("utf-8")

/** A CEL value as plain JSON data (ints as numbers, bytes as base64, durations as strings). */
export const toJsonValue = (value: unknown): unknown => {
  switch (typeof value) {
    case "bigint":
      return Number(value)
    case "string":
    case "boolean":
      return value
    case "number":
      return Number.isFinite(value) ? value : null
    case "undefined":
      return null
    case "object": {
      if (value === null) return null
      if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64")
      if (value instanceof Date) return value.toISOString()
      if (Array.isArray(value) || value instanceof Set) return Array.from(value, toJsonValue)
      if (value instanceof Map) {
        const out: Record<string, unknown> = {}
        for (const [k, v] of value) out[String(k)] = toJsonValue(v)
        return out
      }
      const json = jsonOf(value)
      if (json !== undefined) return json
      const out: Record<string, unknown> = {}
      for (const [k, v] of Object.entries(value)) out[k] = toJsonValue(v)
      return out
    }
    default:
      return String(value)
  }
}

/** Objects that serialise themselves (durations, IPs, context structs) via `toJSON`/`toString`. */
const jsonOf = (value: object): unknown => {
  const proto: unknown = Object.getPrototypeOf(value)
  if (proto === null || proto === Object.prototype || proto === Headers.PROTOTYPE) return undefined
  if ("toJSON" in value && typeof value.toJSON === "function") return toJsonValue(value.toJSON())
  return String(value)
}

export const toJsonString = (value: unknown): string => JSON.stringify(toJsonValue(value))

/** The text form of a value, as header values and bodies take it. */
export const toText = (value: unknown): string => {
  switch (typeof value) {
    case "string":
      return value
    case "bigint":
    case "number":
    case "boolean":
      return String(value)
    default:
      if (value instanceof Uint8Array) return utf8.decode(value)
      return toJsonString(value)
  }
}

const fail = (message: string): never => {
  throw new EvaluationError(message)
}

const bytesOf = (v: string | Uint8Array): Buffer =>
  typeof v === "string" ? Buffer.from(v, "utf8") : Buffer.from(v.buffer, v.byteOffset, v.byteLength)

const digest = (algorithm: string) => (v: string | Uint8Array): string => createHash(algorithm).update(bytesOf(v)).digest("hex")

// ---------------------------------------------------------------------------------------------
// Header views and query accessors
// ---------------------------------------------------------------------------------------------

type HeaderLike = Record<string, unknown>

/** Headers `redacted()` hides; agentgateway's default sensitive set. */
const SENSITIVE_HEADERS: ReadonlySet<string> = new Set(["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"])
const REDACTED = "<redacted>"

const headerValues = (v: unknown): Array<string> =>
  typeof v === "string" ? [v] : Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : []

const mapHeaders = (headers: HeaderLike, f: (values: Array<string>) => unknown): Record<string, unknown> => {
  const out: Record<string, unknown> = Object.create(null)
  for (const name in headers) out[name] = f(headerValues(headers[name]))
  return out
}

const cookie = (headers: HeaderLike, name: string): string => {
  for (const header of headerValues(headers["cookie"])) {
    for (const pair of header.split(";")) {
      const eq = pair.indexOf("=")
      if (eq < 0) continue
      if (pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim()
    }
  }
  return fail(`No such key: ${name}`)
}

const splitQuery = (s: string): { readonly base: string; readonly params: URLSearchParams } => {
  const q = s.indexOf("?")
  return q < 0 ? { base: s, params: new URLSearchParams() } : { base: s.slice(0, q), params: new URLSearchParams(s.slice(q + 1)) }
}

const withQuery = (base: string, params: URLSearchParams): string => {
  const q = params.toString()
  return q === "" ? base : `${base}?${q}`
}

// ---------------------------------------------------------------------------------------------
// Kubernetes IP / CIDR library
// ---------------------------------------------------------------------------------------------

/** An IP address (`ip("…")`); `bits` is the address as a 32- or 128-bit integer. */
export class IpAddress {
  readonly family: 4 | 6
  readonly bits: bigint
  readonly text: string
  constructor(family: 4 | 6, bits: bigint, text: string) {
    this.family = family
    this.bits = bits
    this.text = text
  }
  toString(): string {
    return this.text
  }
}

/** A CIDR (`cidr("…")`); `address` may have host bits set, as Kubernetes allows. */
export class Cidr {
  readonly address: IpAddress
  readonly prefix: number
  readonly text: string
  constructor(address: IpAddress, prefix: number, text: string) {
    this.address = address
    this.prefix = prefix
    this.text = text
  }
  toString(): string {
    return this.text
  }
}

const ipv4Bits = (s: string): bigint => {
  let out = 0n
  for (const part of s.split(".")) out = (out << 8n) | BigInt(Number(part))
  return out
}

const ipv6Bits = (s: string): bigint => {
  let text = s
  // An embedded IPv4 tail (`::1.2.3.4`) becomes two hextets.
  const lastColon = text.lastIndexOf(":")
  const tail = text.slice(lastColon + 1)
  if (tail.includes(".")) {
    const v4 = ipv4Bits(tail)
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`
  }
  const [head = "", rest] = text.split("::")
  const left = head === "" ? [] : head.split(":")
  const right = rest === undefined || rest === "" ? [] : rest.split(":")
  const groups = rest === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right]
  let out = 0n
  for (const g of groups) out = (out << 16n) | BigInt(parseInt(g, 16))
  return out
}

/** Parses an address with Kubernetes' rules: no zones, no IPv4-mapped IPv6, no leading zeros. */
export const parseIp = (s: string): IpAddress | undefined => {
  const family = net.isIP(s)
  if (family === 4) return new IpAddress(4, ipv4Bits(s), s)
  if (family === 6) {
    if (s.includes("%")) return undefined
    const bits = ipv6Bits(s)
    if (bits >> 32n === 0xffffn) return undefined
    return new IpAddress(6, bits, s)
  }
  return undefined
}

export const parseCidr = (s: string): Cidr | undefined => {
  const slash = s.indexOf("/")
  if (slash < 0) return undefined
  const address = parseIp(s.slice(0, slash))
  const prefixText = s.slice(slash + 1)
  if (address === undefined || !/^\d{1,3}$/.test(prefixText)) return undefined
  const prefix = Number(prefixText)
  if (prefix > (address.family === 4 ? 32 : 128)) return undefined
  return new Cidr(address, prefix, s)
}

const widthOf = (family: 4 | 6): bigint => (family === 4 ? 32n : 128n)

const maskOf = (family: 4 | 6, prefix: number): bigint => {
  const width = widthOf(family)
  return ((1n << BigInt(prefix)) - 1n) << (width - BigInt(prefix))
}

const containsIp = (c: Cidr, ip: IpAddress): boolean => {
  if (c.address.family !== ip.family) return false
  const mask = maskOf(ip.family, c.prefix)
  return (c.address.bits & mask) === (ip.bits & mask)
}

const formatIp = (family: 4 | 6, bits: bigint): string => {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((bits >> s) & 0xffn)).join(".")
  const groups: Array<string> = []
  for (let i = 7n; i >= 0n; i--) groups.push(((bits >> (i * 16n)) & 0xffffn).toString(16))
  // Canonical form via Node's URL parser (RFC 5952 compression).
  return new URL(`http://[${groups.join(":")}]/`).hostname.slice(1, -1)
}

const requireIp = (s: string): IpAddress => parseIp(s) ?? fail(`IP Address '${s}' parse error`)
const requireCidr = (s: string): Cidr => parseCidr(s) ?? fail(`network address parse error during conversion from string: ${s}`)

const isGlobalUnicast = (ip: IpAddress): boolean => {
  if (ip.family === 4) {
    return ip.bits !== 0n && ip.bits !== 0xffffffffn && (ip.bits >> 24n) !== 127n && (ip.bits >> 28n) !== 0xen &&
      (ip.bits >> 16n) !== 0xa9fen
  }
  return ip.bits !== 0n && ip.bits !== 1n && (ip.bits >> 120n) !== 0xffn && (ip.bits >> 118n) !== 0x3fan
}

// ---------------------------------------------------------------------------------------------
// Macros: `default`, `coalesce`, and the binding helpers (`with`, `mapValues`, `filterKeys`)
// ---------------------------------------------------------------------------------------------

/** The parts of cel-js's checker the macros use. */
interface Checker {
  check(node: ASTNode, ctx: Scope): TypeDecl
  getType(name: string): TypeDecl
}
/** The parts of cel-js's evaluator the macros use. */
interface Evaluator {
  run(node: ASTNode, ctx: Scope): unknown
  tryEval(node: ASTNode, ctx: Scope): unknown
}
interface TypeDecl {
  readonly kind: string
  readonly name: string
  readonly valueType?: TypeDecl
}
interface Scope {
  forkWithVariable(name: string, type: TypeDecl): Scope
  reuse(parent: Scope): Scope
  setIterValue(value: unknown, ev: Evaluator): Scope
}
interface MacroInput {
  readonly args: ReadonlyArray<ASTNode>
  readonly receiver?: ASTNode
}

/** Errors `default` swallows: a missing key or an absent variable, as upstream. */
const MISSING_CODES: ReadonlySet<string> = new Set(["no_such_key", "unknown_variable", "index_out_of_bounds"])

const isMissing = (v: unknown): boolean =>
  v === null || v === undefined || (v instanceof EvaluationError && MISSING_CODES.has(v.code))

const unifyAll = (checker: Checker, types: ReadonlyArray<TypeDecl>): TypeDecl => {
  const first = types[0]
  return first !== undefined && types.every((t) => t.name === first.name) ? first : checker.getType("dyn")
}

const defaultMacro = ({ args }: MacroInput) => {
  const [expr, fallback] = args
  return {
    typeCheck(checker: Checker, _m: unknown, ctx: Scope): TypeDecl {
      return unifyAll(checker, [checker.check(expr!, ctx), checker.check(fallback!, ctx)])
    },
    evaluate(ev: Evaluator, _m: unknown, ctx: Scope): unknown {
      const v = ev.tryEval(expr!, ctx)
      if (isMissing(v)) return ev.run(fallback!, ctx)
      if (v instanceof Error) throw v
      return v
    }
  }
}

const coalesceMacro = ({ args }: MacroInput) => ({
  typeCheck(checker: Checker, _m: unknown, ctx: Scope): TypeDecl {
    return unifyAll(checker, args.map((a) => checker.check(a, ctx)))
  },
  evaluate(ev: Evaluator, _m: unknown, ctx: Scope): unknown {
    let sawNull = false
    let lastError: unknown = undefined
    for (const arg of args) {
      const v = ev.tryEval(arg, ctx)
      if (v === null) sawNull = true
      else if (v instanceof Error) lastError = v
      else return v
    }
    if (sawNull) return null
    throw lastError
  }
})

const identifierOf = (node: ASTNode | undefined, what: string): string => {
  if (node?.op === "id") return node.args
  throw new EvaluationError(`${what}: the first argument must be an identifier`)
}

/** `x.with(v, expr)`: binds `x` to `v` inside `expr` (agentgateway's variable binding). */
const withMacro = ({ args, receiver }: MacroInput) => {
  const name = identifierOf(args[0], "with")
  const body = args[1]!
  let scope: Scope | undefined
  return {
    typeCheck(checker: Checker, _m: unknown, ctx: Scope): TypeDecl {
      scope = ctx.forkWithVariable(name, checker.check(receiver!, ctx))
      return checker.check(body, scope)
    },
    evaluate(ev: Evaluator, _m: unknown, ctx: Scope): unknown {
      const value = ev.run(receiver!, ctx)
      return ev.run(body, scope!.reuse(ctx).setIterValue(value, ev))
    }
  }
}

const entriesOf = (m: unknown): Array<[unknown, unknown]> => {
  if (m instanceof Map) return [...m.entries()]
  if (m !== null && typeof m === "object" && !Array.isArray(m)) return Object.entries(m)
  return fail("expected a map")
}

/** `m.mapValues(v, expr)` and `m.filterKeys(k, pred)`: comprehensions over a map. */
const mapMacro = (mode: "values" | "keys") => ({ args, receiver }: MacroInput) => {
  const name = identifierOf(args[0], mode === "values" ? "mapValues" : "filterKeys")
  const body = args[1]!
  let scope: Scope | undefined
  return {
    typeCheck(checker: Checker, _m: unknown, ctx: Scope): TypeDecl {
      const mapType = checker.check(receiver!, ctx)
      const iterType = mode === "keys" ? checker.getType("string") : mapType.kind === "map" && mapType.valueType !== undefined ? mapType.valueType : checker.getType("dyn")
      scope = ctx.forkWithVariable(name, iterType)
      checker.check(body, scope)
      return mode === "keys" ? mapType : checker.getType("map")
    },
    evaluate(ev: Evaluator, _m: unknown, ctx: Scope): unknown {
      const out: Record<string, unknown> = {}
      for (const [k, v] of entriesOf(ev.run(receiver!, ctx))) {
        const inner = scope!.reuse(ctx).setIterValue(mode === "keys" ? k : v, ev)
        const r = ev.run(body, inner)
        if (mode === "values") out[String(k)] = r
        else if (r === true) out[String(k)] = v
        else if (r !== false) fail("filterKeys predicate must return bool")
      }
      return out
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

/** Marker classes for the namespaces (`math.`, `base64.` …): cel-js resolves `ns.fn()` as a method. */
class MathNamespace {}
class Base64Namespace {}
class UrlNamespace {}
class FormNamespace {}
class DigestNamespace {
  readonly algorithm: string
  constructor(algorithm: string) {
    this.algorithm = algorithm
  }
}

/** Upper bound of the variadic functions' arity (`coalesce`, `math.least`, …). */
const MAX_VARIADIC_ARGS = 8

const regexCache = new Map<string, RegExp>()
/** Bound on the compiled-regex cache of `regexReplace` (patterns are almost always literals). */
const MAX_CACHED_REGEXES = 256

const compileRegex = (pattern: string): RegExp => {
  let re = regexCache.get(pattern)
  if (re === undefined) {
    try {
      re = LinearRegex.compile(pattern)
    } catch {
      return fail(`'${pattern}' not a valid regex`)
    }
    if (regexCache.size >= MAX_CACHED_REGEXES) regexCache.clear()
    regexCache.set(pattern, re)
  }
  return re
}

/** Rust regex replacement syntax (`$1`, `${1}`, `$name`, `${name}`) → JavaScript's. */
const toJsReplacement = (s: string): string =>
  s.replace(/\$(?:\{(\w+)\}|([A-Za-z_]\w*)|(\d+)|(\$))/g, (_m, braced?: string, named?: string, num?: string, dollar?: string) => {
    if (dollar !== undefined) return "$$"
    const name = braced ?? named ?? num ?? ""
    return /^\d+$/.test(name) ? `$${name}` : `$<${name}>`
  })

const numeric = (v: unknown): number | bigint => (typeof v === "bigint" || typeof v === "number" ? v : fail("math: argument must be a number"))

const compare = (a: number | bigint, b: number | bigint): number => (a < b ? -1 : a > b ? 1 : 0)

const extremum = (values: ReadonlyArray<unknown>, sign: 1 | -1): unknown => {
  if (values.length === 0) return fail("math: at least one argument required")
  let best = numeric(values[0])
  for (let i = 1; i < values.length; i++) {
    const v = numeric(values[i])
    if (compare(v, best) * sign > 0) best = v
  }
  return best
}

const listOf = (v: unknown): ReadonlyArray<unknown> => (Array.isArray(v) ? v : v instanceof Set ? [...v] : fail("expected a list"))

const formDecode = (v: string | Uint8Array): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  for (const [k, value] of new URLSearchParams(typeof v === "string" ? v : utf8.decode(v))) {
    const prev = out[k]
    out[k] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value]
  }
  return out
}

const formEncode = (m: unknown): string => {
  const params = new URLSearchParams()
  const entries = entriesOf(m).map(([k, v]) => [String(k), v] as const).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  for (const [k, v] of entries) {
    for (const item of Array.isArray(v) ? v : [v]) if (item !== null && item !== undefined) params.append(k, toText(item))
  }
  return params.toString()
}

/** Percent-encodes everything but RFC 3986 unreserved characters, as Rust's `urlencoding`. */
const urlEncode = (s: string): string => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)

const urlDecode = (s: string): string => {
  try {
    return decodeURIComponent(s)
  } catch {
    return fail("url.decode: invalid percent-encoding")
  }
}

const base64Decode = (s: string): Uint8Array => {
  const clean = s.trim()
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(clean)) return fail("base64.decode: invalid base64")
  return new Uint8Array(Buffer.from(clean, "base64"))
}

const unvalidatedJwtPayload = (token: string): unknown => {
  const parts = token.split(".")
  const payload = parts[1]
  if (parts.length !== 3 || payload === undefined) return fail("unvalidatedJwtPayload: not a JWT")
  return parseJson(Buffer.from(payload, "base64url").toString("utf8"))
}

const charAt = (s: string, i: bigint): string => {
  const chars = [...s]
  const n = Number(i)
  if (n < 0 || n > chars.length) return fail(`index out of range: ${i}`)
  return chars[n] ?? ""
}

const replaceN = (s: string, from: string, to: string, n: bigint): string => {
  if (n < 0n) return s.split(from).join(to)
  let out = s
  let pos = 0
  for (let i = 0n; i < n; i++) {
    const at = out.indexOf(from, pos)
    if (at < 0) break
    out = out.slice(0, at) + to + out.slice(at + from.length)
    pos = at + to.length
    if (from === "") pos++
  }
  return out
}

const sqrt = (v: unknown): number => Math.sqrt(Number(numeric(v)))

const ipFunctions = (env: Environment): void => {
  env.registerType("net.IP", IpAddress)
  env.registerType("net.CIDR", Cidr)
  env.registerFunction("isIP(string): bool", (s: string) => parseIp(s) !== undefined)
  env.registerFunction("isCIDR(string): bool", (s: string) => parseCidr(s) !== undefined)
  env.registerFunction("ip(string): net.IP", requireIp)
  env.registerFunction("cidr(string): net.CIDR", requireCidr)
  env.registerFunction("string(net.IP): string", (ip: IpAddress) => ip.text)
  env.registerFunction("string(net.CIDR): string", (c: Cidr) => c.text)
  env.registerFunction("net.IP.family(): int", (ip: IpAddress) => BigInt(ip.family))
  env.registerFunction("net.IP.isUnspecified(): bool", (ip: IpAddress) => ip.bits === 0n)
  env.registerFunction("net.IP.isLoopback(): bool", (ip: IpAddress) => (ip.family === 4 ? ip.bits >> 24n === 127n : ip.bits === 1n))
  env.registerFunction(
    "net.IP.isLinkLocalMulticast(): bool",
    (ip: IpAddress) => (ip.family === 4 ? ip.bits >> 8n === 0xe00000n : ip.bits >> 112n === 0xff02n)
  )
  env.registerFunction(
    "net.IP.isLinkLocalUnicast(): bool",
    (ip: IpAddress) => (ip.family === 4 ? ip.bits >> 16n === 0xa9fen : ip.bits >> 118n === 0x3fan)
  )
  env.registerFunction("net.IP.isGlobalUnicast(): bool", isGlobalUnicast)
  env.registerFunction("net.CIDR.containsIP(string): bool", (c: Cidr, s: string) => containsIp(c, requireIp(canonicalAddress(s))))
  env.registerFunction("net.CIDR.containsIP(net.IP): bool", containsIp)
  env.registerFunction(
    "net.CIDR.containsCIDR(net.CIDR): bool",
    (c: Cidr, o: Cidr) => o.prefix >= c.prefix && containsIp(c, o.address)
  )
  env.registerFunction("net.CIDR.containsCIDR(string): bool", (c: Cidr, s: string) => {
    const o = requireCidr(s)
    return o.prefix >= c.prefix && containsIp(c, o.address)
  })
  env.registerFunction("net.CIDR.ip(): net.IP", (c: Cidr) => c.address)
  env.registerFunction("net.CIDR.prefixLength(): int", (c: Cidr) => BigInt(c.prefix))
  env.registerFunction("net.CIDR.masked(): net.CIDR", (c: Cidr) => {
    const bits = c.address.bits & maskOf(c.address.family, c.prefix)
    const text = formatIp(c.address.family, bits)
    return new Cidr(new IpAddress(c.address.family, bits, text), c.prefix, `${text}/${c.prefix}`)
  })
  env.registerOperator("net.IP == net.IP", (a: IpAddress, b: IpAddress) => a.family === b.family && a.bits === b.bits)
  env.registerOperator(
    "net.CIDR == net.CIDR",
    (a: Cidr, b: Cidr) => a.prefix === b.prefix && a.address.family === b.address.family && a.address.bits === b.address.bits
  )
}

/**
 * Node reports IPv4 peers of a dual-stack socket as IPv4-mapped IPv6 (`::ffff:1.2.3.4`); CEL
 * sees the IPv4 address, as upstream's canonical `IpAddr`.
 */
export const canonicalAddress = (address: string): string =>
  address.startsWith("::ffff:") && net.isIPv4(address.slice(7)) ? address.slice(7) : address

const namespaces = (env: Environment): void => {
  env.registerType("agw.MathNamespace", MathNamespace)
  env.registerConstant("math", "agw.MathNamespace", new MathNamespace())
  env.registerType("agw.Base64Namespace", Base64Namespace)
  env.registerConstant("base64", "agw.Base64Namespace", new Base64Namespace())
  env.registerType("agw.UrlNamespace", UrlNamespace)
  env.registerConstant("url", "agw.UrlNamespace", new UrlNamespace())
  env.registerType("agw.FormNamespace", FormNamespace)
  env.registerConstant("form", "agw.FormNamespace", new FormNamespace())
  env.registerType("agw.DigestNamespace", DigestNamespace)
  for (const [name, algorithm] of [["sha1", "sha1"], ["sha256", "sha256"], ["md5", "md5"]] as const) {
    env.registerConstant(name, "agw.DigestNamespace", new DigestNamespace(algorithm))
  }
  env.registerFunction("agw.DigestNamespace.encode(string): string", (ns: DigestNamespace, v: string) => digest(ns.algorithm)(v))
  env.registerFunction("agw.DigestNamespace.encode(bytes): string", (ns: DigestNamespace, v: Uint8Array) => digest(ns.algorithm)(v))

  env.registerFunction("agw.Base64Namespace.encode(string): string", (_: Base64Namespace, v: string) => bytesOf(v).toString("base64"))
  env.registerFunction("agw.Base64Namespace.encode(bytes): string", (_: Base64Namespace, v: Uint8Array) => bytesOf(v).toString("base64"))
  env.registerFunction("agw.Base64Namespace.decode(string): bytes", (_: Base64Namespace, v: string) => base64Decode(v))
  env.registerFunction("agw.Base64Namespace.decode(bytes): bytes", (_: Base64Namespace, v: Uint8Array) => base64Decode(utf8.decode(v)))
  env.registerFunction("agw.UrlNamespace.encode(string): string", (_: UrlNamespace, v: string) => urlEncode(v))
  env.registerFunction("agw.UrlNamespace.decode(string): string", (_: UrlNamespace, v: string) => urlDecode(v))
  env.registerFunction("agw.FormNamespace.decode(string): map<string, dyn>", (_: FormNamespace, v: string) => formDecode(v))
  env.registerFunction("agw.FormNamespace.decode(bytes): map<string, dyn>", (_: FormNamespace, v: Uint8Array) => formDecode(v))
  env.registerFunction("agw.FormNamespace.encode(map): string", (_: FormNamespace, m: unknown) => formEncode(m))

  // Math extension (cel-go ext.Math).
  const M = "agw.MathNamespace"
  for (const op of ["least", "greatest"] as const) {
    const sign = op === "greatest" ? 1 : -1
    env.registerFunction(`${M}.${op}(list): dyn`, (_: MathNamespace, l: unknown) => extremum(listOf(l), sign))
    for (let n = 1; n <= MAX_VARIADIC_ARGS; n++) {
      if (n === 1) {
        env.registerFunction(`${M}.${op}(int): int`, (_: MathNamespace, v: bigint) => v)
        env.registerFunction(`${M}.${op}(double): double`, (_: MathNamespace, v: number) => v)
        continue
      }
      env.registerFunction({
        name: op,
        receiverType: M,
        returnType: "dyn",
        params: Array.from({ length: n }, (_, i) => ({ name: `v${i}`, type: "dyn" })),
        handler: (_: MathNamespace, ...values: Array<unknown>) => extremum(values, sign)
      })
    }
  }
  env.registerFunction(`${M}.ceil(double): double`, (_: MathNamespace, v: number) => Math.ceil(v))
  env.registerFunction(`${M}.floor(double): double`, (_: MathNamespace, v: number) => Math.floor(v))
  // Round half away from zero, as cel-go.
  env.registerFunction(`${M}.round(double): double`, (_: MathNamespace, v: number) => Math.sign(v) * Math.round(Math.abs(v)))
  env.registerFunction(`${M}.trunc(double): double`, (_: MathNamespace, v: number) => Math.trunc(v))
  env.registerFunction(`${M}.isInf(double): bool`, (_: MathNamespace, v: number) => v === Infinity || v === -Infinity)
  env.registerFunction(`${M}.isNaN(double): bool`, (_: MathNamespace, v: number) => Number.isNaN(v))
  env.registerFunction(`${M}.isFinite(double): bool`, (_: MathNamespace, v: number) => Number.isFinite(v))
  env.registerFunction(`${M}.abs(int): int`, (_: MathNamespace, v: bigint) => {
    if (v === -(1n << 63n)) return fail("math.abs: integer overflow")
    return v < 0n ? -v : v
  })
  env.registerFunction(`${M}.abs(double): double`, (_: MathNamespace, v: number) => Math.abs(v))
  env.registerFunction(`${M}.sign(int): int`, (_: MathNamespace, v: bigint) => (v > 0n ? 1n : v < 0n ? -1n : 0n))
  env.registerFunction(`${M}.sign(double): double`, (_: MathNamespace, v: number) => Math.sign(v))
  env.registerFunction(`${M}.sqrt(int): double`, (_: MathNamespace, v: bigint) => sqrt(v))
  env.registerFunction(`${M}.sqrt(double): double`, (_: MathNamespace, v: number) => sqrt(v))
  env.registerFunction(`${M}.bitAnd(int, int): int`, (_: MathNamespace, a: bigint, b: bigint) => a & b)
  env.registerFunction(`${M}.bitOr(int, int): int`, (_: MathNamespace, a: bigint, b: bigint) => a | b)
  env.registerFunction(`${M}.bitXor(int, int): int`, (_: MathNamespace, a: bigint, b: bigint) => a ^ b)
  env.registerFunction(`${M}.bitNot(int): int`, (_: MathNamespace, a: bigint) => ~a)
  env.registerFunction(`${M}.bitShiftLeft(int, int): int`, (_: MathNamespace, a: bigint, b: bigint) => {
    if (b < 0n) return fail("math.bitShiftLeft: negative shift")
    return b > 63n ? 0n : BigInt.asIntN(64, a << b)
  })
  env.registerFunction(`${M}.bitShiftRight(int, int): int`, (_: MathNamespace, a: bigint, b: bigint) => {
    if (b < 0n) return fail("math.bitShiftRight: negative shift")
    // Logical shift on the 64-bit pattern, as cel-go.
    return b > 63n ? 0n : BigInt.asIntN(64, BigInt.asUintN(64, a) >> b)
  })
}

const stringsExtension = (env: Environment): void => {
  env.registerFunction("string.charAt(int): string", charAt)
  env.registerFunction("string.replace(string, string): string", (s: string, a: string, b: string) => s.split(a).join(b))
  env.registerFunction("string.replace(string, string, int): string", replaceN)
  env.registerFunction("string.stripPrefix(string): string", (s: string, p: string) => (s.startsWith(p) ? s.slice(p.length) : s))
  env.registerFunction("string.stripSuffix(string): string", (s: string, p: string) => (p !== "" && s.endsWith(p) ? s.slice(0, -p.length) : s))
  env.registerFunction("string.regexReplace(string, string): string", (s: string, re: string, to: string) => s.replace(compileRegex(re), toJsReplacement(to)))
  env.registerFunction("string.reverse(): string", (s: string) => [...s].reverse().join(""))
  // Query accessors: `request.pathAndQuery` and `request.uri` are strings here, so the
  // accessors apply to any string holding a `?query` (see README.md).
  env.registerFunction("string.query(string): list<string>", (s: string, k: string) => {
    const values = splitQuery(s).params.getAll(k)
    return values.length === 0 ? fail(`No such key: ${k}`) : values
  })
  env.registerFunction("string.addQuery(string, string): string", (s: string, k: string, v: string) => {
    const { base, params } = splitQuery(s)
    params.append(k, v)
    return withQuery(base, params)
  })
  env.registerFunction("string.setQuery(string, string): string", (s: string, k: string, v: string) => {
    const { base, params } = splitQuery(s)
    params.set(k, v)
    return withQuery(base, params)
  })
}

const headerViews = (env: Environment): void => {
  const H = "map<string, dyn>"
  const view = (name: string, returnType: string, handler: (h: HeaderLike) => unknown) =>
    env.registerFunction({ name, receiverType: H, returnType, params: [], handler })
  view("join", "map<string, string>", (h) => mapHeaders(h, (v) => v.join(",")))
  view("raw", "map<string, list<string>>", (h) => mapHeaders(h, (v) => v))
  view("split", "map<string, list<string>>", (h) => mapHeaders(h, (v) => v.flatMap((x) => x.split(",").map((s) => s.trim()))))
  view("redacted", H, (h) => {
    const out: HeaderLike = Object.create(null)
    for (const name in h) out[name] = SENSITIVE_HEADERS.has(name) ? REDACTED : h[name]
    return out
  })
  env.registerFunction({
    name: "cookie",
    receiverType: H,
    returnType: "string",
    params: [{ name: "name", type: "string" }],
    handler: cookie
  })
}

/** Registers agentgateway's functions on `env` (once per process, from Cel.ts). */
export const register = (env: Environment): void => {
  env.registerFunction("json(string): dyn", parseJson)
  env.registerFunction("json(bytes): dyn", (b: Uint8Array) => parseJson(utf8.decode(b)))
  env.registerFunction("toJson(dyn): string", toJsonString)
  env.registerFunction("to_json(dyn): string", toJsonString)
  env.registerFunction("unvalidatedJwtPayload(string): dyn", unvalidatedJwtPayload)
  env.registerFunction("random(): double", () => Math.random())
  env.registerFunction("uuid(): string", () => randomUUID())
  env.registerFunction("fail(): dyn", () => fail("fail() called"))
  env.registerFunction("fail(string): dyn", (message: string) => fail(message))
  env.registerFunction("max(list): dyn", (l: unknown) => extremum(listOf(l), 1))
  env.registerFunction("min(list): dyn", (l: unknown) => extremum(listOf(l), -1))
  env.registerFunction("map.merge(map): map", (a: unknown, b: unknown) => ({ ...Object.fromEntries(entriesOf(a)), ...Object.fromEntries(entriesOf(b)) }))
  env.registerFunction("base64Encode(string): string", (v: string) => bytesOf(v).toString("base64"))
  env.registerFunction("base64Decode(string): bytes", base64Decode)
  env.registerFunction("default(ast, ast): dyn", defaultMacro)
  for (let n = 1; n <= MAX_VARIADIC_ARGS; n++) {
    env.registerFunction({
      name: "coalesce",
      returnType: "dyn",
      params: Array.from({ length: n }, (_, i) => ({ name: `v${i}`, type: "ast" })),
      handler: coalesceMacro
    })
  }
  env.registerFunction("dyn.with(ast, ast): dyn", withMacro)
  env.registerFunction("map.mapValues(ast, ast): map", mapMacro("values"))
  env.registerFunction("map.filterKeys(ast, ast): map", mapMacro("keys"))
  stringsExtension(env)
  headerViews(env)
  namespaces(env)
  ipFunctions(env)
}
