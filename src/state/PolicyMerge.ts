/**
 * How policy blocks from several attachment points combine into the one block a route, a
 * backend reference or a listener runs (agentgateway's `store/binds.rs`):
 * - route and gateway-targeted route-phase policies: the most specific attachment replaces;
 * - backend and gateway-phase policies: the first found (most specific) wins;
 * - authorization rule sets always accumulate, whichever way the rest merges, so a deny at
 *   any level denies. Their rules are concatenated: evaluating one list holding every rule is
 *   the same as evaluating the sets together (any deny, any failed require, any allow, else
 *   "allowed unless some allow rule exists").
 *
 * @since 0.1.0
 */

/** Policy keys whose values accumulate instead of replacing each other. */
export const ACCUMULATING: ReadonlySet<string> = new Set(["authorization", "mcpAuthorization"])

const isRuleSet = (value: unknown): value is { readonly rules: ReadonlyArray<unknown> } =>
  typeof value === "object" && value !== null && "rules" in value && Array.isArray(value.rules)

const accumulate = (earlier: unknown, later: unknown): unknown =>
  isRuleSet(earlier) && isRuleSet(later) ? { ...later, rules: [...earlier.rules, ...later.rules] } : later

/** Blocks ordered from least to most specific; later ones replace earlier ones per key. */
export const mostSpecificReplaces = <T extends object>(...blocks: ReadonlyArray<Partial<T>>): T => {
  const out: Record<string, unknown> = {}
  for (const block of blocks) {
    for (const [key, value] of Object.entries(block)) {
      if (value === undefined || value === null) continue
      out[key] = ACCUMULATING.has(key) && key in out ? accumulate(out[key], value) : value
    }
  }
  return out as T
}

/** Blocks ordered from most to least specific; the first one found wins per key. */
export const firstFoundWins = <T extends object>(...blocks: ReadonlyArray<Partial<T>>): T =>
  mostSpecificReplaces<T>(...[...blocks].reverse())
