/**
 * The test side of SigV4: recomputes a received request's signature with aws4 (an independent
 * implementation) from the shared credentials, so a peer can say whether the gateway signed it.
 */
import aws4 from "aws4"
import type * as http from "node:http"

export interface AwsCredentials {
  readonly accessKeyId: string
  readonly secretAccessKey: string
  readonly region: string
  readonly service: string
}

/** What the verifying peer concluded about a request's signature. */
export interface SigV4Check {
  readonly valid: boolean
  readonly signedHeaders: ReadonlyArray<string>
}

/** Recomputes the SigV4 signature from the request as received (method, url, signed headers, body). */
export const verifySigV4 = (req: http.IncomingMessage, body: Buffer, aws: AwsCredentials): SigV4Check => {
  const auth = String(req.headers.authorization ?? "")
  const signedHeaders = (/SignedHeaders=([^,]+)/.exec(auth)?.[1] ?? "").split(";")
  const headers: Record<string, string> = {}
  for (const name of signedHeaders) headers[name] = String(req.headers[name] ?? "")
  const signer = new aws4.RequestSigner(
    { method: req.method ?? "GET", path: req.url ?? "/", headers, body, service: aws.service, region: aws.region, doNotModifyHeaders: true },
    { accessKeyId: aws.accessKeyId, secretAccessKey: aws.secretAccessKey }
  )
  signer.datetime = String(req.headers["x-amz-date"])
  signer.sign()
  return { valid: auth !== "" && signer.request.headers?.["Authorization"] === auth, signedHeaders }
}
