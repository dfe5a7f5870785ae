/**
 * The conditional form shared by every policy upstream allows it on (`directResponse`,
 * `transformations`, `localRateLimit`; later `extAuthz`, `extProc`, `remoteRateLimit`):
 *
 * ```yaml
 * conditional:
 * - condition: 'request.headers["x-env"] == "canary"'   # CEL, evaluated on the request
 *   ...fields of the policy
 * - ...fields of the policy                             # no condition: the fallback, last
 * ```
 *
 * The first entry whose condition is `true` is the policy for that request; an entry without a
 * condition always matches, so it may only be the last one. No match means the policy does not
 * apply. A condition that errors counts as false (upstream `RequestPolicy::select`). Conditions
 * are evaluated once, on the request side: a branch's response-side work (a transformation of
 * the response) follows the branch chosen for the request.
 *
 * Every branch is built in `make` and bound to `next` once, when the pipeline is composed, so
 * the request path only evaluates conditions and picks a prebuilt handler.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Cel from "../cel/Cel.ts"
import * as CelContext from "../cel/Context.ts"
import type { ConfigError } from "../config/ConfigError.ts"
import { opt } from "../config/Fields.ts"
import type { BuildEnv, Handler, Middleware } from "../pipeline/Policy.ts"
import { currentRequest } from "../pipeline/RequestContext.ts"

/** The `condition` field every conditional entry carries. */
export const condition = opt(
  Schema.String,
  "CEL expression on the request; this entry applies when it is true. Omitted: the fallback, which must be the last entry."
)

interface Conditioned {
  readonly condition?: string | null | undefined
}

/** An entry without a condition matches everything, so anything after it could never apply. */
const fallbackLast = Schema.makeFilter((entries: ReadonlyArray<Conditioned>) => {
  const last = entries.length - 1
  for (let i = 0; i < last; i++) {
    const c = entries[i]!.condition
    if (c === undefined || c === null) {
      return { path: [i, "condition"], issue: "missing condition: only the last entry may omit it (it is the fallback)" }
    }
  }
  return undefined
})

/** `conditional: [entry, …]` of a policy, checked so that only the last entry may be a fallback. */
export const entries = <S extends Schema.Top & { readonly Type: Conditioned }>(entry: S) =>
  Schema.Array(entry).check(fallbackLast)

/** `{conditional: [...]}` as its own struct (for policies whose plain form is not an object). */
export const Config = <S extends Schema.Top & { readonly Type: Conditioned }>(entry: S, description: string) =>
  Schema.Struct({
    conditional: entries(entry).annotateKey({
      description: "Conditional entries; the first whose condition is true applies. An entry without a condition is the fallback and must be last."
    })
  }).annotate({ description })

interface Branch {
  readonly condition: Cel.Program | undefined
  readonly middleware: Middleware
}

/**
 * Builds the middleware of a conditional policy: `build` makes the plain policy of each entry
 * (its path is `<path>.conditional[i]`), conditions are compiled here, and a bad expression is
 * a ConfigError at `<path>.conditional[i].condition`.
 */
export const make = <E extends Conditioned>(
  list: ReadonlyArray<E>,
  env: BuildEnv,
  path: string,
  build: (entry: E, path: string) => Effect.Effect<Middleware, ConfigError, Scope.Scope>
): Effect.Effect<Middleware, ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const branches: Array<Branch> = []
    for (let i = 0; i < list.length; i++) {
      const entry = list[i]!
      const at = `${path}.conditional[${i}]`
      const source = entry.condition
      const program = source === undefined || source === null ? undefined : yield* Cel.compileBool(source, `${at}.condition`)
      branches.push({ condition: program, middleware: yield* build(entry, at) })
    }
    if (branches.length === 0) return (next: Handler) => next
    const conditions = branches.map((b) => b.condition)
    const readBody = CelContext.needsBody(conditions) ? CelContext.bodyReader(conditions, env.maxBufferSize) : undefined
    return (next: Handler): Handler => {
      const handlers = branches.map((b) => b.middleware(next))
      const pick = (activation: object): Handler => {
        for (let i = 0; i < conditions.length; i++) {
          const c = conditions[i]
          if (c === undefined || c.evalBool(activation)) return handlers[i]!
        }
        return next
      }
      return Effect.flatMap(currentRequest, (ctx) =>
        readBody !== undefined && ctx.body._tag === "Stream"
          ? Effect.flatMap(readBody(ctx), () => pick(CelContext.forRequest(ctx)))
          : pick(CelContext.forRequest(ctx)))
    }
  })

/**
 * A policy's `make` when its config is either one plain entry or `{conditional: [...]}` of
 * such entries (directResponse, transformations, extAuthz, remoteRateLimit).
 */
export const plainOrConditional = <P, E extends Conditioned & P>(
  plain: (config: P, env: BuildEnv, path: string) => Effect.Effect<Middleware, ConfigError, Scope.Scope>
) =>
(config: P & { readonly conditional?: ReadonlyArray<E> | null | undefined }, env: BuildEnv, path: string): Effect.Effect<Middleware, ConfigError, Scope.Scope> =>
  config.conditional !== undefined && config.conditional !== null
    ? make(config.conditional, env, path, (entry, at) => plain(entry, env, at))
    : plain(config, env, path)
