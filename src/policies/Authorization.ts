/**
 * `authorization`: CEL rules that allow or deny a request (agentgateway's
 * `http/authorization.rs`), 403 `authorization failed`. A rule is a bare expression (an allow
 * rule) or `{allow}`, `{deny}` or `{require}`. The decision, in upstream's order:
 * 1. no rules: allow;
 * 2. any deny rule true: deny;
 * 3. any require rule not true: deny;
 * 4. any allow rule true: allow;
 * 5. otherwise allow only if there is no allow rule (a deny-list passes what it does not name).
 *
 * Errors, where this gateway is stricter than upstream: a deny rule whose expression errors (a
 * missing header, `jwt` before a JWT policy ran) or gives a non-boolean DENIES; upstream counts
 * it as false, so a typo or an absent claim silently lets the request through (its own schema
 * warns about it). A require rule that errors is not satisfied and denies, as upstream; an
 * allow rule that errors does not allow, as upstream.
 *
 * The same policy runs in the gateway phase (listener / gateway policies), the route phase and
 * the backend phase, each on its own merged rule set: rule sets from several attachment points
 * of one phase are concatenated by `state/PolicyMerge.ts`, which decides the same as evaluating
 * the sets together (a deny anywhere denies, every require must hold, allows are OR'ed).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Cel from "../cel/Cel.ts"
import * as CelContext from "../cel/Context.ts"
import type { ConfigError } from "../config/ConfigError.ts"
import { exactlyOneOf, opt, req } from "../config/Fields.ts"
import * as Policy from "../pipeline/Policy.ts"
import * as ProxyError from "../pipeline/ProxyError.ts"
import { currentRequest } from "../pipeline/RequestContext.ts"

const Expression = Schema.String

export const Rule = Schema.Union([
  Expression.annotate({ description: "An allow rule: the request is allowed when this CEL expression is true." }),
  Schema.Struct({
    allow: opt(Expression, "Allow the request when this CEL expression is true."),
    deny: opt(
      Expression,
      "Deny the request when this CEL expression is true. An expression that errors also denies here (upstream: does not)."
    ),
    require: opt(Expression, "Deny the request unless this CEL expression is true (an error is not true).")
  }).check(exactlyOneOf(["allow", "deny", "require"]))
]).annotate({ description: "An authorization rule: a CEL expression (allow), or one of `allow`, `deny`, `require`." })
export type Rule = typeof Rule.Type

export const Config = Schema.Struct({
  rules: req(
    Schema.Array(Rule),
    "CEL rules: any true deny or false require denies; else any true allow allows; with no allow rule, the request is allowed."
  )
}).annotate({ description: "CEL authorization rules; a denied request gets 403 `authorization failed`." })
export type Config = typeof Config.Type

type Kind = "allow" | "deny" | "require"

const kindOf = (rule: Rule): { readonly kind: Kind; readonly source: string; readonly field: string } => {
  if (typeof rule === "string") return { kind: "allow", source: rule, field: "" }
  if (typeof rule.deny === "string") return { kind: "deny", source: rule.deny, field: ".deny" }
  if (typeof rule.require === "string") return { kind: "require", source: rule.require, field: ".require" }
  return { kind: "allow", source: rule.allow ?? "", field: ".allow" }
}

/** The compiled rule set, split by kind so a decision walks plain arrays. */
export interface RuleSet {
  readonly allow: ReadonlyArray<Cel.Program>
  readonly deny: ReadonlyArray<Cel.Program>
  readonly require: ReadonlyArray<Cel.Program>
}

/** Compiles every rule once; a bad expression is a ConfigError at `path.rules[i]`. */
export const compile = (config: Config, path: string): Effect.Effect<RuleSet, ConfigError> =>
  Effect.gen(function*() {
    const out = { allow: new Array<Cel.Program>(), deny: new Array<Cel.Program>(), require: new Array<Cel.Program>() }
    for (let i = 0; i < config.rules.length; i++) {
      const { kind, source, field } = kindOf(config.rules[i]!)
      out[kind].push(yield* Cel.compileBool(source, `${path}.rules[${i}]${field}`))
    }
    return out
  })

/** Whether `rules` let the request of `activation` through. */
export const allows = (rules: RuleSet, activation: object): boolean => {
  // Fail closed: an erroring deny rule denies (see the module comment).
  for (const rule of rules.deny) if (rule.evalBoolOr(activation, true)) return false
  for (const rule of rules.require) if (!rule.evalBool(activation)) return false
  if (rules.allow.length === 0) return true
  for (const rule of rules.allow) if (rule.evalBool(activation)) return true
  return false
}

export const policy = Policy.define({
  key: "authorization",
  make: (config, env, path) =>
    Effect.gen(function*() {
      const rules = yield* compile(config, path)
      const all = [...rules.deny, ...rules.require, ...rules.allow]
      if (all.length === 0) return (next) => next
      const denied = Effect.fail(ProxyError.make({ _tag: "AuthorizationFailed" }))
      const check = (next: Policy.Handler) =>
        Effect.flatMap(currentRequest, (ctx) => (allows(rules, CelContext.forRequest(ctx)) ? next : denied))
      if (!CelContext.needsBody(all)) return check
      // Buffered only because a rule reads `request.body`; over the limit it stays absent.
      const readBody = CelContext.bodyReader(all, env.maxBufferSize)
      return (next) => {
        const checked = check(next)
        return Effect.flatMap(currentRequest, (ctx) => Effect.andThen(readBody(ctx), checked))
      }
    })
})
