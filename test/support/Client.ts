/**
 * One HTTP exchange over a fresh connection (no pooling, so every request is its own), for
 * end-to-end tests that need exact statuses, headers and bodies.
 */
import * as http from "node:http"

export interface Reply {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

export interface SendOptions {
  readonly body?: string
  /** Address to connect to. Default: 127.0.0.1. */
  readonly host?: string
}

export const send = (
  port: number,
  method: string,
  target: string,
  headers: Record<string, string> = {},
  options: SendOptions = {}
): Promise<Reply> =>
  new Promise((resolve, reject) => {
    const req = http.request({ host: options.host ?? "127.0.0.1", port, method, path: target, headers, agent: false }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (body += chunk))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      res.on("error", reject)
    })
    req.on("error", reject)
    req.end(options.body)
  })
