/**
 * `directResponse`: answers with a fixed status and body, without calling a backend. Response
 * policies selected before it (header modifiers, CORS headers) still apply.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { unsupported } from "../config/Fields.ts"
import * as Policy from "../pipeline/Policy.ts"
import { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import { currentRequest } from "../pipeline/RequestContext.ts"
import * as Headers from "../shared/headers.ts"

export const Config = Schema.Struct({
  status: Schema.optionalKey(
    Schema.Int.check(Schema.isBetween({ minimum: 100, maximum: 999 })).annotate({ description: "Response status code (required)." })
  ),
  body: Schema.optionalKey(Schema.NullOr(Schema.String).annotate({ description: "Literal response body." })),
  bodyExpression: unsupported("directResponse.bodyExpression (CEL)"),
  headers: unsupported("directResponse.headers (CEL)"),
  conditional: unsupported("conditional directResponse (CEL)")
}).check(
  Schema.makeFilter((c: { readonly status?: number; readonly conditional?: unknown }) =>
    c.status !== undefined || c.conditional !== undefined || { path: ["status"], issue: "missing required field \"status\"" }
  )
).annotate({ description: "A fixed response returned without calling a backend." })
export type Config = typeof Config.Type

export const policy = Policy.define({
  key: "directResponse",
  make: (config) =>
    Effect.sync(() => {
      const status = config.status ?? 200
      const body = config.body === undefined || config.body === null ? undefined : Buffer.from(config.body)
      return () =>
        Effect.map(currentRequest, (ctx) => {
          ctx.directResponse = true
          const headers = Headers.empty()
          if (body !== undefined) headers["content-length"] = String(body.length)
          return new ProxyResponse(status, headers, body)
        })
    })
})
