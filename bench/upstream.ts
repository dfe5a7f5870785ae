/**
 * The benchmark's upstream: a plain node:http server on loopback.
 *
 *   GET  /                -> 200 "hello, world\n" (13 bytes)
 *   GET  …/headers        -> 200 the request headers as JSON (sanity checks; any path ending so)
 *   GET  …/status/503     -> 503 "attempt N" (N: the x-retry-attempt header, else 0; sanity checks)
 *   GET  …/slow           -> 200 after SLOW_MS (sanity checks of timeouts)
 *   POST (any path)       -> drains the request body, 200 with the byte count as text
 *
 * Listens on PORT (default 0 = ephemeral) and reports `{ type: "listening", port }` over IPC when
 * forked, or prints the port when run by hand. Exits when the parent's IPC channel closes.
 */
import * as http from "node:http"

const HELLO = Buffer.from("hello, world\n")
const HELLO_HEADERS = { "content-type": "text/plain", "content-length": String(HELLO.length) }
/** Longer than the request timeout bench/policies.ts configures. */
const SLOW_MS = 3000

const server = http.createServer((req, res) => {
  if (req.method === "POST" || req.method === "PUT") {
    let bytes = 0
    req.on("data", (chunk: Buffer) => {
      bytes += chunk.length
    })
    req.on("end", () => {
      const body = String(bytes)
      res.writeHead(200, { "content-type": "text/plain", "content-length": String(Buffer.byteLength(body)) })
      res.end(body)
    })
    return
  }
  const url = req.url ?? "/"
  if (url.endsWith("/headers")) {
    const body = JSON.stringify(req.headers)
    res.writeHead(200, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) })
    res.end(body)
    req.resume()
    return
  }
  if (url.endsWith("/status/503")) {
    const body = `attempt ${req.headers["x-retry-attempt"] ?? "0"}`
    res.writeHead(503, { "content-type": "text/plain", "content-length": String(Buffer.byteLength(body)) })
    res.end(body)
    req.resume()
    return
  }
  if (url.endsWith("/slow")) {
    req.resume()
    setTimeout(() => {
      res.writeHead(200, HELLO_HEADERS)
      res.end(HELLO)
    }, SLOW_MS)
    return
  }
  res.writeHead(200, HELLO_HEADERS)
  res.end(HELLO)
  req.resume()
})
// Longer than any pause in the benchmark, so pooled upstream connections never race a close.
server.keepAliveTimeout = 120_000
server.headersTimeout = 121_000

server.listen(Number(process.env["PORT"] ?? 0), "127.0.0.1", () => {
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  if (process.send !== undefined) process.send({ type: "listening", port })
  else process.stdout.write(`upstream listening on 127.0.0.1:${port}\n`)
})

process.on("disconnect", () => process.exit(0))
process.on("SIGTERM", () => process.exit(0))
process.on("SIGINT", () => process.exit(0))
