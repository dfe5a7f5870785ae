/**
 * A real HTTP upstream for end-to-end tests (the proxymock of agentgateway's tests): echoes
 * what it received as JSON, and has a few endpoints for streaming, slowness and statuses.
 *
 * Special endpoints match on the path's end, so they work behind any route prefix:
 *   (any other path)            → 200 JSON {method, url, headers, body}
 *   /body                       → pipes the request body back as it arrives
 *   /stream?chunks=N&ms=M       → N chunks, M ms apart, then end
 *   /slow?ms=M                  → waits M ms, then 200 "slow"
 *   /status/CODE                → that status, body "status CODE"
 *   /hop                        → response with hop-by-hop headers that must not reach clients
 */
import * as http from "node:http"

export interface Upstream {
  readonly port: number
  /** Requests received, in order. */
  readonly received: Array<{ readonly method: string; readonly url: string; readonly headers: http.IncomingHttpHeaders }>
  readonly close: () => Promise<void>
}

export const startUpstream = (): Promise<Upstream> => {
  const received: Upstream["received"] = []
  const server = http.createServer((req, res) => {
    received.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers })
    const url = new URL(req.url ?? "/", "http://upstream")
    if (url.pathname.endsWith("/body")) {
      res.writeHead(200, { "content-type": "application/octet-stream" })
      req.pipe(res)
      return
    }
    if (url.pathname.endsWith("/stream")) {
      const chunks = Number(url.searchParams.get("chunks") ?? "3")
      const ms = Number(url.searchParams.get("ms") ?? "50")
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
      let i = 0
      const tick = () => {
        if (i === chunks) return res.end()
        res.write(`data: chunk${i++}\n\n`)
        setTimeout(tick, ms)
      }
      tick()
      req.resume()
      return
    }
    if (url.pathname.endsWith("/slow")) {
      req.resume()
      setTimeout(() => res.end("slow"), Number(url.searchParams.get("ms") ?? "500"))
      return
    }
    const status = /\/status\/(\d{3})$/.exec(url.pathname)
    if (status !== null) {
      req.resume()
      res.writeHead(Number(status[1]), { "content-type": "text/plain" })
      res.end(`status ${status[1]}`)
      return
    }
    if (url.pathname.endsWith("/hop")) {
      req.resume()
      res.writeHead(200, { connection: "keep-alive, x-internal", "x-internal": "secret", "keep-alive": "timeout=5", "x-ok": "1" })
      res.end("hop")
      return
    }
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString("utf8") })
      res.writeHead(200, { "content-type": "application/json", "x-upstream": "yes" })
      res.end(body)
    })
  })
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      resolve({
        port,
        received,
        close: () =>
          new Promise((r) => {
            server.close(() => r())
            server.closeAllConnections()
          })
      })
    })
  })
}
