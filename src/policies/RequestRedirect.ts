/**
 * `requestRedirect`: answers with a redirect instead of forwarding (agentgateway's
 * `filters.rs` `RequestRedirect`), at route level or per backend. `Location` is always
 * absolute: scheme (configured, else the listener's), authority, path, and the request's query.
 * A port that is the scheme's default (80 for http, 443 for https) is omitted.
 *
 * Authority rules as upstream's: `{host}` keeps the request's port unless `scheme` is set
 * (a scheme change implies that scheme's port); `{port}` replaces only the port; `{full}`
 * replaces both; `auto` and `none` keep the request's authority. Path rules are
 * `urlRewrite`'s (UrlRewrite.ts).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { opt } from "../config/Fields.ts"
import * as Policy from "../pipeline/Policy.ts"
import { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"
import * as Headers from "../shared/headers.ts"
import { Authority, compilePath, joinAuthority, PathRewrite, prefixMismatch, splitAuthority } from "./UrlRewrite.ts"

/** Upstream's default redirect status. */
export const DEFAULT_STATUS = 302

const Scheme = Schema.String.check(
  Schema.makeFilter((s: string) => /^[A-Za-z][A-Za-z0-9+.-]*$/.test(s) || `invalid scheme "${s}" (expected e.g. "https")`)
)
const RedirectStatus = Schema.Int.check(
  Schema.makeFilter((n: number) => (n >= 300 && n <= 399) || `status ${n} is not a redirect status (expected 300-399)`)
)

export const Config = Schema.Struct({
  scheme: opt(Scheme, "Scheme of the redirect URL, such as `https`. Default: the listener's."),
  authority: opt(Authority, "Host or port of the redirect URL. Default: the request's."),
  path: opt(PathRewrite, "Path of the redirect URL. Default: the request's. The query is always kept."),
  status: opt(RedirectStatus, "Redirect status code (3xx). Default: 302.")
}).annotate({ description: "Answers with a redirect instead of forwarding the request." })
export type Config = typeof Config.Type

type AuthorityPlan = (request: ProxyRequest, scheme: string) => string

const compileAuthority = (config: Authority, schemeSet: boolean): AuthorityPlan => {
  if (typeof config === "string") return (r, scheme) => {
    const { host, port } = splitAuthority(r.authority)
    return joinAuthority(host, port, scheme)
  }
  if (config.full !== undefined && config.full !== null) {
    const { host, port } = splitAuthority(config.full)
    return (_, scheme) => joinAuthority(host, port, scheme)
  }
  if (config.host !== undefined && config.host !== null) {
    const host = config.host
    if (schemeSet) return () => host
    return (r, scheme) => joinAuthority(host, splitAuthority(r.authority).port, scheme)
  }
  const port = String(config.port)
  return (r, scheme) => joinAuthority(splitAuthority(r.authority).host, port, scheme)
}

export const policy = Policy.define({
  key: "requestRedirect",
  make: (config) =>
    Effect.sync(() => {
      const scheme = config.scheme === undefined || config.scheme === null ? undefined : config.scheme.toLowerCase()
      const authorityPlan = compileAuthority(config.authority ?? "none", scheme !== undefined)
      const pathPlan = config.path === undefined || config.path === null ? undefined : compilePath(config.path)
      const status = config.status ?? DEFAULT_STATUS
      const prefixError = prefixMismatch("requestRedirect")
      return () =>
        Effect.flatMap(currentRequest, (ctx) => {
          const path = pathPlan === undefined ? ctx.path : pathPlan(ctx)
          if (path === undefined) return Effect.fail(prefixError)
          const target = scheme ?? ctx.scheme
          const headers = Headers.empty()
          headers["location"] = `${target}://${authorityPlan(ctx, target)}${path}${ctx.query}`
          headers["content-length"] = "0"
          ctx.directResponse = true
          return Effect.succeed(new ProxyResponse(status, headers, undefined))
        })
    })
})
