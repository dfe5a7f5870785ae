/**
 * The runtime the project is pinned to: Node 24 through the `node` devDependency (npm scripts
 * put it first on PATH), Effect 4 at one exact version. A run on any other Node fails here.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"

const pkg = JSON.parse(fs.readFileSync(path.resolve(import.meta.dirname, "../package.json"), "utf8")) as {
  readonly dependencies: Record<string, string>
  readonly devDependencies: Record<string, string>
}

describe("runtime pins", () => {
  it("runs on Node 24 (use npm scripts: `npm test`)", () => {
    expect(process.versions.node.split(".")[0]).toBe("24")
  })

  it("pins exact versions of Node and Effect", () => {
    expect(pkg.devDependencies["node"]).toMatch(/^24\.\d+\.\d+$/)
    expect(pkg.dependencies["effect"]).toMatch(/^4\.1\.\d+$/)
    expect(pkg.dependencies["@effect/platform-node"]).toMatch(/^4\.1\.\d+$/)
    expect(pkg.devDependencies["@effect/vitest"]).toMatch(/^4\.0\.\d+$/)
  })
})
