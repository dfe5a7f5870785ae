/**
 * Reads a side-service or upstream answer into memory up to a bound: past it the body is
 * destroyed (the connection is not read further) and `tooLarge()` is thrown. The one reader
 * for JWKS, token endpoints, identity-provider metadata and OpenAPI documents and responses.
 *
 * @since 0.1.0
 */

/** The body's bytes; rejects with `tooLarge()` once more than `maxBytes` arrived. */
export const readBytes = async (body: AsyncIterable<unknown> & { destroy(): void }, maxBytes: number, tooLarge: () => Error): Promise<Buffer> => {
  const chunks: Array<Buffer> = []
  let size = 0
  for await (const chunk of body) {
    const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk))
    size += bytes.length
    if (size > maxBytes) {
      body.destroy()
      throw tooLarge()
    }
    chunks.push(bytes)
  }
  return Buffer.concat(chunks)
}

/** `readBytes` as UTF-8 text. */
export const readText = async (body: AsyncIterable<unknown> & { destroy(): void }, maxBytes: number, tooLarge: () => Error): Promise<string> =>
  (await readBytes(body, maxBytes, tooLarge)).toString("utf8")
