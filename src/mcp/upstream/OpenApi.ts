/**
 * OpenAPI targets: a REST API whose operations become MCP tools (agentgateway
 * `mcp/upstream/openapi`, behaviour reference §2.6). This module is pure conversion — document →
 * tools, `tools/call` arguments → HTTP request, HTTP response → `CallToolResult` — plus the
 * loader of the `schema:` field. It opens no sockets except to fetch a `schema: {url}`.
 *
 * Wiring (done by the MCP core behind its `Upstream` interface, src/mcp/Upstream.ts): `load` runs
 * when the snapshot is built, so a bad document rejects the config. The target is stateless: no
 * connection, no upstream session (its resumable state is `null`, so it can join an encoded
 * session id). `initialize` is answered locally with `capabilities: {tools: {}}` only;
 * `tools/list` returns `tools(spec)`; `prompts/list`, `resources/list` and
 * `resources/templates/list` are empty; `ping` and notifications need no upstream. `tools/call`
 * runs `request(spec, name, args)` — a failure answers `toolError(err)` — and sends the request
 * to `http://<target host:port><path>` through the target's backend policies (downstream
 * headers from the call context may be added where `request` set none, as upstream's
 * `IncomingRequestContext` does), reads at most {@link maxResponseBytes} of the response and
 * answers `result(name, status, contentType, body)`.
 *
 * @since 0.1.0
 */
import * as BoundedJson from "../../shared/Json.ts"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import { readFile, stat } from "node:fs/promises"
import { STATUS_CODES } from "node:http"
import type { Agent } from "undici"
import * as YAML from "yaml"
import { ConfigError } from "../../config/ConfigError.ts"
import { HOP_BY_HOP } from "../../shared/headers.ts"
import { DocumentError, isObject, type Json, type JsonObject, type Location, Resolver, toJson } from "./OpenApiSchema.ts"
import * as Undici from "../../backends/Undici.ts"
import * as BoundedBody from "../../shared/BoundedBody.ts"

export type { Json, JsonObject } from "./OpenApiSchema.ts"

// ---------------------------------------------------------------------------------------------
// Shapes handed to the MCP core (plain JSON, serialisable as they are)
// ---------------------------------------------------------------------------------------------

/** An MCP `Tool` as listed by `tools/list`. */
export interface Tool {
  readonly name: string
  readonly title?: string
  readonly description: string
  readonly inputSchema: JsonObject
}

export interface TextContent {
  readonly type: "text"
  readonly text: string
}

/** An MCP `CallToolResult`. */
export interface CallToolResult {
  readonly content: ReadonlyArray<TextContent>
  readonly structuredContent?: Json
  readonly isError?: boolean
}

/** The `schema:` of an `openapi` target (upstream `FileInlineOrRemote`). */
export type SchemaSource = string | { readonly file: string } | { readonly url: string }

/** The HTTP request one tool call becomes; `path` carries the query string. */
export interface OpenApiRequest {
  readonly method: string
  readonly path: string
  /** Lower-case names, null prototype. */
  readonly headers: Readonly<Record<string, string>>
  readonly body: Uint8Array | undefined
}

/** Why a `tools/call` could not be turned into a request. */
export class ToolCallError extends Data.TaggedError("OpenApiToolCallError")<{
  readonly reason: "UnknownTool" | "InvalidArguments"
  readonly message: string
}> {}

// ---------------------------------------------------------------------------------------------
// The compiled document
// ---------------------------------------------------------------------------------------------

export interface Param {
  readonly name: string
  readonly required: boolean
}

export type BodyKind = "json" | "octet-stream"

/** One operation: its tool and the request template a call fills in. */
export interface Operation {
  readonly tool: Tool
  /** Upper-case HTTP method. */
  readonly method: string
  /** `servers` prefix joined with the path template, `{param}` placeholders intact. */
  readonly pathTemplate: string
  readonly query: ReadonlyArray<Param>
  /** Declared headers by lower-case name: the only ones a call may set. */
  readonly headers: ReadonlyMap<string, Param>
  readonly body: { readonly kind: BodyKind; readonly required: boolean } | undefined
}

/** A validated OpenAPI document: every operation resolved into a tool and a request template. */
export interface OpenApiSpec {
  /** Path prefix from `servers` ("" when there is none). */
  readonly prefix: string
  readonly tools: ReadonlyArray<Tool>
  readonly operations: ReadonlyMap<string, Operation>
}

// ---------------------------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------------------------

/** Largest schema document read from a file or URL. */
export const maxDocumentBytes = 16 * 1024 * 1024

/** Time allowed to fetch a `schema: {url}` document, connect to last byte. */
export const fetchTimeout: Duration.Input = "10 seconds"

/** Largest upstream response body a tool call should read (upstream's 2 MiB body limit). */
export const maxResponseBytes = 2 * 1024 * 1024

/** Characters of a 5xx response body quoted in the tool error. */
export const maxErrorBodyChars = 4096

/** `title` is the operation summary cut to this many characters. */
export const maxTitleChars = 64

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

export interface LoadOptions {
  readonly maxBytes?: number
  readonly timeout?: Duration.Input
}

const fail = (path: string, message: string) => Effect.fail(new ConfigError({ issues: [{ path, message }] }))

const errorText = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

/** JSON when it looks like JSON (exact and fast for large documents), YAML otherwise. */
const parseText = (text: string): Result.Result<unknown, string> => {
  if (/^\s*[{[]/.test(text)) {
    try {
      return Result.succeed(JSON.parse(text))
    } catch {
      // JSON with a syntax error, or YAML flow style: YAML reports the error with a position.
    }
  }
  try {
    return Result.succeed(YAML.parse(text))
  } catch (error) {
    return Result.fail(`invalid JSON/YAML: ${errorText(error).split("\n")[0]}`)
  }
}

const fromText = (text: string, at: string): Effect.Effect<OpenApiSpec, ConfigError> => {
  const parsed = parseText(text)
  return Result.isFailure(parsed) ? fail(at, parsed.failure) : Effect.fromResult(parse(parsed.success, at))
}

const readSchemaFile = (file: string, maxBytes: number): Promise<string> =>
  stat(file).then((info) => {
    if (info.size > maxBytes) throw new Error(`document is larger than ${maxBytes} bytes`)
    return readFile(file, "utf8")
  })

const fetchSchema = async (url: URL, agent: Agent, maxBytes: number, signal: AbortSignal): Promise<string> => {
  const res = await Undici.request(url, {
    method: "GET",
    dispatcher: agent,
    signal,
    headers: { accept: "application/json, application/yaml;q=0.9, */*;q=0.8" }
  })
  if (res.statusCode < 200 || res.statusCode > 299) {
    await res.body.dump()
    throw new Error(`status ${res.statusCode}`)
  }
  const declared = Number(res.headers["content-length"])
  const tooLarge = `document is larger than ${maxBytes} bytes`
  if (Number.isFinite(declared) && declared > maxBytes) {
    res.body.destroy()
    throw new Error(tooLarge)
  }
  return BoundedBody.readText(res.body, maxBytes, () => new Error(tooLarge))
}

const loadUrl = (raw: string, at: string, maxBytes: number, timeout: Duration.Input) => {
  const url = URL.canParse(raw) ? new URL(raw) : undefined
  if (url === undefined || (url.protocol !== "http:" && url.protocol !== "https:")) {
    return fail(at, `invalid schema URL ${JSON.stringify(raw)} (expected http:// or https://)`)
  }
  // A private agent, destroyed afterwards: the fetch runs once per snapshot and must not leave
  // pooled sockets keeping the process alive.
  return Effect.acquireUseRelease(
    Effect.promise(() => Undici.load().then((undici) => new undici.Agent())),
    (agent) =>
      Effect.tryPromise({
        try: (signal) => fetchSchema(url, agent, maxBytes, signal),
        catch: (cause) => new ConfigError({ issues: [{ path: at, message: `cannot fetch ${url.href}: ${errorText(cause)}` }] })
      }).pipe(
        Effect.timeoutOrElse({
          duration: timeout,
          orElse: () => fail(at, `cannot fetch ${url.href}: timed out after ${Duration.format(Duration.fromInputUnsafe(timeout))}`)
        })
      ),
    (agent) => Effect.promise(() => agent.destroy())
  ).pipe(Effect.flatMap((text) => fromText(text, at)))
}

/**
 * Loads and validates the `schema:` of an `openapi` target. `path` is the target's `openapi`
 * field path; errors name `<path>.schema` (`.file`, `.url`) and, in the message, the location
 * inside the document. Relative files resolve against the working directory, as upstream.
 */
export const load = (source: SchemaSource, path: string, options: LoadOptions = {}): Effect.Effect<OpenApiSpec, ConfigError> => {
  const at = `${path}.schema`
  const maxBytes = options.maxBytes ?? maxDocumentBytes
  if (typeof source === "string") {
    if (source.length > maxBytes) return fail(at, `inline document is larger than ${maxBytes} bytes`)
    return fromText(source, at)
  }
  if ("file" in source) {
    const fileAt = `${at}.file`
    return Effect.tryPromise({
      try: () => readSchemaFile(source.file, maxBytes),
      catch: (cause) => new ConfigError({ issues: [{ path: fileAt, message: `cannot read ${source.file}: ${errorText(cause)}` }] })
    }).pipe(Effect.flatMap((text) => fromText(text, fileAt)))
  }
  return loadUrl(source.url, `${at}.url`, maxBytes, options.timeout ?? fetchTimeout)
}

// ---------------------------------------------------------------------------------------------
// Document → tools
// ---------------------------------------------------------------------------------------------

/** In the order upstream's `openapiv3::PathItem::iter` yields them. */
const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"] as const

const PARAM_LOCATIONS: ReadonlySet<string> = new Set(["path", "query", "header", "cookie"])

const nonEmpty = (value: Json | undefined): string | undefined =>
  typeof value === "string" && value !== "" ? value : undefined

const mediaEssence = (mediaType: string): string => mediaType.split(";")[0]!.trim().toLowerCase()

const reject = (at: Location, reason: string): never => {
  throw new DocumentError(at, reason)
}

const expectObject = (value: Json, at: Location, what: string): JsonObject =>
  isObject(value) ? value : reject(at, `expected ${what} (an object)`)

/** `servers[0].url` with variables at their defaults, reduced to its path. */
const serverPrefix = (servers: Json | undefined): string => {
  if (servers === undefined || servers === null) return ""
  if (!Array.isArray(servers)) return reject(["servers"], "expected a list")
  if (servers.length === 0) return ""
  if (servers.length > 1) return reject(["servers"], `multiple servers are not supported (found ${servers.length}); keep one`)
  const server = expectObject(servers[0]!, ["servers", 0], "a server")
  const raw = server["url"]
  if (typeof raw !== "string") return reject(["servers", 0, "url"], "expected a string")
  const variables = isObject(server["variables"]) ? server["variables"] : {}
  const url = raw.replace(/\{([^}]*)\}/g, (whole, name: string) => {
    const variable = variables[name]
    const value = isObject(variable) ? variable["default"] : undefined
    return typeof value === "string" ? value : whole
  })
  let pathname: string
  if (/^[a-z][a-z0-9+.-]*:/i.test(url) || url.startsWith("//")) {
    // The authority is the target's `host`; only the path of the server URL is kept.
    if (!URL.canParse(url, "http://server.invalid")) return reject(["servers", 0, "url"], `invalid URL ${JSON.stringify(raw)}`)
    pathname = new URL(url, "http://server.invalid").pathname
  } else {
    pathname = url.split(/[?#]/)[0]!
  }
  const trimmed = pathname.replace(/\/+$/, "")
  return trimmed === "" ? "" : trimmed.startsWith("/") ? trimmed : `/${trimmed}`
}

const joinPath = (prefix: string, path: string): string => `${prefix}${path.startsWith("/") ? path : `/${path}`}`

interface ParamDef {
  readonly name: string
  readonly location: string
  readonly required: boolean
  readonly schema: Json
}

const paramKey = (p: ParamDef): string => `${p.location}:${p.location === "header" ? p.name.toLowerCase() : p.name}`

const paramDef = (resolver: Resolver, raw: Json, at: Location): ParamDef => {
  const p = expectObject(resolver.deref(raw, at), at, "a parameter")
  const name = p["name"]
  const location = p["in"]
  if (typeof name !== "string" || name === "") return reject([...at, "name"], "a parameter needs a name")
  if (typeof location !== "string" || !PARAM_LOCATIONS.has(location)) {
    return reject([...at, "in"], "expected one of path, query, header, cookie")
  }
  let schema: Json = {}
  if (p["schema"] !== undefined) {
    schema = resolver.inline(p["schema"], [...at, "schema"])
  } else if (isObject(p["content"])) {
    // `content` instead of `schema` (serialised parameters): its one media type's schema.
    const first = Object.entries(p["content"])[0]
    if (first !== undefined && isObject(first[1]) && first[1]["schema"] !== undefined) {
      schema = resolver.inline(first[1]["schema"], [...at, "content", first[0], "schema"])
    }
  }
  if (!isObject(schema)) return reject([...at, "schema"], "expected a schema object")
  const description = p["description"]
  if (typeof description === "string") schema = { ...schema, description }
  // Path parameters are always required (OpenAPI 3 §4.8.12.1): a template cannot be half filled.
  return { name, location, required: location === "path" || p["required"] === true, schema }
}

/** Path-level parameters, then operation-level ones replacing those with the same name and place. */
const mergedParams = (resolver: Resolver, pathLevel: Json | undefined, opLevel: Json | undefined, pathAt: Location, opAt: Location) => {
  const merged = new Map<string, ParamDef>()
  const add = (list: Json | undefined, at: Location) => {
    if (list === undefined || list === null) return
    if (!Array.isArray(list)) return reject(at, "expected a list")
    list.forEach((raw: Json, i) => {
      const def = paramDef(resolver, raw, [...at, i])
      merged.set(paramKey(def), def)
    })
  }
  add(pathLevel, [...pathAt, "parameters"])
  add(opLevel, [...opAt, "parameters"])
  return [...merged.values()].filter((p) => p.location !== "cookie")
}

const groupSchema = (params: ReadonlyArray<ParamDef>): JsonObject => ({
  type: "object",
  properties: Object.fromEntries(params.map((p) => [p.name, p.schema])),
  required: params.filter((p) => p.required).map((p) => p.name)
})

const requestBody = (resolver: Resolver, raw: Json | undefined, at: Location) => {
  if (raw === undefined || raw === null) return undefined
  const body = expectObject(resolver.deref(raw, at), at, "a request body")
  const content = body["content"] === undefined ? {} : expectObject(body["content"], [...at, "content"], "a content map")
  const required = body["required"] === true
  const types = Object.keys(content)
  const json = types.find((t) => t === "application/json") ?? types.find((t) => mediaEssence(t) === "application/json")
  if (json !== undefined) {
    const media = content[json]
    const schema = isObject(media) && media["schema"] !== undefined
      ? resolver.inline(media["schema"], [...at, "content", json, "schema"])
      : {}
    return { kind: "json" as const, required, schema }
  }
  if (types.some((t) => mediaEssence(t) === "application/octet-stream")) {
    return { kind: "octet-stream" as const, required, schema: { type: "string", format: "byte" } }
  }
  // Only form or XML bodies: nothing a tool argument can carry.
  return undefined
}

const compileOperation = (resolver: Resolver, prefix: string, pathKey: string, method: string, item: JsonObject, op: JsonObject): Operation => {
  const pathAt: Location = ["paths", pathKey]
  const opAt: Location = [...pathAt, method]
  const name = nonEmpty(op["operationId"]) ?? reject([...opAt, "operationId"], "operationId is required (it names the tool)")
  const params = mergedParams(resolver, item["parameters"], op["parameters"], pathAt, opAt)
  const body = requestBody(resolver, op["requestBody"], [...opAt, "requestBody"])

  const properties: Record<string, Json> = {}
  const required: Array<string> = []
  if (body !== undefined) {
    properties["body"] = body.schema
    if (body.required) required.push("body")
  }
  for (const location of ["path", "query", "header"] as const) {
    const group = params.filter((p) => p.location === location)
    if (group.length === 0) continue
    properties[location] = groupSchema(group)
    if (group.some((p) => p.required)) required.push(location)
  }

  const summary = nonEmpty(op["summary"])
  const description = nonEmpty(op["description"]) ?? summary ?? name
  const inputSchema: JsonObject = { type: "object", properties, required }
  const tool: Tool = summary === undefined
    ? { name, description, inputSchema }
    : { name, title: Array.from(summary).slice(0, maxTitleChars).join(""), description, inputSchema }
  const toParam = (p: ParamDef): Param => ({ name: p.name, required: p.required })
  return {
    tool,
    method: method.toUpperCase(),
    pathTemplate: joinPath(prefix, pathKey),
    query: params.filter((p) => p.location === "query").map(toParam),
    headers: new Map(params.filter((p) => p.location === "header").map((p) => [p.name.toLowerCase(), toParam(p)])),
    body: body === undefined ? undefined : { kind: body.kind, required: body.required }
  }
}

const compile = (input: unknown): OpenApiSpec => {
  const document = toJson(input)
  if (!isObject(document)) {
    return reject([], typeof document === "string"
      ? "expected an OpenAPI document, got a string (an inline schema is the document itself; use {file: …} for a path)"
      : "expected an OpenAPI document (an object)")
  }
  const version = document["openapi"]
  if (typeof version !== "string" || !/^3\.\d+/.test(version)) {
    return reject(["openapi"], document["swagger"] !== undefined
      ? "Swagger 2.0 documents are not supported; convert to OpenAPI 3"
      : "expected an OpenAPI 3.x version string")
  }
  expectObject(document["info"] ?? null, ["info"], "the info object")
  const prefix = serverPrefix(document["servers"])
  const resolver = new Resolver(document)
  const paths = document["paths"] === undefined ? {} : expectObject(document["paths"], ["paths"], "a paths map")
  const operations = new Map<string, Operation>()
  for (const [pathKey, rawItem] of Object.entries(paths)) {
    const item = expectObject(resolver.deref(rawItem, ["paths", pathKey]), ["paths", pathKey], "a path item")
    for (const method of METHODS) {
      const rawOp = item[method]
      if (rawOp === undefined) continue
      const op = expectObject(rawOp, ["paths", pathKey, method], "an operation")
      const operation = compileOperation(resolver, prefix, pathKey, method, item, op)
      if (operations.has(operation.tool.name)) {
        reject(["paths", pathKey, method, "operationId"], `duplicate operationId ${JSON.stringify(operation.tool.name)}`)
      }
      operations.set(operation.tool.name, operation)
    }
  }
  return { prefix, tools: [...operations.values()].map((o) => o.tool), operations }
}

/**
 * Validates a parsed document (JSON/YAML value) and compiles it; `at` is the config field path
 * the errors name.
 */
export const parse = (document: unknown, at: string): Result.Result<OpenApiSpec, ConfigError> => {
  try {
    return Result.succeed(compile(document))
  } catch (error) {
    const message = error instanceof DocumentError
      ? `invalid OpenAPI document: ${error.message}`
      : error instanceof RangeError
      ? "invalid OpenAPI document: nested too deeply"
      : `invalid OpenAPI document: ${errorText(error)}`
    return Result.fail(new ConfigError({ issues: [{ path: at, message }] }))
  }
}

/** The tools of a document, one per operation, in document order. */
export const tools = (spec: OpenApiSpec): ReadonlyArray<Tool> => spec.tools

// ---------------------------------------------------------------------------------------------
// Tool call → request
// ---------------------------------------------------------------------------------------------

/** Never taken from arguments: framing, routing and the values this module sets itself. */
const RESERVED_HEADERS: ReadonlySet<string> = new Set([
  "content-length",
  "content-type",
  "transfer-encoding",
  "host",
  "accept",
  "expect",
  ...HOP_BY_HOP
])

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
/** RFC 9110 §5.5 field-value characters: no CR, LF or NUL (header injection). */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/

const invalid = (message: string) => Result.fail(new ToolCallError({ reason: "InvalidArguments", message }))

type Scalar = string | number | boolean

const isScalar = (value: unknown): value is Scalar =>
  typeof value === "string" || typeof value === "number" || typeof value === "boolean"

const group = (args: Readonly<Record<string, unknown>>, key: string): Result.Result<Readonly<Record<string, unknown>>, ToolCallError> => {
  const value = Object.hasOwn(args, key) ? args[key] : undefined
  if (value === undefined || value === null) return Result.succeed({})
  return isObject(value) ? Result.succeed(value) : invalid(`'${key}' must be an object`)
}

const present = (values: Readonly<Record<string, unknown>>, name: string): boolean =>
  Object.hasOwn(values, name) && values[name] !== undefined && values[name] !== null

/** Percent-encodes a path segment value; `.`/`..` are encoded too so no value climbs the path. */
const encodeSegment = (value: Scalar): string => {
  const encoded = encodeURIComponent(String(value))
  return /^\.+$/.test(encoded) ? encoded.replaceAll(".", "%2E") : encoded
}

/**
 * The request a `tools/call` becomes. `args` is the call's `arguments` (`{path, query, header,
 * body}`); missing required parameters or a malformed argument fail with `InvalidArguments`.
 */
export const request = (spec: OpenApiSpec, toolName: string, args: unknown): Result.Result<OpenApiRequest, ToolCallError> => {
  const op = spec.operations.get(toolName)
  if (op === undefined) return Result.fail(new ToolCallError({ reason: "UnknownTool", message: `tool ${toolName} not found` }))
  if (args !== undefined && args !== null && !isObject(args)) return invalid("arguments must be an object")
  const all: Readonly<Record<string, unknown>> = isObject(args) ? args : {}
  const pathArgs = group(all, "path")
  const queryArgs = group(all, "query")
  const headerArgs = group(all, "header")
  if (Result.isFailure(pathArgs)) return Result.fail(pathArgs.failure)
  if (Result.isFailure(queryArgs)) return Result.fail(queryArgs.failure)
  if (Result.isFailure(headerArgs)) return Result.fail(headerArgs.failure)

  let problem: string | undefined
  const path = op.pathTemplate.replace(/\{([^}]+)\}/g, (whole, name: string) => {
    const value = present(pathArgs.success, name) ? pathArgs.success[name] : undefined
    if (value === undefined) problem ??= `missing required path parameter '${name}'`
    else if (!isScalar(value)) problem ??= `path parameter '${name}' must be a string, number or boolean`
    else return encodeSegment(value)
    return whole
  })
  if (problem !== undefined) return invalid(problem)

  for (const p of op.query) {
    if (p.required && !present(queryArgs.success, p.name)) return invalid(`missing required query parameter '${p.name}'`)
  }
  const pairs: Array<string> = []
  for (const [key, value] of Object.entries(queryArgs.success)) {
    const values = Array.isArray(value) ? value : [value]
    for (const v of values) {
      // Objects have no agreed form serialisation without `style`; they are skipped like upstream.
      if (isScalar(v)) pairs.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(v))}`)
    }
  }

  const given = new Map<string, unknown>()
  for (const [key, value] of Object.entries(headerArgs.success)) given.set(key.toLowerCase(), value)
  const headers: Record<string, string> = Object.create(null)
  headers["accept"] = "application/json"
  for (const [name, p] of op.headers) {
    const value = given.get(name)
    if (value === undefined || value === null) {
      if (p.required) return invalid(`missing required header '${p.name}'`)
      continue
    }
    if (RESERVED_HEADERS.has(name) || !TOKEN.test(name) || !isScalar(value)) continue
    const text = String(value)
    if (FIELD_VALUE.test(text)) headers[name] = text
  }

  let body: Uint8Array | undefined
  const bodyArg = Object.hasOwn(all, "body") ? all["body"] : undefined
  if (op.body !== undefined) {
    if (bodyArg === undefined || bodyArg === null) {
      if (op.body.required) return invalid("missing required body")
    } else if (op.body.kind === "json") {
      headers["content-type"] = "application/json"
      body = new TextEncoder().encode(JSON.stringify(bodyArg))
    } else {
      const compact = typeof bodyArg === "string" ? bodyArg.replace(/\s+/g, "") : undefined
      if (compact === undefined || !BASE64.test(compact) || compact.length % 4 === 1) {
        return invalid("'body' must be a base64 string")
      }
      headers["content-type"] = "application/octet-stream"
      body = new Uint8Array(Buffer.from(compact.replaceAll("-", "+").replaceAll("_", "/"), "base64"))
    }
  }

  return Result.succeed({
    method: op.method,
    path: pairs.length === 0 ? path : `${path}?${pairs.join("&")}`,
    headers,
    body
  })
}

// ---------------------------------------------------------------------------------------------
// Response → CallToolResult
// ---------------------------------------------------------------------------------------------

const utf8 = new TextDecoder("utf-8")

const isJsonType = (contentType: string | undefined): boolean => {
  if (contentType === undefined) return true
  const essence = mediaEssence(contentType)
  return essence === "application/json" || essence.endsWith("+json")
}

/** A REST answer's JSON; too deep (checked before parsing, the upstream chooses it) counts as not JSON. */
const parseJson = (text: string): Result.Result<Json, undefined> => {
  if (BoundedJson.nestsDeeperThan(text, BoundedJson.MAX_NESTING)) return Result.fail(undefined)
  try {
    const value: Json = JSON.parse(text)
    return Result.succeed(value)
  } catch {
    return Result.fail(undefined)
  }
}

/** The status as Rust's `http::StatusCode` prints it (`500 Internal Server Error`), as upstream. */
const statusLine = (status: number): string => {
  const reason = STATUS_CODES[status]
  return reason === undefined ? String(status) : `${status} ${reason}`
}

const bounded = (text: string): string =>
  text.length <= maxErrorBodyChars ? text : `${text.slice(0, maxErrorBodyChars)}… (truncated)`

/**
 * The `CallToolResult` of an upstream response. Bodies are parsed as JSON unless the content type
 * names something else; `structuredContent` must be an object for MCP, so other JSON values are
 * wrapped as `{data}` (null stays null, as upstream) and text becomes `{code, message}`.
 */
export const result = (toolName: string, status: number, contentType: string | undefined, body: Uint8Array): CallToolResult => {
  const text = utf8.decode(body)
  if (status >= 500) {
    return {
      content: [{ type: "text", text: `Upstream API call for tool '${toolName}' failed with status ${statusLine(status)}: ${bounded(text)}` }],
      isError: true
    }
  }
  const parsed = isJsonType(contentType) ? parseJson(text) : Result.fail(undefined)
  const value: Json = Result.isFailure(parsed)
    ? { code: status, message: text }
    : parsed.success === null || isObject(parsed.success)
    ? parsed.success
    : { data: parsed.success }
  return { content: [{ type: "text", text: JSON.stringify(value) }], structuredContent: value }
}

/** The tool error a failed {@link request} answers with. */
export const toolError = (error: ToolCallError): CallToolResult => ({
  content: [{ type: "text", text: error.message }],
  isError: true
})
