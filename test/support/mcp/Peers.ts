/**
 * The MCP peers and process checks the MCP end-to-end suites share.
 */
import { createRequire } from "node:module"
import * as path from "node:path"

/** `@modelcontextprotocol/server-everything`'s entry, run as `node <everything> stdio|sse|streamableHttp`. */
export const everything = createRequire(import.meta.url).resolve("@modelcontextprotocol/server-everything/dist/index.js")

/** Our small SDK server (FixtureServer.ts): stdio, Streamable HTTP or SSE. */
export const fixture = path.resolve(import.meta.dirname, "FixtureServer.ts")

/** Whether a process with this pid still exists. */
export const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Polls `check` every 25 ms for up to 5 s; its last answer. */
export const waitFor = async (check: () => boolean): Promise<boolean> => {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 25))
  return check()
}
