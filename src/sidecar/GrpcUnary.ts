/**
 * Unary gRPC calls to a policy side-service (ext authz `Authorization/Check`, rate limit
 * `RateLimitService/ShouldRateLimit`): the one place that knows `@grpc/grpc-js`. Messages are
 * encoded and decoded by the caller (bytes in, bytes out), so this file has no protos.
 *
 * ```ts
 * // in a policy's make (once per snapshot):
 * const client = yield* GrpcUnary.connect(config, env, path)        // {host} | {backend}, policies
 * // per request:
 * const bytes = yield* client.unary(METHOD, encode(msg), { timeoutMs: MY_TIMEOUT_MS })
 * //   fails with GrpcUnary.GrpcError { code, details } (code: GrpcUnary.Status.*)
 * ```
 *
 * - Target: `{host: "h:p"}` or `{backend: name}` resolved by `BuildEnv.resolveBackend` (a named
 *   backend brings its own policies; the reference's `policies` win). `backendTLS` of the
 *   merged policies turns the channel into TLS with exactly the verification a route's backend
 *   gets (`BackendTls.load`: roots, client certificate, hostname / SAN checks, `insecure*`);
 *   ALPN is `h2` whatever `backendTLS.alpn` says, gRPC needs it. `requestHeaderModifier`
 *   `add`/`set` become call metadata (`remove` has nothing to act on). Other side-service
 *   policies are a ConfigError.
 * - Channels: one grpc-js `Client` per (target, TLS settings), shared by every policy that
 *   names it and reference-counted by the snapshots' Scopes, so a reload that keeps the target
 *   keeps the connection, and the last snapshot to drop it closes it.
 * - grpc-js is imported on the first `connect` (it is large); a config without side-services
 *   never loads it.
 * - Every call has a deadline (`timeoutMs`, chosen and named by the caller), and interrupting
 *   the calling fiber cancels the call. Payload bytes never appear in errors.
 *
 * @since 0.1.0
 */
import type * as Grpc from "@grpc/grpc-js"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { UpstreamTls } from "../backends/Pools.ts"
import { ConfigError } from "../config/ConfigError.ts"
import type { BackendSpec, BuildEnv } from "../pipeline/Policy.ts"
import * as BackendTls from "../policies/BackendTls.ts"
import * as HeaderModifier from "../policies/HeaderModifier.ts"

/** Largest response message accepted from a side-service (grpc-js's default, made explicit). */
export const MAX_RESPONSE_BYTES = 4 * 1024 * 1024

/**
 * Longest wait between reconnect attempts to a side-service that is down (grpc-js defaults to
 * 120 s, which would keep failing calls long after the service is back).
 */
export const MAX_RECONNECT_BACKOFF_MS = 5_000

/** gRPC status codes a caller may want to tell apart. */
export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14
} as const

/** A call that did not produce a response message: the gRPC status and its short details. */
export class GrpcError extends Data.TaggedError("GrpcError")<{
  readonly code: number
  readonly details: string
}> {}

export interface CallOptions {
  /** Deadline of the call, connection included. */
  readonly timeoutMs: number
  /** W3C trace context of the caller's span, sent as `traceparent` metadata (traced requests only). */
  readonly traceparent?: string | undefined
}

export interface Client {
  /** The side-service as logged (`host:port` or `/<backend name>`). */
  readonly name: string
  /** One unary call: `method` is the full path, `/package.Service/Method`. */
  readonly unary: (method: string, request: Uint8Array, options: CallOptions) => Effect.Effect<Uint8Array, GrpcError>
}

let grpcModule: Promise<typeof Grpc> | undefined
const loadGrpc = (): Promise<typeof Grpc> => (grpcModule ??= import("@grpc/grpc-js"))

interface Channel {
  readonly client: Grpc.Client
  refs: number
}

/** Open channels by target + TLS key, shared across policies and snapshots. */
const channels = new Map<string, Channel>()

const identity = (b: Buffer): Buffer => b

const issue = (path: string, message: string) => new ConfigError({ issues: [{ path, message }] })

const present = <A>(value: A | null | undefined): value is A => value !== undefined && value !== null

/** Side-service policies that make sense on a gRPC channel; the rest are refused at load. */
const GRPC_POLICIES: ReadonlySet<string> = new Set(["backendTLS", "requestHeaderModifier"])

const metadataPairs = (config: HeaderModifier.Config | null | undefined): ReadonlyArray<readonly [string, string, "add" | "set"]> => {
  if (!present(config)) return []
  const out: Array<readonly [string, string, "add" | "set"]> = []
  for (const [k, v] of Object.entries(config.set ?? {})) out.push([k.toLowerCase(), v, "set"])
  for (const [k, v] of Object.entries(config.add ?? {})) out.push([k.toLowerCase(), v, "add"])
  return out
}

/**
 * A client for the side-service `spec` names, built once per snapshot inside its Scope (the
 * channel is released when the Scope closes). Fails with a ConfigError at `path` when the
 * target does not resolve, its TLS files are bad, or it carries a policy gRPC cannot honour.
 */
export const connect = (spec: BackendSpec, env: BuildEnv, path: string): Effect.Effect<Client, ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const resolved = yield* env.resolveBackend(spec, path)
    const policies = resolved.policies
    for (const [key, value] of Object.entries(policies)) {
      if (present(value) && !GRPC_POLICIES.has(key)) {
        return yield* Effect.fail(issue(`${path}.policies.${key}`, `policy ${key} is not supported on a gRPC side-service by effect-agentgateway`))
      }
    }
    const tlsConfig = policies.backendTLS
    const tls = present(tlsConfig) ? yield* BackendTls.load(tlsConfig, resolved.target, `${path}.policies.backendTLS`) : undefined
    const grpc = yield* Effect.promise(loadGrpc)

    const { host, port } = resolved.target
    const address = `${host.includes(":") ? `[${host}]` : host}:${port}`
    const key = `${address}|${tls?.key ?? "plaintext"}`
    const acquire = Effect.sync(() => {
      let channel = channels.get(key)
      if (channel === undefined) {
        const credentials = tls === undefined ? grpc.credentials.createInsecure() : tlsCredentials(grpc, tls)
        const options: Grpc.ChannelOptions = {
          "grpc.max_receive_message_length": MAX_RESPONSE_BYTES,
          "grpc.max_reconnect_backoff_ms": MAX_RECONNECT_BACKOFF_MS,
          // SNI and the verified name follow backendTLS (`hostname`, else the target's DNS name).
          ...(tls?.connect.servername === undefined ? {} : { "grpc.ssl_target_name_override": tls.connect.servername })
        }
        channel = { client: new grpc.Client(address, credentials, options), refs: 0 }
        channels.set(key, channel)
      }
      channel.refs++
      return channel
    })
    const release = (channel: Channel) =>
      Effect.sync(() => {
        if (--channel.refs > 0) return
        channels.delete(key)
        channel.client.close()
      })
    const channel = yield* Effect.acquireRelease(acquire, release)

    const pairs = metadataPairs(policies.requestHeaderModifier)
    const metadata = (traceparent: string | undefined): Grpc.Metadata => {
      const m = new grpc.Metadata()
      for (const [k, v, mode] of pairs) {
        if (mode === "set") m.set(k, v)
        else m.add(k, v)
      }
      if (traceparent !== undefined) m.set("traceparent", traceparent)
      return m
    }

    const unary = (method: string, request: Uint8Array, options: CallOptions): Effect.Effect<Uint8Array, GrpcError> =>
      Effect.callback<Uint8Array, GrpcError>((resume) => {
        const call = channel.client.makeUnaryRequest<Buffer, Buffer>(
          method,
          identity,
          identity,
          Buffer.from(request.buffer, request.byteOffset, request.byteLength),
          metadata(options.traceparent),
          { deadline: Date.now() + options.timeoutMs },
          (error, response) => {
            if (error !== null) resume(Effect.fail(new GrpcError({ code: error.code, details: error.details })))
            else if (response === undefined) resume(Effect.fail(new GrpcError({ code: Status.INTERNAL, details: "empty response" })))
            else resume(Effect.succeed(response))
          }
        )
        return Effect.sync(() => call.cancel())
      })

    const client: Client = { name: resolved.name, unary }
    return client
  })

/** The backend's TLS settings as grpc-js credentials: same secure context, same identity check. */
const tlsCredentials = (grpc: typeof Grpc, tls: UpstreamTls): Grpc.ChannelCredentials => {
  const { secureContext, checkServerIdentity, rejectUnauthorized } = tls.connect
  const verify: Grpc.VerifyOptions = {
    ...(checkServerIdentity === undefined ? {} : { checkServerIdentity }),
    ...(rejectUnauthorized === undefined ? {} : { rejectUnauthorized })
  }
  return secureContext === undefined
    ? grpc.credentials.createSsl(null, null, null, verify)
    : grpc.credentials.createFromSecureContext(secureContext, verify)
}
