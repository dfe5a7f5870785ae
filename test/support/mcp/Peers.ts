/**
 * The MCP peers and process checks the MCP end-to-end suites share.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { createRequire } from "node:module"
import * as path from "node:path"
import { freePort } from "../Harness.ts"

/** `@modelcontextprotocol/server-everything`'s entry, run as `node <everything> stdio|sse|streamableHttp`. */
export const everything = createRequire(import.meta.url).resolve("@modelcontextprotocol/server-everything/dist/index.js")

/** Our small SDK server (FixtureServer.ts): stdio, Streamable HTTP or SSE. */
export const fixture = path.resolve(import.meta.dirname, "FixtureServer.ts")

/** Starts FixtureServer.ts on a free loopback port (Streamable HTTP or legacy SSE), named `name`; resolves once it listens. */
export const startFixture = async (mode: "http" | "sse", name: string): Promise<{ port: number; child: ChildProcess }> => {
  const port = await freePort()
  const child = spawn(process.execPath, [fixture, mode, String(port)], { env: { ...process.env, FIXTURE_NAME: name }, stdio: ["ignore", "pipe", "inherit"] })
  await new Promise<void>((resolve) => child.stdout!.once("data", () => resolve()))
  return { port, child }
}

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
