/**
 * undici's `Pool` imported from its own module: the package entry loads fetch, WebSocket,
 * caching and more (~13 MB of resident memory) that the gateway never uses.
 */
declare module "undici/lib/dispatcher/pool.js" {
  import type { Pool } from "undici"
  const PoolClass: typeof Pool
  export default PoolClass
}
