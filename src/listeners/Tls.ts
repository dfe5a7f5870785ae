/**
 * Listener TLS: PEM files are read when the snapshot is built (an unreadable or invalid file
 * is a config error naming the field), and one secure context per listener is chosen by SNI.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import { readFile } from "node:fs/promises"
import * as tls from "node:tls"
import { ConfigError } from "../config/ConfigError.ts"
import type * as Ir from "../ir/Ir.ts"

export interface ListenerTls {
  readonly context: tls.SecureContext
  readonly options: tls.SecureContextOptions & { readonly requestCert: boolean; readonly ca: Buffer | undefined }
}

/** Reads a PEM file; failure is a config error naming the field `path`. */
export const read = (file: string, path: string): Effect.Effect<Buffer, ConfigError> =>
  Effect.tryPromise({
    try: () => readFile(file),
    catch: (cause) => new ConfigError({ issues: [{ path, message: `cannot read ${file}: ${cause instanceof Error ? cause.message : String(cause)}` }] })
  })

export const load = (files: Ir.TlsFiles, path: string): Effect.Effect<ListenerTls, ConfigError> =>
  Effect.gen(function*() {
    const cert = yield* read(files.cert, `${path}.cert`)
    const key = yield* read(files.key, `${path}.key`)
    const ca = files.root === undefined ? undefined : yield* read(files.root, `${path}.root`)
    const options = {
      cert,
      key,
      ...(ca === undefined ? {} : { ca }),
      ...(files.cipherSuites === undefined ? {} : { ciphers: files.cipherSuites.join(":") }),
      minVersion: files.minVersion ?? "TLSv1.2",
      ...(files.maxVersion === undefined ? {} : { maxVersion: files.maxVersion })
    } satisfies tls.SecureContextOptions
    const context = yield* Effect.try({
      try: () => tls.createSecureContext(options),
      catch: (cause) => new ConfigError({ issues: [{ path, message: `invalid TLS material: ${cause instanceof Error ? cause.message : String(cause)}` }] })
    })
    return { context, options: { ...options, requestCert: ca !== undefined, ca } }
  })
