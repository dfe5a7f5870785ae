/**
 * The benchmark's baseline: the minimal Node reverse proxy the performance targets are measured
 * against (docs: reference/performance.md, "minimal Node proxy"). A node:http server; each request
 * goes to one upstream through an undici `Pool.stream()`: the request body (the IncomingMessage)
 * streams to the upstream, and undici writes the response body straight into the Node
 * `ServerResponse`. Hop-by-hop headers are stripped both ways; nothing else is done.
 *
 *   node bench/baseline-proxy.ts http://127.0.0.1:4001      (or UPSTREAM=… ; PORT=… default 0)
 *
 * Reports `{ type: "listening", port }` over IPC when forked, else prints the port. Exits when
 * the parent's IPC channel closes.
 */
import * as http from "node:http"
import { Pool } from "undici"
import type { Dispatcher } from "undici"

const upstream = process.argv[2] ?? process.env["UPSTREAM"]
if (upstream === undefined) {
  process.stderr.write("usage: node bench/baseline-proxy.ts http://HOST:PORT\n")
  process.exit(2)
}

const pool = new Pool(upstream, { headersTimeout: 0, bodyTimeout: 0, keepAliveTimeout: 60_000 })

const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade"
])

type Headers = Record<string, string | Array<string>>

const endToEnd = (source: Record<string, string | Array<string> | undefined>): Headers => {
  const out: Headers = {}
  for (const name in source) {
    const value = source[name]
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value
  }
  return out
}

const onHead = ({ statusCode, headers, opaque }: Dispatcher.StreamFactoryData<http.ServerResponse>) => {
  opaque.writeHead(statusCode, endToEnd(headers))
  return opaque
}

const onDone = (error: Error | null, { opaque }: Dispatcher.StreamData<http.ServerResponse>) => {
  if (error === null) return
  if (opaque.headersSent) opaque.destroy(error)
  else {
    opaque.writeHead(502, { "content-type": "text/plain" })
    opaque.end("upstream failed\n")
  }
}

const server = http.createServer((req, res) => {
  const headers = req.headers
  const hasBody = headers["transfer-encoding"] !== undefined ||
    (headers["content-length"] !== undefined && headers["content-length"] !== "0")
  pool.stream(
    {
      path: req.url ?? "/",
      method: req.method ?? "GET",
      headers: endToEnd(headers),
      body: hasBody ? req : null,
      opaque: res
    },
    onHead,
    onDone
  )
})
server.keepAliveTimeout = 120_000
server.headersTimeout = 121_000

server.listen(Number(process.env["PORT"] ?? 0), "127.0.0.1", () => {
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  if (process.send !== undefined) process.send({ type: "listening", port })
  else process.stdout.write(`baseline proxy listening on 127.0.0.1:${port} -> ${upstream}\n`)
})

const shutdown = () => {
  server.close()
  server.closeAllConnections()
  void pool.destroy().finally(() => process.exit(0))
}
process.on("disconnect", shutdown)
process.on("SIGTERM", shutdown)
process.on("SIGINT", shutdown)
