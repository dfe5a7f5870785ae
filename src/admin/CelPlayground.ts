/**
 * `POST /api/cel` (and upstream's `/cel`): evaluates one expression against a sample request
 * context, for the UI's CEL playground and for operators testing a policy expression.
 *
 * Body: `{"expression": "...", "data": {...}}`, where `data` follows upstream's `ExecutorSerde`:
 * `request` (`method`, `uri` or `path` + `host` + `scheme`, `version`, `headers`, `body` as a
 * UTF-8 string), `response` (`code`, `headers`, `body`), `source` (`address`, `port`), `backend`
 * (`name`, `type`, `protocol`), and `jwt`, `apiKey`, `basicAuth`, `mcp`, `llm`, `metadata` as
 * plain JSON. Without `request`, a `GET http://localhost/` with no headers stands in.
 *
 * Answers `200 {"result": <JSON>}`; any error (bad JSON, a compile or evaluation error) is
 * `400 {"error": "..."}` (upstream answers those with 200). Expressions are compiled with the
 * shared `Cel.compile` and kept in a small LRU, so a UI re-evaluating one expression against
 * changing data compiles it once.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as http from "node:http"
import * as net from "node:net"
import * as Cel from "../cel/Cel.ts"
import * as CelContext from "../cel/Context.ts"
import * as Functions from "../cel/Functions.ts"
import { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import { ProxyRequest } from "../pipeline/RequestContext.ts"
import * as RequestBody from "../pipeline/RequestBody.ts"
import * as Headers from "../shared/headers.ts"
import { BoundedLru } from "../shared/lru.ts"

/** Largest request body accepted (expression plus sample data). */
export const MAX_BODY_BYTES = 64 * 1024
/** Longest expression accepted. */
export const MAX_EXPRESSION_CHARS = 16 * 1024
/** Compiled expressions kept. */
export const CACHE_SIZE = 256

const cache = new BoundedLru<string, Cel.Program>(CACHE_SIZE)

type Json = Record<string, unknown>

const isObject = (v: unknown): v is Json => v !== null && typeof v === "object" && !Array.isArray(v)
const str = (v: unknown, fallback: string): string => (typeof v === "string" ? v : fallback)

const headerMap = (v: unknown): Headers.HeaderMap => {
  const out = Headers.empty()
  if (!isObject(v)) return out
  for (const [k, value] of Object.entries(v)) {
    if (typeof value === "string") Headers.append(out, k.toLowerCase(), value)
    else if (Array.isArray(value)) for (const item of value) if (typeof item === "string") Headers.append(out, k.toLowerCase(), item)
  }
  return out
}

/** A `ProxyRequest` standing for the sample request (no socket behind it). */
const sampleRequest = (data: Json): ProxyRequest => {
  const r = isObject(data["request"]) ? data["request"] : {}
  const uri = typeof r["uri"] === "string" ? URL.parse(r["uri"]) : null
  const scheme = uri?.protocol === "https:" || r["scheme"] === "https" ? "https" : "http"
  const authority = uri?.host ?? str(r["host"], "localhost")
  const path = uri?.pathname ?? str(r["path"], "/")
  const query = uri?.search ?? ""
  const source = isObject(data["source"]) ? data["source"] : {}
  const raw = new http.IncomingMessage(new net.Socket())
  const headers = headerMap(r["headers"])
  if (headers["host"] === undefined) headers["host"] = authority
  const ctx = new ProxyRequest(
    raw,
    str(r["method"], "GET").toUpperCase(),
    path,
    query,
    authority.replace(/:\d+$/, "").toLowerCase(),
    authority,
    scheme,
    str(r["version"], "HTTP/1.1"),
    headers,
    str(source["address"], "127.0.0.1"),
    typeof source["port"] === "number" ? source["port"] : 0,
    performance.now()
  )
  if (typeof r["body"] === "string") RequestBody.replace(ctx, Buffer.from(r["body"], "utf8"))
  const backend = isObject(data["backend"]) ? data["backend"] : undefined
  if (backend !== undefined) {
    ctx.backend = str(backend["name"], "")
    if (typeof backend["type"] === "string") CelContext.attach(ctx, "backendType", backend["type"])
    if (typeof backend["protocol"] === "string") CelContext.attach(ctx, "backendProtocol", backend["protocol"])
  }
  for (const root of ["jwt", "apiKey", "basicAuth", "mcp", "llm", "metadata"] as const) {
    if (data[root] !== undefined && data[root] !== null) CelContext.attach(ctx, root, Functions.fromJson(data[root]))
  }
  return ctx
}

const sampleResponse = (data: Json): ProxyResponse | undefined => {
  const r = data["response"]
  if (!isObject(r)) return undefined
  const code = typeof r["code"] === "number" ? r["code"] : 200
  return new ProxyResponse(code, headerMap(r["headers"]), typeof r["body"] === "string" ? r["body"] : undefined)
}

export type Outcome = { readonly status: 200; readonly body: { readonly result: unknown } } | { readonly status: 400; readonly body: { readonly error: string } }

const bad = (error: string): Outcome => ({ status: 400, body: { error } })

/** Evaluates a parsed request body. */
export const evaluate = (input: unknown): Outcome => {
  if (!isObject(input)) return bad("expected a JSON object {\"expression\": \"...\", \"data\": {...}}")
  const expression = input["expression"]
  if (typeof expression !== "string" || expression.trim() === "") return bad("\"expression\" must be a non-empty string")
  if (expression.length > MAX_EXPRESSION_CHARS) return bad(`expression longer than ${MAX_EXPRESSION_CHARS} characters`)
  const data = input["data"] ?? {}
  if (!isObject(data)) return bad("\"data\" must be an object")
  let program = cache.get(expression)
  if (program === undefined) {
    const compiled = Effect.runSyncExit(Cel.compile(expression, "expression"))
    if (Exit.isFailure(compiled)) {
      const failure = compiled.cause.reasons.find(Cause.isFailReason)
      const message = failure?.error.issues[0]?.message ?? "invalid expression"
      return bad(`Failed to compile expression: ${message}`)
    }
    program = compiled.value
    cache.set(expression, program)
  }
  const ctx = sampleRequest(data)
  const res = sampleResponse(data)
  const result = program.eval(res === undefined ? CelContext.forRequest(ctx) : CelContext.forResponse(ctx, res))
  if (result._tag === "Failure") return bad(`Evaluation error: ${result.failure.message}`)
  return { status: 200, body: { result: Functions.toJsonValue(result.success) } }
}
