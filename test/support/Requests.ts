/**
 * Builds `ProxyRequest`s without sockets, for unit tests of routing and policies.
 */
import type { IncomingMessage } from "node:http"
import { ProxyRequest } from "../../src/pipeline/RequestContext.ts"
import * as Headers from "../../src/shared/headers.ts"

export interface RequestSpec {
  readonly method?: string
  readonly path?: string
  readonly query?: string
  readonly host?: string
  /** The authority as received (default: `host`). */
  readonly authority?: string
  readonly scheme?: "http" | "https"
  readonly headers?: Record<string, string | Array<string>>
}

export const request = (spec: RequestSpec = {}): ProxyRequest => {
  const headers = Headers.empty()
  for (const [k, v] of Object.entries(spec.headers ?? {})) headers[k.toLowerCase()] = v
  const host = spec.host ?? "example.com"
  const authority = spec.authority ?? host
  headers["host"] ??= authority
  // A bare object stands in for the Node request: unit tests never read the socket or body.
  const raw = Object.create(null) as IncomingMessage
  return new ProxyRequest(raw, spec.method ?? "GET", spec.path ?? "/", spec.query ?? "", host, authority, spec.scheme ?? "http", "HTTP/1.1", headers, "127.0.0.1", 1234, 0)
}

/**
 * A request for an absolute URL as received (authority kept verbatim: `new URL` would drop a
 * default port), matched by a route whose path prefix was `matchedPrefix`.
 */
export const requestForUrl = (url: string, matchedPrefix: string | undefined): ProxyRequest => {
  const u = new URL(url)
  const req = request({
    scheme: u.protocol === "https:" ? "https" : "http",
    host: u.hostname,
    authority: url.split("/")[2]!,
    path: u.pathname,
    query: u.search
  })
  req.matchedPrefix = matchedPrefix
  return req
}
