/**
 * `directResponse`: answers with a status, headers and body without calling a backend.
 * Response policies selected before it (header modifiers, transformations, CORS headers)
 * still apply.
 *
 * - `body` is literal (a string, or a list of byte values, as upstream's `Bytes`);
 *   `bodyExpression` is CEL evaluated on the request: a string or bytes is the body as is, any
 *   other value its JSON text (upstream `value_as_byte_or_json`). An expression that errors, or
 *   gives `null`, answers an empty body. The two are exclusive.
 * - `headers` maps a header name to a CEL expression; a value that errors, or is not a string
 *   or bytes, or is not a valid field value, omits that header (HeaderExpressions.ts).
 * - `{conditional: [...]}` picks the first entry whose condition holds (Conditional.ts); when
 *   none does and there is no fallback, the request goes on to the backend — the shape of the
 *   fault-injection example (`condition: random() < 0.1`, status 503).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as Cel from "../cel/Cel.ts"
import * as CelContext from "../cel/Context.ts"
import * as Functions from "../cel/Functions.ts"
import type { ConfigError } from "../config/ConfigError.ts"
import { opt } from "../config/Fields.ts"
import type { BuildEnv, Middleware } from "../pipeline/Policy.ts"
import * as Policy from "../pipeline/Policy.ts"
import { ProxyResponse } from "../pipeline/ProxyResponse.ts"
import { currentRequest, type ProxyRequest } from "../pipeline/RequestContext.ts"
import * as Headers from "../shared/headers.ts"
import * as Conditional from "./Conditional.ts"
import * as HeaderExpressions from "./HeaderExpressions.ts"

const Status = Schema.Int.check(Schema.isBetween({ minimum: 100, maximum: 999 }))

/** Upstream `Bytes`: a string, or the bytes as a list of integers. */
const Bytes = Schema.Union([
  Schema.String,
  Schema.Array(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 255 })))
]).annotate({ description: "A string, or a list of byte values (0-255)." })

const fields = {
  body: opt(Bytes, "Literal response body."),
  bodyExpression: opt(Schema.String, "CEL expression computing the body: strings and bytes as is, other values as JSON. Exclusive with `body`."),
  headers: opt(
    HeaderExpressions.expressionMap(HeaderExpressions.checkHeaderName),
    "Response headers: name → CEL expression. A value that errors or is not a string/bytes omits the header."
  )
}

interface Shape {
  readonly status?: number | null | undefined
  readonly body?: string | ReadonlyArray<number> | null | undefined
  readonly bodyExpression?: string | null | undefined
}

const present = (v: unknown): boolean => v !== undefined && v !== null

const bodyExclusive = Schema.makeFilter((c: Shape) =>
  !(present(c.body) && present(c.bodyExpression)) || { path: ["bodyExpression"], issue: "body and bodyExpression are exclusive" }
)

/** One entry of the conditional form. */
export const Entry = Schema.Struct({
  condition: Conditional.condition,
  status: Status.annotateKey({ description: "Response status code." }),
  ...fields
}).check(bodyExclusive).annotate({ description: "A direct response applied when its condition holds." })
export type Entry = typeof Entry.Type

export const Config = Schema.Struct({
  status: Schema.optionalKey(Status).annotateKey({ description: "Response status code (required unless `conditional`)." }),
  ...fields,
  conditional: opt(Conditional.entries(Entry), "Conditional direct responses: the first entry whose condition holds answers; none: the request goes on.")
}).check(
  bodyExclusive,
  Schema.makeFilter((c: Shape & { readonly conditional?: unknown }) => {
    if (!present(c.conditional)) return present(c.status) || { path: ["status"], issue: "missing required field \"status\"" }
    const other = (["status", "body", "bodyExpression", "headers"] as const).find((k) => k in c)
    return other === undefined || { path: [other], issue: "conditional cannot be combined with other fields" }
  })
).annotate({ description: "A response returned without calling a backend." })
export type Config = typeof Config.Type

interface Plain {
  readonly status?: number | undefined
  readonly body?: string | ReadonlyArray<number> | null | undefined
  readonly bodyExpression?: string | null | undefined
  readonly headers?: { readonly [name: string]: string } | null | undefined
}

/** `path.key`, or `path["key"]` for a key that is not an identifier. */
export const keyPath = (path: string, key: string): string =>
  /^[A-Za-z_][A-Za-z0-9_-]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`

/** The body bytes of a CEL result: strings and bytes as is, `null` empty, anything else JSON. */
export const bodyBytes = (value: unknown): Uint8Array => {
  if (value instanceof Uint8Array) return value
  if (typeof value === "string") return Buffer.from(value, "utf8")
  if (value === null) return EMPTY
  return Buffer.from(Functions.toJsonString(value), "utf8")
}

const EMPTY = new Uint8Array(0)

const compileHeaders = (headers: Plain["headers"], path: string) =>
  Effect.forEach(Object.entries(headers ?? {}), ([name, source]) =>
    Effect.map(Cel.compile(source, keyPath(`${path}.headers`, name)), (program) => [name.toLowerCase(), program] as const))

const makePlain = (config: Plain, env: BuildEnv, path: string): Effect.Effect<Middleware, ConfigError> =>
  Effect.gen(function*() {
    const status = config.status ?? 200
    const literal = config.body === undefined || config.body === null
      ? undefined
      : typeof config.body === "string"
      ? Buffer.from(config.body)
      : Uint8Array.from(config.body)
    const bodyExpression = config.bodyExpression === undefined || config.bodyExpression === null
      ? undefined
      : yield* Cel.compile(config.bodyExpression, `${path}.bodyExpression`)
    const headers = yield* compileHeaders(config.headers, path)
    const programs = [bodyExpression, ...headers.map(([, p]) => p)]
    const readBody = CelContext.needsBody(programs) ? CelContext.bodyReader(programs, env.maxBufferSize) : undefined
    const dynamic = bodyExpression !== undefined || headers.length > 0

    const respond = (ctx: ProxyRequest): ProxyResponse => {
      ctx.directResponse = true
      const out = Headers.empty()
      let body: Uint8Array | undefined = literal
      if (dynamic) {
        const activation = CelContext.forRequest(ctx)
        for (const [name, program] of headers) {
          const r = program.eval(activation)
          const value = Result.isSuccess(r) ? HeaderExpressions.text(r.success) : undefined
          if (value !== undefined) out[name] = value
        }
        if (bodyExpression !== undefined) {
          const r = bodyExpression.eval(activation)
          body = Result.isSuccess(r) ? bodyBytes(r.success) : EMPTY
        }
      }
      if (body !== undefined) out["content-length"] = String(body.length)
      return new ProxyResponse(status, out, body)
    }
    return () =>
      Effect.flatMap(currentRequest, (ctx) =>
        readBody !== undefined && ctx.body._tag === "Stream"
          ? Effect.map(readBody(ctx), () => respond(ctx))
          : Effect.succeed(respond(ctx)))
  })

export const policy = Policy.define({
  key: "directResponse",
  make: Conditional.plainOrConditional(makePlain)
})
