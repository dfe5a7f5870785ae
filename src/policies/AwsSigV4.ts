/**
 * AWS Signature Version 4 for `backendAuth: {aws}`, on the `aws4` package (which is checked
 * against AWS's published SigV4 test suite). This module decides what is signed; `aws4` does
 * the canonical request and the HMAC chain.
 *
 * - Signed headers: `host`, `content-type` (when present) and every `x-amz-*` header. Other
 *   headers stay unsigned, so a header a proxy or undici adjusts later (`content-length`,
 *   `user-agent`) cannot invalidate the signature; AWS requires only `host` and `x-amz-date`.
 * - The payload hash: the SHA-256 of the whole body, which therefore has to be read (bounded
 *   by `maxBufferSize`, through `RequestBody.read`, so the upstream call sends the same bytes).
 *   S3 alone accepts `x-amz-content-sha256: UNSIGNED-PAYLOAD`: there a body too large to buffer
 *   streams unsigned; any other service answers 413, since a streamed body cannot be hashed
 *   before it is sent.
 * - `x-amz-date`, `x-amz-security-token`, `x-amz-content-sha256` and `authorization` sent by the
 *   client are dropped first: a downstream must not choose the credential scope or time.
 *
 * @since 0.1.0
 */
import { createHash } from "node:crypto"

type Aws4 = typeof import("aws4")

export interface AwsCredentials {
  readonly accessKeyId: string
  readonly secretAccessKey: string
  readonly sessionToken?: string | undefined
}

export interface SignInput {
  readonly method: string
  /** Path and query exactly as they are sent. */
  readonly path: string
  /** Request headers, lower-case names; `host` required. */
  readonly headers: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>
  /** The whole body, or `UNSIGNED-PAYLOAD` (S3 only: the body streams unhashed). */
  readonly payload: Uint8Array | typeof UNSIGNED_PAYLOAD
  /** `YYYYMMDD'T'HHMMSS'Z'`. */
  readonly amzDate: string
  readonly service: string | undefined
  readonly region: string | undefined
  readonly credentials: AwsCredentials
}

export const UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

/** Headers the client may not set on a signed request: the signer owns them. */
export const SIGNER_OWNED: ReadonlyArray<string> = ["authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"]

export const sha256Hex = (bytes: Uint8Array | string): string => createHash("sha256").update(bytes).digest("hex")

/** `2015-08-30T12:36:00.000Z` → `20150830T123600Z`. */
export const amzDate = (millis: number): string => new Date(millis).toISOString().replace(/[:-]|\.\d{3}/g, "")

const isSigned = (name: string) => name === "host" || name === "content-type" || name.startsWith("x-amz-")

/**
 * The headers to add to the request (lower-case): `authorization`, `x-amz-date`, and
 * `x-amz-content-sha256` / `x-amz-security-token` when they apply.
 */
export const sign = (aws4: Aws4, input: SignInput): Record<string, string> => {
  const creds = input.credentials
  const added: Record<string, string> = { "x-amz-date": input.amzDate }
  if (creds.sessionToken !== undefined) added["x-amz-security-token"] = creds.sessionToken
  // S3 requires the payload hash as a header (the only way to say UNSIGNED-PAYLOAD); other
  // services hash the body themselves, and botocore does not send them the header either.
  const s3 = input.service === "s3"
  if (s3) added["x-amz-content-sha256"] = input.payload === UNSIGNED_PAYLOAD ? UNSIGNED_PAYLOAD : sha256Hex(input.payload)
  const signed: Record<string, string> = {}
  for (const [name, value] of Object.entries(input.headers)) {
    if (value === undefined || !isSigned(name) || SIGNER_OWNED.includes(name)) continue
    signed[name] = typeof value === "string" ? value : value.join(",")
  }
  Object.assign(signed, added)
  const signer = new aws4.RequestSigner(
    {
      method: input.method,
      path: input.path,
      headers: signed,
      // Without the header (non-S3), aws4 hashes this body.
      ...(s3 || input.payload === UNSIGNED_PAYLOAD ? {} : { body: Buffer.from(input.payload.buffer, input.payload.byteOffset, input.payload.byteLength) }),
      ...(input.service === undefined ? {} : { service: input.service }),
      ...(input.region === undefined ? {} : { region: input.region }),
      // Headers are ours to set: no default content-type or content-length from aws4.
      doNotModifyHeaders: true
    },
    creds.sessionToken === undefined
      ? { accessKeyId: creds.accessKeyId, secretAccessKey: creds.secretAccessKey }
      : { accessKeyId: creds.accessKeyId, secretAccessKey: creds.secretAccessKey, sessionToken: creds.sessionToken }
  )
  signer.datetime = input.amzDate
  signer.sign()
  const authorization = signer.request.headers?.["Authorization"]
  added["authorization"] = typeof authorization === "string" ? authorization : ""
  return added
}
