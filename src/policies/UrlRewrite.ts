/**
 * `urlRewrite`: rewrites the authority and/or path before the request is forwarded
 * (agentgateway's `filters.rs` `UrlRewrite`). The query string is always kept.
 *
 * Also home of the two shapes `requestRedirect` shares (upstream `HostRedirect`,
 * `PathRedirect`) and their arithmetic, so a rewrite and a redirect of the same config agree:
 * - `path.prefix` replaces the selected route match's path prefix on a segment boundary
 *   (`/api` → `/v1` turns `/api/users` into `/v1/users`, and `/api` into `/v1`); a route that
 *   matched by exact path or regex has no prefix to replace, which fails the request (500)
 *   like upstream's "prefix redirect requires prefix match".
 * - `authority: {host}` drops the port for a rewrite (upstream forwards `Host: newhost`);
 *   `{port}` omits the port when it is the scheme's default.
 * - Setting the authority (`full`, `host`, `port` or `none`) disables the automatic `Host`
 *   rewrite of DNS-named backends; `auto` (or no authority) keeps it.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { exactlyOneOf, opt } from "../config/Fields.ts"
import * as Policy from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"

// ---------------------------------------------------------------------------------------------
// Shared shapes (HostRedirect, PathRedirect)
// ---------------------------------------------------------------------------------------------

const HOST = String.raw`(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)`
const hostPattern = new RegExp(`^${HOST}$`)
const authorityPattern = new RegExp(`^${HOST}(?::(\\d{1,5}))?$`)

const HostText = Schema.String.check(
  Schema.makeFilter((s: string) => hostPattern.test(s) || `invalid host "${s}" (expected a DNS name or IP, without port)`)
)
const AuthorityText = Schema.String.check(
  Schema.makeFilter((s: string) => {
    const m = authorityPattern.exec(s)
    return (m !== null && (m[1] === undefined || Number(m[1]) <= 65535)) || `invalid authority "${s}" (expected host or host:port)`
  })
)
const PortNumber = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 65535 }))

/** A path a rewrite may produce: absolute, without query, fragment, whitespace or controls. */
const pathProblem = (s: string): string | undefined =>
  !s.startsWith("/")
    ? `invalid path "${s}" (must start with "/")`
    : /[?#\s\x00-\x1f\x7f]/.test(s)
    ? `invalid path "${s}" (no "?", "#", whitespace or control characters; the query is kept from the request)`
    : undefined
const FullPath = Schema.String.check(Schema.makeFilter((s: string) => pathProblem(s) ?? true))
const PrefixPath = Schema.String.check(Schema.makeFilter((s: string) => s === "" || (pathProblem(s) ?? true)))

/** Upstream `HostRedirect`: `{full}` | `{host}` | `{port}` | `"auto"` | `"none"`. */
export const Authority = Schema.Union([
  Schema.Struct({
    full: opt(AuthorityText, "Replace the whole authority: `host` or `host:port`."),
    host: opt(HostText, "Replace only the host."),
    port: opt(PortNumber, "Replace only the port (omitted when it is the scheme's default).")
  }).check(exactlyOneOf(["full", "host", "port"])),
  Schema.Literals(["auto", "none"]).annotate({
    description: "`auto`: keep the authority (DNS-named backends still get their own Host); `none`: keep it unchanged."
  })
]).annotate({ description: "How the authority (host and port) is replaced." })
export type Authority = typeof Authority.Type

/** Upstream `PathRedirect`: `{full}` | `{prefix}`. */
export const PathRewrite = Schema.Struct({
  full: opt(FullPath, "Replace the whole path."),
  prefix: opt(PrefixPath, "Replace the route's matched path prefix, on a segment boundary.")
}).check(exactlyOneOf(["full", "prefix"])).annotate({ description: "How the path is replaced; the query is kept." })
export type PathRewrite = typeof PathRewrite.Type

export const defaultPort = (scheme: string): string | undefined =>
  scheme === "http" ? "80" : scheme === "https" ? "443" : undefined

/** Splits `host[:port]` / `[v6][:port]` (the port is undefined when absent). */
export const splitAuthority = (authority: string): { readonly host: string; readonly port: string | undefined } => {
  const close = authority.startsWith("[") ? authority.indexOf("]") : -1
  const colon = authority.lastIndexOf(":")
  if (colon === -1 || colon < close) return { host: authority, port: undefined }
  return { host: authority.slice(0, colon), port: authority.slice(colon + 1) }
}

/** `host` or `host:port`, omitting a port that is the scheme's default. */
export const joinAuthority = (host: string, port: string | undefined, scheme: string): string =>
  port === undefined || port === "" || port === defaultPort(scheme) ? host : `${host}:${port}`

/** Computes a new path from the request's (already normalised) path, or undefined if it cannot. */
export type PathPlan = (request: ProxyRequest) => string | undefined

export const compilePath = (config: PathRewrite): PathPlan => {
  if (config.full !== undefined && config.full !== null) {
    const full = config.full
    return () => full
  }
  const replacement = config.prefix ?? ""
  return (request) => {
    const matched = request.matchedPrefix
    if (matched === undefined) return undefined
    const path = request.path
    // Guards a path changed since route selection (a full rewrite before a prefix redirect).
    if (!path.startsWith(matched) || (path.length > matched.length && path.charCodeAt(matched.length) !== 47)) return undefined
    const rest = path.slice(matched.length)
    const joined = replacement.endsWith("/") && rest.startsWith("/") ? replacement.slice(0, -1) + rest : replacement + rest
    return joined === "" ? "/" : joined
  }
}

/** The error of a prefix rewrite on a route that was not matched by prefix. */
export const prefixMismatch = (policy: string): ProxyError.ProxyError =>
  ProxyError.make({ _tag: "Internal", cause: new Error(`${policy}: path.prefix needs a route matched by pathPrefix`) })

const hostOf = (authority: string): string => {
  const host = splitAuthority(authority).host
  return (host.startsWith("[") ? host.slice(1, -1) : host).toLowerCase()
}

// ---------------------------------------------------------------------------------------------
// urlRewrite
// ---------------------------------------------------------------------------------------------

export const Config = Schema.Struct({
  authority: opt(Authority, "Host or port rewrite applied before forwarding."),
  path: opt(PathRewrite, "Path rewrite applied before forwarding; the query is kept.")
}).annotate({ description: "Rewrites the request's authority and/or path before it is forwarded." })
export type Config = typeof Config.Type

/** The new authority for a rewrite. */
type AuthorityPlan = (request: ProxyRequest) => string

const compileAuthority = (config: Exclude<Authority, string>): AuthorityPlan => {
  if (config.full !== undefined && config.full !== null) {
    const { host, port } = splitAuthority(config.full)
    return (r) => joinAuthority(host, port, r.scheme)
  }
  if (config.host !== undefined && config.host !== null) {
    const host = config.host
    return () => host
  }
  const port = String(config.port)
  return (r) => joinAuthority(splitAuthority(r.authority).host, port, r.scheme)
}

export const policy = Policy.define({
  key: "urlRewrite",
  make: (config) =>
    Effect.sync(() => {
      const authority = config.authority ?? "auto"
      const authorityPlan = typeof authority === "string" ? undefined : compileAuthority(authority)
      // Upstream disables the auto host rewrite for anything but `auto`, including `none`.
      const pinsAuthority = authority !== "auto"
      const pathPlan = config.path === undefined || config.path === null ? undefined : compilePath(config.path)
      const writtenPrefix = config.path?.prefix ?? undefined
      // A later prefix rewrite or redirect replaces the prefix this one wrote.
      const nextMatchedPrefix = writtenPrefix === undefined ? undefined : writtenPrefix.endsWith("/") ? writtenPrefix.slice(0, -1) : writtenPrefix
      const prefixError = prefixMismatch("urlRewrite")
      return (next) =>
        Effect.flatMap(currentRequest, (ctx) => {
          const path = pathPlan === undefined ? ctx.path : pathPlan(ctx)
          if (path === undefined) return Effect.fail(prefixError)
          ctx.originalUrl ??= { authority: ctx.authority, host: ctx.host, path: ctx.path, query: ctx.query }
          ctx.path = path
          if (nextMatchedPrefix !== undefined) ctx.matchedPrefix = nextMatchedPrefix
          if (authorityPlan !== undefined) {
            const rewritten = authorityPlan(ctx)
            ctx.authority = rewritten
            ctx.host = hostOf(rewritten)
            ctx.headers["host"] = rewritten
          }
          if (pinsAuthority) ctx.authorityRewritten = true
          return next
        })
    })
})
