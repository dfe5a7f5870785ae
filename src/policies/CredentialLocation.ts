/**
 * Where an authentication policy finds its credential (upstream's `AuthorizationLocation`):
 * a header with an optional prefix, a query parameter, a cookie, or a CEL expression. The
 * same location removes the credential after it was accepted, so the upstream never sees it
 * (security.md §3: inbound tokens forwarded to MCP upstreams). An expression can only
 * extract: there is nothing it could remove.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Cel from "../cel/Cel.ts"
import * as CelContext from "../cel/Context.ts"
import type { ConfigError } from "../config/ConfigError.ts"
import { opt, req } from "../config/Fields.ts"
import type { ProxyRequest } from "../pipeline/RequestContext.ts"

export const Config = Schema.Union([
  Schema.Struct({
    header: req(
      Schema.Struct({
        name: req(Schema.String, "Header name containing the credential."),
        prefix: opt(Schema.String, "Prefix to remove from the header value before validation, such as `Bearer ` or `Basic ` (matched case-insensitively).")
      }),
      "Read the credential from an HTTP header."
    )
  }),
  Schema.Struct({
    queryParameter: req(
      Schema.Struct({ name: req(Schema.String, "Query parameter name containing the credential.") }),
      "Read the credential from a URL query parameter (removed before forwarding)."
    )
  }),
  Schema.Struct({
    cookie: req(Schema.Struct({ name: req(Schema.String, "Cookie name containing the credential.") }), "Read the credential from a request cookie.")
  }),
  Schema.Struct({
    expression: req(Schema.String, "A CEL expression giving the credential string; it can extract a credential but not remove it.")
  })
]).annotate({ description: "Where the credential is read from in incoming requests." })
export type Config = typeof Config.Type

/** A compiled location: per request, read the credential and, once accepted, strip it. */
export interface Location {
  /** The credential, or `undefined` when absent (a header without the prefix counts as absent). */
  readonly extract: (ctx: ProxyRequest) => string | undefined
  readonly remove: (ctx: ProxyRequest) => void
}

export const bearerHeader: Config = { header: { name: "authorization", prefix: "Bearer " } }
export const basicHeader: Config = { header: { name: "authorization", prefix: "Basic " } }

const formDecode = (s: string): string | undefined => {
  try {
    return decodeURIComponent(s.replace(/\+/g, " "))
  } catch {
    return undefined
  }
}

const firstValue = (ctx: ProxyRequest, name: string): string | undefined => {
  const value = ctx.headers[name]
  return value === undefined ? undefined : typeof value === "string" ? value : value[0]
}

const fromHeader = (name: string, prefix: string | undefined): Location => {
  const lowerPrefix = prefix?.toLowerCase()
  return {
    extract: (ctx) => {
      const value = firstValue(ctx, name)
      if (value === undefined) return undefined
      if (lowerPrefix === undefined) return value === "" ? undefined : value
      if (value.length < lowerPrefix.length || value.slice(0, lowerPrefix.length).toLowerCase() !== lowerPrefix) return undefined
      const credential = value.slice(lowerPrefix.length).trim()
      return credential === "" ? undefined : credential
    },
    remove: (ctx) => {
      delete ctx.headers[name]
    }
  }
}

const queryPairs = (query: string): Array<string> => (query.length <= 1 ? [] : query.slice(1).split("&"))

const pairName = (pair: string): string | undefined => {
  const eq = pair.indexOf("=")
  return formDecode(eq === -1 ? pair : pair.slice(0, eq))
}

const fromQuery = (name: string): Location => ({
  extract: (ctx) => {
    for (const pair of queryPairs(ctx.query)) {
      if (pairName(pair) !== name) continue
      const eq = pair.indexOf("=")
      const value = eq === -1 ? "" : formDecode(pair.slice(eq + 1))
      return value === undefined || value === "" ? undefined : value
    }
    return undefined
  },
  remove: (ctx) => {
    const kept = queryPairs(ctx.query).filter((pair) => pairName(pair) !== name)
    ctx.query = kept.length === 0 ? "" : `?${kept.join("&")}`
  }
})

const cookiePairs = (ctx: ProxyRequest): Array<string> => {
  const value = ctx.headers["cookie"]
  if (value === undefined) return []
  return (typeof value === "string" ? value : value.join("; ")).split(";").map((s) => s.trim()).filter((s) => s !== "")
}

const cookieName = (pair: string): string => {
  const eq = pair.indexOf("=")
  return eq === -1 ? pair : pair.slice(0, eq).trim()
}

const fromCookie = (name: string): Location => ({
  extract: (ctx) => {
    for (const pair of cookiePairs(ctx)) {
      if (cookieName(pair) !== name) continue
      let value = pair.slice(pair.indexOf("=") + 1).trim()
      if (value.length >= 2 && value.startsWith("\"") && value.endsWith("\"")) value = value.slice(1, -1)
      return value === "" ? undefined : value
    }
    return undefined
  },
  remove: (ctx) => {
    const kept = cookiePairs(ctx).filter((pair) => cookieName(pair) !== name)
    if (kept.length === 0) delete ctx.headers["cookie"]
    else ctx.headers["cookie"] = kept.join("; ")
  }
})

const noRemoval = (): void => {}

/** Compiles a location (a CEL location is compiled here, so a bad expression is a ConfigError at `path`). */
export const make = (config: Config, path: string): Effect.Effect<Location, ConfigError> => {
  if ("header" in config) return Effect.succeed(fromHeader(config.header.name.toLowerCase(), config.header.prefix ?? undefined))
  if ("queryParameter" in config) return Effect.succeed(fromQuery(config.queryParameter.name))
  if ("cookie" in config) return Effect.succeed(fromCookie(config.cookie.name))
  return Effect.map(Cel.compile(config.expression, `${path}.expression`), (program): Location => ({
    extract: (ctx) => {
      const value = program.evalString(CelContext.forRequest(ctx))
      return value === undefined || value === "" ? undefined : value
    },
    remove: noRemoval
  }))
}
