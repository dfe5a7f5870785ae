/**
 * Route and listener lookup tables, built once per snapshot.
 *
 * Routes are bucketed by hostname (exact, then `*.suffix` from most to least specific, then
 * routes without hostnames); the first bucket with a matching route wins. Within a bucket,
 * (route, match) candidates are pre-sorted by Gateway API precedence: exact path before
 * prefix/regex (which share a rank), longer path first, method, more headers, more query
 * parameters, then the route key compared lexically (so `route10` sorts before `route2`, as
 * upstream does).
 *
 * @since 0.1.0
 */
import type { ProxyRequest } from "../pipeline/RequestContext.ts"
import type { CompiledMatch } from "./Match.ts"

export interface Candidate<R> {
  readonly route: R
  readonly routeKey: string
  readonly match: CompiledMatch
  /** Config order, the final tie-break inside one route. */
  readonly order: number
}

export const compareCandidates = <R>(a: Candidate<R>, b: Candidate<R>): number => {
  const rank = (c: Candidate<R>) => (c.match.pathKind === "exact" ? 0 : 1)
  return (
    rank(a) - rank(b) ||
    b.match.pathLength - a.match.pathLength ||
    Number(b.match.hasMethod) - Number(a.match.hasMethod) ||
    b.match.headerCount - a.match.headerCount ||
    b.match.queryCount - a.match.queryCount ||
    (a.routeKey < b.routeKey ? -1 : a.routeKey > b.routeKey ? 1 : 0) ||
    a.order - b.order
  )
}

export class RouteTable<R> {
  private readonly exact = new Map<string, Array<Candidate<R>>>()
  /** Wildcard buckets, most specific (longest suffix) first. */
  private readonly wildcards: Array<{ readonly suffix: string; readonly candidates: Array<Candidate<R>> }> = []
  private readonly any: Array<Candidate<R>> = []

  constructor(routes: ReadonlyArray<{ readonly route: R; readonly key: string; readonly hostnames: ReadonlyArray<string>; readonly matches: ReadonlyArray<CompiledMatch> }>) {
    let order = 0
    const wildcards = new Map<string, Array<Candidate<R>>>()
    for (const r of routes) {
      const candidates = r.matches.map((match) => ({ route: r.route, routeKey: r.key, match, order: order++ }))
      if (r.hostnames.length === 0) this.any.push(...candidates)
      for (const hostname of r.hostnames) {
        if (hostname.startsWith("*.")) {
          const suffix = hostname.slice(1)
          wildcards.set(suffix, [...(wildcards.get(suffix) ?? []), ...candidates])
        } else {
          this.exact.set(hostname, [...(this.exact.get(hostname) ?? []), ...candidates])
        }
      }
    }
    for (const list of this.exact.values()) list.sort(compareCandidates)
    for (const [suffix, candidates] of wildcards) this.wildcards.push({ suffix, candidates: candidates.sort(compareCandidates) })
    this.wildcards.sort((a, b) => b.suffix.length - a.suffix.length)
    this.any.sort(compareCandidates)
  }

  private static first<R>(candidates: ReadonlyArray<Candidate<R>> | undefined, request: ProxyRequest): Candidate<R> | undefined {
    if (candidates === undefined) return undefined
    for (let i = 0; i < candidates.length; i++) {
      const c = candidates[i]!
      if (c.match.matches(request)) return c
    }
    return undefined
  }

  find(request: ProxyRequest): Candidate<R> | undefined {
    const host = request.host
    if (this.exact.size > 0) {
      const found = RouteTable.first(this.exact.get(host), request)
      if (found !== undefined) return found
    }
    for (const bucket of this.wildcards) {
      if (host.endsWith(bucket.suffix) && host.length > bucket.suffix.length) {
        const found = RouteTable.first(bucket.candidates, request)
        if (found !== undefined) return found
      }
    }
    return RouteTable.first(this.any, request)
  }
}

/** Listener choice by Host: exact hostname, then the longest matching wildcard, then catch-all. */
export class ListenerTable<L> {
  private readonly exact = new Map<string, L>()
  private readonly wildcards: Array<{ readonly suffix: string; readonly listener: L }> = []
  private catchAll: L | undefined

  constructor(listeners: ReadonlyArray<{ readonly hostname: string; readonly listener: L }>) {
    for (const { hostname, listener } of listeners) {
      if (hostname === "") this.catchAll ??= listener
      else if (hostname.startsWith("*.")) this.wildcards.push({ suffix: hostname.slice(1), listener })
      else if (!this.exact.has(hostname)) this.exact.set(hostname, listener)
    }
    this.wildcards.sort((a, b) => b.suffix.length - a.suffix.length)
  }

  find(host: string): L | undefined {
    const exact = this.exact.get(host)
    if (exact !== undefined) return exact
    for (const w of this.wildcards) {
      if (host.endsWith(w.suffix) && host.length > w.suffix.length) return w.listener
    }
    return this.catchAll
  }
}
