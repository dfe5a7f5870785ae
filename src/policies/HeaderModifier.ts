/**
 * `requestHeaderModifier` / `responseHeaderModifier`: literal header edits. `add` appends,
 * `set` overwrites, then `remove` deletes (Gateway API HTTPHeaderFilter semantics). Names are
 * lower-cased and values checked for CR/LF when the snapshot is built, so the request path
 * only copies precomputed pairs.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Policy from "../pipeline/Policy.ts"
import { checkHeaderName, namedRecord } from "./HeaderExpressions.ts"
import { currentRequest } from "../pipeline/RequestContext.ts"
import * as Headers from "../shared/headers.ts"

const HeaderName = Schema.String.check(Schema.makeFilter((s: string) => checkHeaderName(s) ?? true))
const HeaderValue = Schema.String.check(
  Schema.makeFilter((s: string) => !/[\r\n\0]/.test(s) || "header values may not contain CR, LF or NUL")
)

export const Config = Schema.Struct({
  add: Schema.optionalKey(
    Schema.NullOr(namedRecord(HeaderValue, checkHeaderName)).annotate({ description: "Headers to append (existing values are kept)." })
  ),
  set: Schema.optionalKey(
    Schema.NullOr(namedRecord(HeaderValue, checkHeaderName)).annotate({ description: "Headers to set, replacing existing values." })
  ),
  remove: Schema.optionalKey(
    Schema.NullOr(Schema.Array(HeaderName)).annotate({ description: "Header names to remove." })
  )
}).annotate({ description: "Header edits: add, then set, then remove." })
export type Config = typeof Config.Type

/** A compiled header modifier: pairs lower-cased once. */
export interface Compiled {
  readonly add: ReadonlyArray<readonly [string, string]>
  readonly set: ReadonlyArray<readonly [string, string]>
  readonly remove: ReadonlyArray<string>
}

export const compile = (config: Config): Compiled => ({
  add: Object.entries(config.add ?? {}).map(([k, v]) => [k.toLowerCase(), v] as const),
  set: Object.entries(config.set ?? {}).map(([k, v]) => [k.toLowerCase(), v] as const),
  remove: (config.remove ?? []).map((k) => k.toLowerCase())
})

export const apply = (modifier: Compiled, headers: Headers.HeaderMap): void => {
  for (const [name, value] of modifier.add) Headers.append(headers, name, value)
  for (const [name, value] of modifier.set) headers[name] = value
  for (const name of modifier.remove) delete headers[name]
}

export const request = Policy.define({
  key: "requestHeaderModifier",
  make: (config) =>
    Effect.sync(() => {
      const modifier = compile(config)
      return (next) =>
        Effect.flatMap(currentRequest, (ctx) => {
          apply(modifier, ctx.headers)
          return next
        })
    })
})

export const response = Policy.define({
  key: "responseHeaderModifier",
  make: (config) =>
    Effect.sync(() => {
      const modifier = compile(config)
      return (next) =>
        Effect.map(next, (response) => {
          apply(modifier, response.headers)
          return response
        })
    })
})
