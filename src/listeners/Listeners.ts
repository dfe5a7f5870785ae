/**
 * One `node:http` / `node:https` server per bind, with every server limit set explicitly
 * (Node's defaults are not an edge proxy's: security.md §0.3, §5 #7 and #9). Servers read the
 * current snapshot per request and per TLS handshake, so a reload that keeps the port set
 * only swaps a reference; new ports are opened before the swap and a port that cannot listen
 * fails the whole reload.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as http from "node:http"
import * as https from "node:https"
import type * as net from "node:net"
import type * as tls from "node:tls"
import { ConfigError } from "../config/ConfigError.ts"
import type * as Ir from "../ir/Ir.ts"
import type { CompiledBind, Compiled } from "../state/Snapshot.ts"
import * as RequestHandler from "./RequestHandler.ts"

/** Header-read deadline against slowloris (Node: 60 s; agentgateway: the 10 min idle timeout). */
export const HEADERS_TIMEOUT_MS = 10_000
/** How often Node enforces the header-read deadline. */
export const CONNECTION_CHECK_MS = 1_000
/** How often idle keep-alive connections are closed while draining. */
export const DRAIN_SWEEP_MS = 50
/** Largest request head accepted (Node's default, stated so it cannot drift). */
export const MAX_HEADER_BYTES = 16 * 1024

export interface OpenServer {
  readonly port: number
  readonly protocol: "HTTP" | "HTTPS"
  readonly mtls: MtlsMode
  readonly server: http.Server
  /** Resolves once every connection has ended. */
  readonly close: (deadlineMs: number) => Promise<void>
}

/**
 * Client certificates on one port: `all` TLS listeners verify them (OpenSSL refuses the
 * handshake), `mixed` (some do): certificates are requested and checked after the handshake
 * against the listener SNI chose, so listeners without a client CA still take clients without
 * one. The verify flags are per server in Node, not per SNI context.
 */
type MtlsMode = "off" | "all" | "mixed"

const mtlsMode = (bind: CompiledBind): MtlsMode => {
  const tls = bind.all.flatMap((l) => (l.tls === undefined ? [] : [l.tls]))
  const verifying = tls.filter((t) => t.options.requestCert).length
  return verifying === 0 ? "off" : verifying === tls.length ? "all" : "mixed"
}

const serverOptions = (settings: Ir.Settings): http.ServerOptions => ({
  maxHeaderSize: MAX_HEADER_BYTES,
  headersTimeout: HEADERS_TIMEOUT_MS,
  // Off: streamed responses (SSE, MCP, LLM) legitimately outlive any fixed request deadline;
  // per-route `timeout` policies bound requests instead.
  requestTimeout: 0,
  keepAliveTimeout: settings.http1IdleTimeoutMs,
  // Node checks the two timeouts above only this often (default 30 s, which would let a
  // slowloris client hold a socket for up to 40 s).
  connectionsCheckingInterval: CONNECTION_CHECK_MS,
  requireHostHeader: true,
  joinDuplicateHeaders: false,
  insecureHTTPParser: false,
  noDelay: true
})

/**
 * Stops accepting, lets in-flight work finish, and at the deadline closes what is left:
 * `closeAllConnections` knows only connections that reached HTTP, so every accepted socket is
 * tracked too (`sockets`). Without that, a TLS connection that never finished its handshake
 * kept the server, and so the process, from closing until the client went away.
 */
const closeServer = (server: http.Server, deadlineMs: number, sockets: ReadonlySet<net.Socket>): Promise<void> =>
  new Promise((resolve) => {
    if (!server.listening) return resolve()
    const timer = setTimeout(() => {
      server.closeAllConnections()
      for (const socket of sockets) socket.destroy()
    }, deadlineMs)
    timer.unref()
    // Keep-alive connections become idle as their last response ends: close them as they do,
    // so draining ends when the work does, not at the deadline.
    const sweep = setInterval(() => server.closeIdleConnections(), DRAIN_SWEEP_MS)
    sweep.unref()
    server.close(() => {
      clearTimeout(timer)
      clearInterval(sweep)
      resolve()
    })
    server.closeIdleConnections()
  })

const listen = (server: net.Server, port: number, host: string | undefined): Promise<void> =>
  new Promise((resolve, reject) => {
    const onError = (error: Error) => reject(error)
    server.once("error", onError)
    server.listen({ port, ...(host === undefined ? {} : { host }) }, () => {
      server.off("error", onError)
      resolve()
    })
  })

export interface ListenerSetEnv extends Omit<RequestHandler.HandlerEnv, "bind"> {
  readonly current: () => Compiled | undefined
}

export class ListenerSet {
  readonly servers = new Map<number, OpenServer>()
  private readonly env: ListenerSetEnv

  constructor(env: ListenerSetEnv) {
    this.env = env
  }

  private bind = (port: number): CompiledBind | undefined => this.env.current()?.binds.get(port)

  private open(bind: CompiledBind, settings: Ir.Settings): Promise<OpenServer> {
    const port = bind.ir.port
    const scheme = bind.ir.protocol === "HTTPS" ? "https" : "http"
    const handler = RequestHandler.make({ ...this.env, bind: this.bind }, port, scheme)
    let server: http.Server
    const mtls = mtlsMode(bind)
    if (bind.ir.protocol === "HTTPS") {
      const first = bind.all.find((l) => l.tls !== undefined)?.tls
      server = https.createServer({
        ...serverOptions(settings),
        ...(first?.options ?? {}),
        // Node's default is 120 s; agentgateway's 15 s (a client that never finishes holds a socket).
        handshakeTimeout: settings.tlsHandshakeTimeoutMs,
        requestCert: mtls !== "off",
        rejectUnauthorized: mtls === "all",
        SNICallback: (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => {
          const current = this.bind(port)
          const listener = current?.listeners.find(servername.toLowerCase()) ?? current?.all[0]
          cb(null, listener?.tls?.context)
        }
      })
      server.on("secureConnection", (socket: tls.TLSSocket) => {
        if (socket.authorized) return
        const current = this.bind(port)
        if (current === undefined) return
        const sni = socket.servername
        const listener = typeof sni === "string" ? (current.listeners.find(sni.toLowerCase()) ?? current.all[0]) : current.all.find((l) => l.tls !== undefined)
        if (listener?.tls?.options.requestCert === true) socket.destroy()
      })
    } else {
      server = http.createServer(serverOptions(settings))
    }
    // Node keeps only this many headers; one more than the limit lets the handler answer 431.
    server.maxHeadersCount = settings.http1MaxHeaders + 1
    server.timeout = 0
    server.on("request", handler)
    const bindName = `bind/${port}`
    const protocol = scheme
    const sockets = new Set<net.Socket>()
    server.on("connection", (socket: net.Socket) => {
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
      // Which listener serves is decided per request (by Host); a bind with one listener names it.
      const only = this.bind(port)?.all
      const listener = only !== undefined && only.length === 1 ? only[0]!.ir : undefined
      this.env.metrics.connection(bindName, listener?.gatewayName ?? "", listener?.name ?? "", protocol)
    })
    // CONNECT is not proxied (agentgateway's default `frontendPolicies.connect: deny`).
    server.on("connect", (_req: http.IncomingMessage, socket: net.Socket) => {
      socket.end("HTTP/1.1 405 Method Not Allowed\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
    })
    server.on("clientError", (error: NodeJS.ErrnoException, socket: net.Socket) => {
      // Only HTTP errors (a parse error, a head that took too long) get an HTTP answer. A TLS
      // failure (a handshake that timed out or went wrong, which https also reports here) has
      // no HTTP to speak: ending the socket politely would leave it half-open for as long as
      // the client likes.
      const code = error.code ?? ""
      const answerable = code.startsWith("HPE_") || code === "ERR_HTTP_REQUEST_TIMEOUT"
      // A response already under way on this connection (a pipelined request went bad while an
      // SSE stream was open): an answer now would land inside its body. Node's own handler checks
      // the same (`_httpMessage`, the response the socket is writing).
      const inFlight = (socket as net.Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true
      if (!socket.writable || !answerable || inFlight) return socket.destroy()
      const status = code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : code === "ERR_HTTP_REQUEST_TIMEOUT" ? "408 Request Timeout" : "400 Bad Request"
      socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
      // The answer is the last thing this connection carries, whether or not the client reads it.
      socket.once("finish", () => socket.destroySoon())
    })
    return listen(server, port, undefined).then(() => ({
      port,
      protocol: bind.ir.protocol,
      mtls,
      server,
      close: (deadlineMs: number) => closeServer(server, deadlineMs, sockets)
    }))
  }

  /**
   * Opens servers for ports the new snapshot adds (before it is swapped in); returns a commit
   * step that closes servers for ports it no longer has. On any listen failure nothing stays
   * open and the current servers are untouched.
   */
  prepare(next: Compiled): Effect.Effect<{ readonly commit: (deadlineMs: number) => Promise<void> }, ConfigError> {
    return Effect.tryPromise({
      try: async () => {
        const opened: Array<OpenServer> = []
        const replaced: Array<OpenServer> = []
        try {
          for (const bind of next.binds.values()) {
            const existing = this.servers.get(bind.ir.port)
            const mtls = mtlsMode(bind)
            if (existing !== undefined && existing.protocol === bind.ir.protocol && existing.mtls === mtls) {
              if (bind.ir.protocol === "HTTPS") {
                const first = bind.all.find((l) => l.tls !== undefined)?.tls
                if (first !== undefined) (existing.server as https.Server).setSecureContext(first.options)
              }
              continue
            }
            if (existing !== undefined) {
              // The port changes protocol: the old server must release it first.
              await existing.close(0)
              this.servers.delete(bind.ir.port)
              replaced.push(existing)
            }
            opened.push(await this.open(bind, next.ir.settings))
          }
        } catch (cause) {
          await Promise.all(opened.map((s) => s.close(0)))
          throw cause
        }
        return {
          commit: async (deadlineMs: number) => {
            for (const s of opened) this.servers.set(s.port, s)
            const closing: Array<Promise<void>> = []
            for (const [port, s] of this.servers) {
              if (!next.binds.has(port)) {
                this.servers.delete(port)
                closing.push(s.close(deadlineMs))
              }
            }
            await Promise.all(closing)
          }
        }
      },
      catch: (cause) =>
        new ConfigError({
          issues: [{ path: "", message: `cannot listen: ${cause instanceof Error ? cause.message : String(cause)}` }]
        })
    })
  }

  /** Stops accepting on every port and waits for in-flight requests, up to the deadline. */
  closeAll(deadlineMs: number): Promise<void> {
    const all = [...this.servers.values()]
    this.servers.clear()
    return Promise.all(all.map((s) => s.close(deadlineMs))).then(() => undefined)
  }
}
