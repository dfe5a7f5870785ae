/**
 * Origin and Host checks in front of both MCP frontends (reference §2.1, MCP transports spec
 * "servers MUST validate the Origin header"). Always: an `Origin` that is present must be one
 * well-formed http(s) origin (a duplicated or malformed one is never sent by a browser, so it
 * is refused). With `dnsRebindingProtection: true` (agentgateway `mcp/dns_rebinding.rs`): the
 * authority must be localhost, 127.0.0.1 or [::1] and an Origin, if any, must name one of
 * those; `Origin: null` (an opaque origin) is refused. Refusals are 403 text/plain.
 *
 * @since 0.1.0
 */
import type { ProxyRequest } from "../pipeline/RequestContext.ts"
import { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import * as Authority from "../shared/Authority.ts"
import * as Headers from "../shared/headers.ts"

export const REBINDING_MESSAGE = "MCP DNS rebinding protection: Host/Origin must be localhost, 127.0.0.1, or [::1]"
export const INVALID_ORIGIN_MESSAGE = "invalid Origin header"

const LOCAL_HOSTS: ReadonlySet<string> = new Set(["localhost", "127.0.0.1", "[::1]"])

/** The origin's host when it is one serialized http(s) origin (`scheme://host[:port]`), else undefined. */
const originHost = (origin: string): string | undefined => {
  if (!/^https?:\/\/[^/?#@\s]+$/i.test(origin)) return undefined
  let url: URL
  try {
    url = new URL(origin)
  } catch {
    return undefined
  }
  return url.username === "" && url.password === "" && url.pathname === "/" ? url.hostname.toLowerCase() : undefined
}

const forbidden = (message: string) => {
  const headers = Headers.empty()
  headers["content-type"] = "text/plain"
  return new ProxyResponse(403, headers, message)
}

/** A 403 response when the request must not reach the MCP frontend, else undefined. */
export const check = (ctx: ProxyRequest, dnsRebindingProtection: boolean): ProxyResponse | undefined => {
  if (dnsRebindingProtection && !Authority.isLocal(ctx.authority)) return forbidden(REBINDING_MESSAGE)
  const origin = ctx.headers["origin"]
  if (origin === undefined) return undefined
  // Origin is a singleton header: two values are refused rather than one of them checked.
  if (typeof origin !== "string") return forbidden(dnsRebindingProtection ? REBINDING_MESSAGE : INVALID_ORIGIN_MESSAGE)
  const value = origin.trim()
  if (value === "null") return dnsRebindingProtection ? forbidden(REBINDING_MESSAGE) : undefined
  const host = originHost(value)
  if (host === undefined) return forbidden(dnsRebindingProtection ? REBINDING_MESSAGE : INVALID_ORIGIN_MESSAGE)
  if (dnsRebindingProtection && !LOCAL_HOSTS.has(host)) return forbidden(REBINDING_MESSAGE)
  return undefined
}
