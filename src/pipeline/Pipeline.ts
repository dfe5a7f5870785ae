/**
 * Composes built middlewares around a terminal handler in the order `PolicyOrder` fixes.
 *
 * @since 0.1.0
 */
import type { Handler, Middleware, PolicyKey } from "./Policy.ts"

export const compose = (
  order: ReadonlyArray<PolicyKey>,
  middlewares: ReadonlyMap<PolicyKey, Middleware>,
  terminal: Handler
): Handler => {
  let handler = terminal
  for (let i = order.length - 1; i >= 0; i--) {
    const middleware = middlewares.get(order[i]!)
    if (middleware !== undefined) handler = middleware(handler)
  }
  return handler
}
