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

/** The test CA's directory (test/fixtures/tls): `ca.pem` verifies the fixture's TLS certificate (localhost, 127.0.0.1). */
export const tlsDir = path.resolve(import.meta.dirname, "../../fixtures/tls")

/**
 * Starts FixtureServer.ts on a free loopback port (Streamable HTTP or legacy SSE), named `name`,
 * over TLS with the test CA's server certificate when `tls`; resolves once it listens.
 */
export const startFixture = async (mode: "http" | "sse", name: string, tls = false): Promise<{ port: number; child: ChildProcess }> => {
  const port = await freePort()
  const env = { ...process.env, FIXTURE_NAME: name, ...(tls ? { FIXTURE_TLS_DIR: tlsDir } : {}) }
  const child = spawn(process.execPath, [fixture, mode, String(port)], { env, stdio: ["ignore", "pipe", "inherit"] })
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
