/**
 * `csrf`: rejects cross-origin state-changing requests from browsers (agentgateway's
 * `csrf.rs`), 403 `CSRF validation failed`. The rules, in upstream's order:
 * 1. GET, HEAD and OPTIONS always pass.
 * 2. With `Sec-Fetch-Site`: `same-origin` or `none` (user-initiated) pass; any other value
 *    passes only if `Origin` is one of `additionalOrigins`.
 * 3. Without it: no `Origin` (or `Origin: null`) passes, since non-browser clients send
 *    neither header and a browser that omits both cannot be told apart; an `Origin` equal to
 *    the request's own (listener scheme + `Host`) passes, as does one in `additionalOrigins`.
 *
 * Origins are compared as RFC 6454 serialises them: scheme and host case-insensitively, and a
 * default port (`:80` for http, `:443` for https) equal to no port. Upstream compares the
 * strings exactly, so it rejects e.g. `Host: Example.com` with `Origin: http://example.com`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { opt } from "../config/Fields.ts"
import * as Policy from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import { currentRequest } from "../pipeline/RequestContext.ts"
import * as Headers from "../shared/headers.ts"
import { defaultPort } from "./UrlRewrite.ts"

const originPattern = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(?::(\d{1,5}))?$/

const OriginText = Schema.String.check(
  Schema.makeFilter((s: string) =>
    originPattern.test(s) || `invalid origin "${s}" (expected scheme://host[:port], without path or trailing slash)`
  )
)

export const Config = Schema.Struct({
  additionalOrigins: opt(
    Schema.Array(OriginText),
    "Origins besides the request's own that may send state-changing requests, e.g. `https://app.example.com`."
  )
}).annotate({ description: "CSRF protection: unsafe methods need a same-origin request or a trusted Origin." })
export type Config = typeof Config.Type

/** `scheme://host[:port]` lower-cased without a default port, or undefined if not an origin. */
export const canonicalOrigin = (origin: string): string | undefined => {
  const m = originPattern.exec(origin)
  if (m === null) return undefined
  const scheme = m[1]!.toLowerCase()
  const host = m[2]!.toLowerCase()
  const port = m[3]
  return port === undefined || port === defaultPort(scheme) ? `${scheme}://${host}` : `${scheme}://${host}:${port}`
}

const SAFE_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS"])

export const policy = Policy.define({
  key: "csrf",
  make: (config) =>
    Effect.sync(() => {
      const trusted = new Set<string>()
      for (const o of config.additionalOrigins ?? []) {
        const canonical = canonicalOrigin(o)
        if (canonical !== undefined) trusted.add(canonical)
      }
      const rejected = ProxyError.make({ _tag: "CsrfFailed" })
      return (next) =>
        Effect.flatMap(currentRequest, (ctx) => {
          if (SAFE_METHODS.has(ctx.method)) return next
          const raw = Headers.get(ctx.headers, "origin")
          // `Origin: null` (opaque origins: sandboxed frames, file:) counts as absent, as upstream.
          const origin = raw === undefined || raw === "null" ? undefined : canonicalOrigin(raw) ?? ""
          const isTrusted = origin !== undefined && trusted.has(origin)
          const site = Headers.get(ctx.headers, "sec-fetch-site")
          if (site !== undefined) {
            const s = site.toLowerCase()
            return s === "same-origin" || s === "none" || isTrusted ? next : Effect.fail(rejected)
          }
          if (origin === undefined || isTrusted) return next
          return origin === canonicalOrigin(`${ctx.scheme}://${ctx.authority}`) ? next : Effect.fail(rejected)
        })
    })
})
