/**
 * `cors`: answers preflights and adds CORS headers, as agentgateway does. Any OPTIONS request
 * with an allowed `Origin` is a preflight and is answered 200 here; the origin is echoed,
 * never `*`. Headers for allowed non-preflight requests are queued on the request, so they
 * also reach responses that a later policy or the upstream turns into an error.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { opt, DurationString } from "../config/Fields.ts"
import * as Duration from "../config/Duration.ts"
import * as Policy from "../pipeline/Policy.ts"
import { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import { currentRequest } from "../pipeline/RequestContext.ts"
import * as Headers from "../shared/headers.ts"

export const Config = Schema.Struct({
  allowCredentials: opt(Schema.Boolean, "Send `access-control-allow-credentials: true`."),
  allowHeaders: opt(Schema.Array(Schema.String), "Request headers allowed in preflights; `*` allows any."),
  allowMethods: opt(Schema.Array(Schema.String), "Methods allowed in preflights; `*` allows any."),
  allowOrigins: opt(
    Schema.Array(Schema.String),
    "Allowed origins: `*`, an exact origin (`https://a.example`), or a host wildcard (`https://*.example.com`)."
  ),
  exposeHeaders: opt(Schema.Array(Schema.String), "Response headers the browser may read."),
  maxAge: opt(DurationString, "How long a preflight answer may be cached.")
}).annotate({ description: "Cross-origin resource sharing settings." })
export type Config = typeof Config.Type

/** Takes the origin already lower-cased (once per request, not once per pattern). */
type OriginMatcher = (lowerOrigin: string) => boolean

const originMatcher = (pattern: string): OriginMatcher => {
  if (pattern === "*") return () => true
  const wildcard = /^([a-z][a-z0-9+.-]*):\/\/\*\.(.+)$/i.exec(pattern)
  if (wildcard === null) {
    const exact = pattern.toLowerCase()
    return (lower) => lower === exact
  }
  // `https://*.example.com[:port]`: same scheme and port, any sub-domain depth.
  const scheme = wildcard[1]!.toLowerCase()
  const suffix = `.${wildcard[2]!.toLowerCase()}`
  const prefix = `${scheme}://`
  return (lower) => {
    if (!lower.startsWith(prefix)) return false
    const authority = lower.slice(prefix.length)
    return authority.endsWith(suffix) && authority.length > suffix.length && !authority.slice(0, -suffix.length).includes("/")
  }
}

export interface Compiled {
  readonly allows: (origin: string) => boolean
  readonly allowCredentials: boolean
  readonly allowMethods: string | undefined
  readonly anyMethod: boolean
  readonly allowHeaders: string | undefined
  readonly anyHeader: boolean
  readonly exposeHeaders: string | undefined
  readonly maxAge: string | undefined
}

export const compile = (config: Config): Compiled => {
  const matchers = (config.allowOrigins ?? []).map(originMatcher)
  const methods = config.allowMethods ?? []
  const headers = config.allowHeaders ?? []
  const expose = config.exposeHeaders ?? []
  return {
    allows: (origin) => {
      const lower = origin.toLowerCase()
      return matchers.some((m) => m(lower))
    },
    allowCredentials: config.allowCredentials === true,
    anyMethod: methods.includes("*"),
    allowMethods: methods.length === 0 ? undefined : methods.join(","),
    anyHeader: headers.includes("*"),
    allowHeaders: headers.length === 0 ? undefined : headers.join(","),
    exposeHeaders: expose.length === 0 ? undefined : expose.join(","),
    maxAge: config.maxAge === undefined || config.maxAge === null
      ? undefined
      : String(Math.floor(Duration.parseMillis(config.maxAge) / 1000))
  }
}

/** The preflight answer for an allowed origin. */
export const preflight = (cors: Compiled, origin: string, requestHeaders: Headers.HeaderMap): ProxyResponse => {
  const headers = Headers.empty()
  headers["access-control-allow-origin"] = origin
  headers["vary"] = "origin"
  if (cors.allowCredentials) headers["access-control-allow-credentials"] = "true"
  // `*` means "any": with credentials the literal `*` is not honoured by browsers, so the
  // requested value is echoed instead.
  const methods = cors.anyMethod
    ? cors.allowCredentials ? Headers.get(requestHeaders, "access-control-request-method") ?? "*" : "*"
    : cors.allowMethods
  if (methods !== undefined) headers["access-control-allow-methods"] = methods
  const allowHeaders = cors.anyHeader
    ? cors.allowCredentials ? Headers.get(requestHeaders, "access-control-request-headers") ?? "*" : "*"
    : cors.allowHeaders
  if (allowHeaders !== undefined) headers["access-control-allow-headers"] = allowHeaders
  if (cors.maxAge !== undefined) headers["access-control-max-age"] = cors.maxAge
  if (cors.exposeHeaders !== undefined) headers["access-control-expose-headers"] = cors.exposeHeaders
  headers["content-length"] = "0"
  return new ProxyResponse(200, headers, undefined)
}

const rejectedPreflight = (): ProxyResponse => {
  const headers = Headers.empty()
  headers["content-length"] = "0"
  return new ProxyResponse(200, headers, undefined)
}

export const policy = Policy.define({
  key: "cors",
  make: (config) =>
    Effect.sync(() => {
      const cors = compile(config)
      return (next) =>
        Effect.flatMap(currentRequest, (ctx) => {
          const origin = Headers.get(ctx.headers, "origin")
          if (origin === undefined) return next
          const allowed = cors.allows(origin)
          if (ctx.method === "OPTIONS") {
            ctx.directResponse = true
            return Effect.succeed(allowed ? preflight(cors, origin, ctx.headers) : rejectedPreflight())
          }
          if (!allowed) return next
          ctx.queueResponseHeader("access-control-allow-origin", origin)
          ctx.queueResponseHeader("vary", "origin")
          if (cors.allowCredentials) ctx.queueResponseHeader("access-control-allow-credentials", "true")
          if (cors.exposeHeaders !== undefined) ctx.queueResponseHeader("access-control-expose-headers", cors.exposeHeaders)
          return next
        })
    })
})
