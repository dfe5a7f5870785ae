/**
 * undici's connector factory from its own module (what `Pool` uses when given connect
 * options), so the pools can time each connection without loading the package entry.
 */
declare module "undici/lib/core/connect.js" {
  import type { buildConnector } from "undici"
  const build: typeof buildConnector
  export default build
}
