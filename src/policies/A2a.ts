/**
 * `a2a`: marks a backend's traffic as A2A (agentgateway's `a2a` backend policy, reference §3).
 * Innermost in the backend phase, per attempt, it classifies the request:
 * - `GET …/.well-known/agent-card.json` (or `agent.json`): the card is read (at most
 *   `AgentCard.MAX_CARD_BYTES`) and its endpoint URLs re-anchored at the gateway URL the client
 *   used (src/a2a/AgentCard.ts); a card that is not JSON, too large or without endpoints is
 *   503 `processing failed`.
 * - `POST` with a JSON body: a JSON-RPC call. The body is buffered (up to `maxBufferSize`) to
 *   read `method`, then forwarded unchanged from the buffer; a larger body streams on
 *   untouched as method `unknown`. SSE answers stream through untouched; JSON answers are
 *   inspected for telemetry while they stream (src/a2a/Telemetry.ts).
 * - anything else: untouched, and not counted as A2A.
 *
 * Two fields are this gateway's extension (agentgateway's schema has `a2a: {}` with no fields
 * and rejects them): `publicUrl` and `trustForwardedHeaders`. Why buffering rather than a
 * streaming peek, and the security reasoning: src/a2a/README.md.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as AgentCard from "../a2a/AgentCard.ts"
import * as Protocol from "../a2a/Protocol.ts"
import * as Telemetry from "../a2a/Telemetry.ts"
import { attach } from "../cel/Context.ts"
import { opt } from "../config/Fields.ts"
import * as Policy from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import type { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import * as RequestBody from "../pipeline/RequestBody.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"
import * as ResponseBody from "../pipeline/ResponseBody.ts"
import * as Headers from "../shared/headers.ts"

const publicUrlProblem = (s: string): string | undefined => {
  const url = URL.parse(s)
  if (url === null || (url.protocol !== "http:" && url.protocol !== "https:")) return `invalid publicUrl "${s}" (expected an absolute http or https URL)`
  if (url.username !== "" || url.password !== "") return `invalid publicUrl "${s}" (no user info)`
  if (url.search !== "" || url.hash !== "" || s.includes("?") || s.includes("#")) return `invalid publicUrl "${s}" (no query or fragment)`
  return undefined
}

const PublicUrl = Schema.String.check(Schema.makeFilter((s: string) => publicUrlProblem(s) ?? true))

export const Config = Schema.Struct({
  publicUrl: opt(
    PublicUrl,
    "effect-agentgateway extension (agentgateway rejects it): the URL clients reach this gateway at, e.g. `https://agents.example.com` " +
      "(a path is allowed, for a gateway behind a path-prefixing proxy). Agent cards are re-anchored at it plus the request's path " +
      "instead of at the request's scheme and Host, so a forged Host cannot poison a cached card."
  ),
  trustForwardedHeaders: opt(
    Schema.Boolean,
    "effect-agentgateway extension (agentgateway rejects it): without `publicUrl`, take the card's scheme from `X-Forwarded-Proto` and " +
      "its authority from `X-Forwarded-Host` (first value each). Only for a gateway every request reaches through a proxy that sets them. Default false."
  )
}).annotate({ description: "Marks the traffic as A2A: agent-card URL rewriting and A2A telemetry." })
export type Config = typeof Config.Type

const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(?::\d{1,5})?$/

/** First value of a (possibly repeated, possibly comma-joined) header. */
const first = (ctx: ProxyRequest, name: string): string | undefined => {
  const raw = ctx.headers[name]
  const value = raw === undefined ? undefined : typeof raw === "string" ? raw : raw[0]
  if (value === undefined) return undefined
  const comma = value.indexOf(",")
  return (comma === -1 ? value : value.slice(0, comma)).trim()
}

/** Request headers that would make the card come back in a form that cannot be rewritten. */
const CARD_REQUEST_HEADERS = ["accept-encoding", "if-none-match", "if-modified-since", "range"] as const
/** Validators of the agent's bytes, which the rewritten card no longer is. */
const CARD_RESPONSE_HEADERS = ["content-length", "etag", "last-modified", "content-md5"] as const

const processing = (detail: string) => Effect.fail(ProxyError.make({ _tag: "ProcessingFailed", detail }))

const isIdentity = (encoding: string | Array<string> | undefined): boolean =>
  encoding === undefined || (typeof encoding === "string" && (encoding.trim() === "" || encoding.trim().toLowerCase() === "identity"))

export const policy = Policy.define({
  key: "a2a",
  make: (config, env, path) =>
    Effect.sync(() => {
      const publicBase = config.publicUrl === undefined || config.publicUrl === null ? undefined : config.publicUrl.replace(/\/+$/, "")
      const trustForwarded = config.trustForwardedHeaders === true
      const callBodyLimit = env.maxBufferSize
      const badHost = Effect.fail(ProxyError.make({ _tag: "InvalidRequest", detail: "a2a: Host is not a valid authority for an agent card" }))

      /** Where the client reached the agent: the public base (or the request's origin) plus its path prefix. */
      const gatewayBase = (ctx: ProxyRequest): string | undefined => {
        const original = ctx.originalUrl?.path ?? ctx.path
        const prefix = AgentCard.basePath(original, Protocol.cardSuffix(original))
        if (publicBase !== undefined) return publicBase + prefix
        let scheme: string = ctx.scheme
        let authority = ctx.originalUrl?.authority ?? ctx.authority
        if (trustForwarded) {
          const proto = first(ctx, "x-forwarded-proto")?.toLowerCase()
          if (proto === "http" || proto === "https") scheme = proto
          const host = first(ctx, "x-forwarded-host")
          if (host !== undefined && host !== "") authority = host
        }
        return AUTHORITY.test(authority) ? `${scheme}://${authority}${prefix}` : undefined
      }

      return (next) => {
        const card = Effect.fnUntraced(function*(ctx: ProxyRequest, suffix: string) {
          ctx.a2a = Telemetry.fields(undefined)
          attach(ctx, "backendProtocol", "a2a")
          const base = gatewayBase(ctx)
          if (base === undefined) return yield* badHost
          const anchor: AgentCard.Anchor = { gatewayBase: base, backendBase: AgentCard.basePath(ctx.path, suffix) }
          for (const name of CARD_REQUEST_HEADERS) delete ctx.headers[name]
          const res: ProxyResponse = yield* next
          // Errors and redirects of the agent are passed on as they are: only a card is rewritten.
          if (res.status < 200 || res.status >= 300 || res.status === 204) return res
          if (!isIdentity(res.headers["content-encoding"])) return yield* processing("agent card is content-encoded")
          const bytes = yield* ResponseBody.read(ctx, res, AgentCard.MAX_CARD_BYTES)
          if (bytes === undefined) return yield* processing(`agent card larger than ${AgentCard.MAX_CARD_BYTES} bytes`)
          const result = AgentCard.rewrite(bytes, anchor)
          if (result._tag === "Invalid") return yield* processing(result.detail)
          if (result.strippedSignatures > 0) {
            yield* Effect.logWarning(
              `a2a at ${path}: removed ${result.strippedSignatures} signature(s) from the agent card of ${ctx.backend}: ` +
                "they do not cover the rewritten URLs (the card is served unsigned)"
            )
          }
          for (const name of CARD_RESPONSE_HEADERS) delete res.headers[name]
          res.body = result.bytes
          return res
        })

        const call = Effect.fnUntraced(function*(ctx: ProxyRequest) {
          const body = yield* RequestBody.read(ctx, callBodyLimit)
          const method = body === undefined ? Protocol.UNKNOWN_METHOD : Protocol.methodOf(body)
          const out = Telemetry.fields(method)
          ctx.a2a = out
          attach(ctx, "backendProtocol", "a2a")
          const res: ProxyResponse = yield* next
          const contentType = Headers.get(res.headers, "content-type")
          // SSE (message/stream, SendStreamingMessage, resubscribe) is never touched: every event
          // goes out as it arrives, with the client's backpressure.
          if (Protocol.isEventStream(contentType)) return res
          if (Protocol.isJsonMediaType(contentType) && isIdentity(res.headers["content-encoding"])) {
            Telemetry.inspectResponse(ctx, res, out, Protocol.METHODS.get(method))
          }
          return res
        })

        return Effect.flatMap(currentRequest, (ctx) => {
          const method = ctx.method
          if (method === "GET") {
            const suffix = Protocol.cardSuffix(ctx.path)
            return suffix === undefined ? next : card(ctx, suffix)
          }
          if (method === "POST" && Protocol.isJsonMediaType(Headers.get(ctx.headers, "content-type"))) return call(ctx)
          return next
        })
      }
    })
})
