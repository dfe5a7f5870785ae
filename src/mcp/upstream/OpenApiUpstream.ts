/**
 * OpenAPI targets behind the `Upstream` interface: every method is answered locally from the
 * document compiled when the snapshot was built (`OpenApi.load`), except `tools/call`, which
 * becomes one HTTP request to the target's `host:port` over the shared upstream pools. Nothing
 * is held per session (no connection, resume token `null`), so the target joins encoded,
 * resumable session ids and stateless backends alike. A call carrying a signer
 * (`CallContext.sign`, backendAuth aws) has the request signed as sent.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type { Dispatcher } from "undici"
import { type PoolSettings, UpstreamPools, type UpstreamTls } from "../../backends/Pools.ts"
import type * as Ir from "../../ir/Ir.ts"
import { HOP_BY_HOP } from "../../shared/headers.ts"
import { VERSION } from "../../Version.ts"
import * as McpSchema from "../McpSchema.ts"
import { type CallContext, type Connect, connectionFailed, httpOrigin, type Upstream, UpstreamError } from "../Upstream.ts"
import * as OpenApi from "./OpenApi.ts"
import * as Undici from "../../backends/Undici.ts"
import * as BoundedBody from "../../shared/BoundedBody.ts"

/** Headers a tool call never takes from the downstream request: `request` or the pool owns them. */
const NOT_COPIED: ReadonlySet<string> = new Set(["host", "content-length", "content-type", "transfer-encoding", "accept", "cookie"])

/** The answer of an OpenAPI upstream to one call: a CallToolResult, or a failure to reach it. */
const send = (
  target: string,
  pool: Dispatcher,
  host: string,
  req: OpenApi.OpenApiRequest,
  call: CallContext
): Effect.Effect<{ readonly status: number; readonly contentType: string | undefined; readonly body: Uint8Array }, UpstreamError> => {
  const headers: Record<string, string | Array<string>> = {}
  // Downstream headers fill in what the operation did not set (upstream's IncomingRequestContext).
  if (call.headers !== undefined) {
    for (const [k, v] of Object.entries(call.headers)) {
      if (v !== undefined && !HOP_BY_HOP.has(k) && !NOT_COPIED.has(k)) headers[k] = v
    }
  }
  for (const [k, v] of Object.entries(req.headers)) headers[k] = v
  headers["host"] = host
  const exchange = Effect.tryPromise({
    try: async (signal) => {
      const res = await Undici.requestOn(pool, { method: req.method, path: req.path, headers, body: req.body === undefined ? null : Buffer.from(req.body), signal })
      const declared = Number(res.headers["content-length"])
      if (Number.isFinite(declared) && declared > OpenApi.maxResponseBytes) {
        res.body.destroy()
        throw new UpstreamError({ target, message: `response body larger than ${OpenApi.maxResponseBytes} bytes` })
      }
      const body = await BoundedBody.readBytes(
        res.body,
        OpenApi.maxResponseBytes,
        () => new UpstreamError({ target, message: `response body larger than ${OpenApi.maxResponseBytes} bytes` })
      )
      const type = res.headers["content-type"]
      return { status: res.statusCode, contentType: Array.isArray(type) ? type[0] : type, body }
    },
    catch: (cause) => (cause instanceof UpstreamError ? cause : connectionFailed(target, cause))
  })
  // backendAuth aws: signed as sent, body included.
  return call.sign === undefined ? exchange : Effect.andThen(call.sign({ method: req.method, path: req.path, headers, body: req.body }), exchange)
}

type Transport = Extract<Ir.McpTransport, { _tag: "OpenApi" }>

/** Built once per snapshot: the document is already compiled into `spec` (a ConfigError otherwise). */
export const connector = (
  target: string,
  transport: Transport,
  spec: OpenApi.OpenApiSpec,
  settings: PoolSettings,
  /** An https target's (or a target with `backendTLS`): the pool connects over TLS. */
  tls?: UpstreamTls | undefined
): Effect.Effect<Connect, never, UpstreamPools> =>
  Effect.gen(function*() {
    const pools = yield* UpstreamPools
    const pool = pools.get(transport.target, settings, tls)
    const { host } = httpOrigin(transport.target, tls !== undefined)
    const toolsResult = { tools: OpenApi.tools(spec) }
    let nextId = 1
    const answer = (result: unknown): Effect.Effect<McpSchema.Response> => Effect.succeed(McpSchema.resultResponse(nextId++, result))

    const callTool = (params: Record<string, unknown> | undefined, call: CallContext): Effect.Effect<McpSchema.Response, UpstreamError> => {
      const name = McpSchema.field(params, "name")
      if (typeof name !== "string") return Effect.succeed(McpSchema.errorResponse(nextId++, McpSchema.ErrorCode.InvalidParams, "missing name"))
      const built = OpenApi.request(spec, name, McpSchema.field(params, "arguments") ?? {})
      if (Result.isFailure(built)) return answer(OpenApi.toolError(built.failure))
      return Effect.map(send(target, pool, host, built.success, call), (res) =>
        McpSchema.resultResponse(nextId++, OpenApi.result(name, res.status, res.contentType, res.body)))
    }

    const upstream: Upstream = {
      target,
      request: (method, params, call) => {
        switch (method) {
          case "initialize": {
            const requested = McpSchema.field(params, "protocolVersion")
            return answer({
              protocolVersion: typeof requested === "string" && McpSchema.KNOWN_VERSIONS.includes(requested) ? requested : McpSchema.LATEST_VERSION,
              capabilities: { tools: {} },
              serverInfo: { name: target, version: VERSION }
            })
          }
          case "tools/list":
            return answer(toolsResult)
          case "tools/call":
            return callTool(params, call)
          case "prompts/list":
            return answer({ prompts: [] })
          case "resources/list":
            return answer({ resources: [] })
          case "resources/templates/list":
            return answer({ resourceTemplates: [] })
          case "ping":
          case "logging/setLevel":
            return answer({})
          default:
            return Effect.succeed(McpSchema.errorResponse(nextId++, McpSchema.ErrorCode.MethodNotFound, `method not found: ${method}`))
        }
      },
      send: () => Effect.void,
      listen: () => Effect.void,
      serverMessages: false,
      resumeToken: () => null
    }
    // Stateless: every session shares the one value; there is nothing to open or close.
    return () => Effect.succeed(upstream)
  })
