/**
 * Compiled route matches: one predicate per `matches` entry, built when the snapshot is
 * built. Semantics follow agentgateway / Gateway API: path exact (byte-equal), prefix on
 * segment boundaries, regex anchored at both ends; method exact; headers (pseudo-headers
 * allowed) and query parameters exact or full regex against any of the repeated values.
 *
 * @since 0.1.0
 */
import type { RouteMatch } from "../config/LocalConfig.ts"
import type { ProxyRequest } from "../pipeline/RequestContext.ts"
import * as LinearRegex from "../shared/LinearRegex.ts"

export type Predicate = (request: ProxyRequest) => boolean

export interface CompiledMatch {
  readonly matches: Predicate
  /** Precedence inputs (RouteTable.ts sorts on these). */
  readonly pathKind: "exact" | "prefix" | "regex"
  readonly pathLength: number
  /** For a prefix match, the prefix without its trailing `/` (what prefix rewrites replace). */
  readonly prefix: string | undefined
  /** The path pattern as upstream names spans: `/api/*` for a prefix, the exact path, or the regex. */
  readonly pathMatch: string
  readonly hasMethod: boolean
  readonly headerCount: number
  readonly queryCount: number
}

/** Compiles a regex to match the whole input; an invalid pattern is the caller's config error. */
export const fullRegex = (source: string): RegExp => LinearRegex.compile(`^(?:${source})$`)

export const prefixMatcher = (prefix: string): ((path: string) => boolean) => {
  const p = prefix.endsWith("/") ? prefix.slice(0, -1) : prefix
  if (p === "") return () => true
  return (path) => {
    if (!path.startsWith(p)) return false
    return path.length === p.length || path.charCodeAt(p.length) === 47 || (path.length === p.length + 1 && path.endsWith("/"))
  }
}

const valueMatcher = (value: { readonly exact?: string | null; readonly regex?: string | null }): ((v: string) => boolean) => {
  if (value.exact !== undefined && value.exact !== null) {
    const exact = value.exact
    return (v) => v === exact
  }
  const re = fullRegex(value.regex ?? "")
  return (v) => re.test(v)
}

const headerValues = (request: ProxyRequest, name: string): ReadonlyArray<string> => {
  switch (name) {
    case ":authority":
      return [request.authority]
    case ":method":
      return [request.method]
    case ":scheme":
      return [request.scheme]
    case ":path":
      return [request.pathAndQuery]
  }
  const value = request.headers[name]
  return value === undefined ? [] : typeof value === "string" ? [value] : value
}

/** Form-url-decoded query parameters of a request (computed once per request, on demand). */
const queryParams = (request: ProxyRequest): URLSearchParams => {
  const cached = queryCache.get(request)
  if (cached !== undefined) return cached
  const params = new URLSearchParams(request.query)
  queryCache.set(request, params)
  return params
}
const queryCache = new WeakMap<ProxyRequest, URLSearchParams>()

export const compile = (match: RouteMatch): CompiledMatch => {
  const checks: Array<Predicate> = []
  const path = match.path ?? { pathPrefix: "/" }
  let pathKind: CompiledMatch["pathKind"]
  let pathLength: number
  let matchedPrefix: string | undefined
  let pathMatch: string
  if (path.exact !== undefined && path.exact !== null) {
    const exact = path.exact
    pathKind = "exact"
    pathLength = exact.length
    pathMatch = exact
    checks.push((r) => r.path === exact)
  } else if (path.regex !== undefined && path.regex !== null) {
    const re = fullRegex(path.regex)
    pathKind = "regex"
    pathLength = path.regex.length
    pathMatch = path.regex
    checks.push((r) => re.test(r.path))
  } else {
    const prefix = path.pathPrefix ?? "/"
    const test = prefixMatcher(prefix)
    pathKind = "prefix"
    pathLength = prefix.length
    matchedPrefix = prefix.endsWith("/") ? prefix.slice(0, -1) : prefix
    pathMatch = `${matchedPrefix}/*`
    if (prefix !== "/" && prefix !== "") checks.push((r) => test(r.path))
  }
  const method = match.method ?? undefined
  if (method !== undefined && method !== null) checks.push((r) => r.method === method)
  for (const h of match.headers ?? []) {
    const name = h.name.toLowerCase()
    const test = valueMatcher(h.value)
    checks.push((r) => headerValues(r, name).some(test))
  }
  for (const q of match.query ?? []) {
    const name = q.name
    const test = valueMatcher(q.value)
    checks.push((r) => queryParams(r).getAll(name).some(test))
  }
  const matches: Predicate = checks.length === 0
    ? () => true
    : checks.length === 1
    ? checks[0]!
    : (r) => {
      for (let i = 0; i < checks.length; i++) if (!checks[i]!(r)) return false
      return true
    }
  return {
    matches,
    pathKind,
    pathLength,
    prefix: matchedPrefix,
    pathMatch,
    hasMethod: method !== undefined && method !== null,
    headerCount: match.headers?.length ?? 0,
    queryCount: match.query?.length ?? 0
  }
}
