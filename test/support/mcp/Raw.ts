/**
 * What end-to-end tests send to an MCP endpoint without an SDK client: the initialize request
 * and a Streamable HTTP POST (JSON body, both Accept types).
 */

export const INIT = { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "c", version: "0" } } }

/** The Accept value a Streamable HTTP client must send. */
export const BOTH = "application/json, text/event-stream"

/** A Streamable HTTP POST of `body` (a string is sent as is). */
export const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, { method: "POST", headers: { accept: BOTH, "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) })
