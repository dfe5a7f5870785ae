/**
 * Upstream connection pools: one undici `Pool` per upstream origin, connection settings and
 * TLS settings, shared by every snapshot so a config reload keeps warm connections. The pools
 * live in a Layer and are closed when it is released (a module-level Agent would keep the
 * process alive after SIGINT).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as tls from "node:tls"
import type { Pool } from "undici"
import buildConnector from "undici/lib/core/connect.js"
import PoolClass from "undici/lib/dispatcher/pool.js"
import type * as Ir from "../ir/Ir.ts"

export interface PoolSettings {
  readonly connectTimeoutMs: number
  readonly poolIdleTimeoutMs: number
  readonly poolMaxSize: number | undefined
  readonly keepalive: boolean
}

/** TLS to the upstream (from `backendTLS`): undici `connect` options for an https origin. */
export interface UpstreamTls {
  /**
   * Tells TLS settings apart, PEM contents included: pools with equal keys are shared, so the
   * key must change whenever any option in `connect` would.
   */
  readonly key: string
  readonly connect: Pick<tls.ConnectionOptions, "secureContext" | "servername" | "rejectUnauthorized" | "checkServerIdentity">
}

/** Told how long each new upstream connection took to open (`tcp`, or `tls` with the handshake). */
export type ConnectObserver = (transport: "tcp" | "tls", seconds: number) => void

type Connector = ReturnType<typeof buildConnector>

/** The connector, timing each connection it opens (not each request: a pooled request opens none). */
const timed = (connector: Connector, transport: "tcp" | "tls", observer: () => ConnectObserver | undefined): Connector =>
  (options, callback) => {
    const start = performance.now()
    connector(options, (error, socket) => {
      if (error === null) {
        observer()?.(transport, (performance.now() - start) / 1000)
        callback(null, socket)
      } else {
        callback(error, null)
      }
    })
  }

export class UpstreamPools extends Context.Service<UpstreamPools, {
  /** The pool for a target under the given settings, over TLS when given (created on first use). */
  readonly get: (target: Ir.HostTarget, settings: PoolSettings, tls?: UpstreamTls) => Pool
  /** Sets who hears about connection times (`agentgateway_upstream_connect_duration_seconds`). */
  readonly observeConnect: (observer: ConnectObserver) => void
}>()("agw/backends/UpstreamPools") {
  static readonly layer = Layer.effect(
    UpstreamPools,
    Effect.gen(function*() {
      const pools = new Map<string, Pool>()
      let observer: ConnectObserver | undefined
      yield* Effect.addFinalizer(() =>
        Effect.promise(() => Promise.allSettled([...pools.values()].map((p) => p.destroy()))).pipe(Effect.asVoid)
      )
      return UpstreamPools.of({
        get: (target, settings, tls) => {
          const host = target.host.includes(":") ? `[${target.host}]` : target.host
          const origin = `${tls === undefined ? "http" : "https"}://${host}:${target.port}`
          const key = `${origin}|${settings.connectTimeoutMs}|${settings.poolIdleTimeoutMs}|${settings.poolMaxSize ?? ""}|${settings.keepalive}|${tls?.key ?? ""}`
          let pool = pools.get(key)
          if (pool === undefined) {
            // Built here (not by Pool from options) so each connection can be timed; h2 stays off as below.
            const connector = buildConnector({ ...tls?.connect, allowH2: false, timeout: settings.connectTimeoutMs, keepAlive: settings.keepalive })
            const transport = tls === undefined ? "tcp" : "tls"
            pool = new PoolClass(origin, {
              connect: timed(connector, transport, () => observer),
              // undici offers h2 over TLS by default; the gateway speaks HTTP/1.1 to upstreams.
              allowH2: false,
              keepAliveTimeout: settings.poolIdleTimeoutMs,
              keepAliveMaxTimeout: Math.max(settings.poolIdleTimeoutMs, 1000),
              ...(settings.poolMaxSize === undefined ? {} : { connections: settings.poolMaxSize }),
              // Streams (SSE, MCP) may be silent for long; request/response timeouts are policies.
              headersTimeout: 0,
              bodyTimeout: 0
            })
            pools.set(key, pool)
          }
          return pool
        },
        observeConnect: (o) => {
          observer = o
        }
      })
    })
  )
}
