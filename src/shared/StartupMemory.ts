/**
 * Start-up (module loading, schema construction, config decoding) grows V8's young generation
 * to its maximum, and an idle process never gives that back. One memory-reducing collection once
 * the first config serves returns it (about 18 MiB of resident memory; `npm run bench:http`
 * reports idle RSS). Under load the young generation grows again as it should.
 *
 * @since 0.1.0
 */
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"

export const releaseStartupMemory = (): void => {
  setFlagsFromString("--expose-gc")
  const gc: unknown = runInNewContext("gc")
  if (typeof gc === "function") gc({ type: "major", execution: "sync", flavor: "last-resort" })
}
