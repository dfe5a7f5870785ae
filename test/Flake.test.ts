/**
 * flake.nix cannot be built offline here (nixpkgs and the tarballs are not reachable), but it
 * must parse, and the URLs its build fetches the npm dependencies from are computed by Nix here
 * from package-lock.json (`lib.lockWithUrls`, evaluated with builtins only). `.ci/run` installs
 * Debian's nix-bin for this; locally: `apt-get install nix-bin`.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { MALLOC_ARENAS } from "../src/shared/MallocArenas.ts"
import { YOUNG_SEMI_SPACE_MIB } from "../src/shared/StartupMemory.ts"

describe("flake.nix", () => {
  it("parses (nix-instantiate --parse)", () => {
    const res = spawnSync("nix-instantiate", ["--parse", path.resolve(import.meta.dirname, "../flake.nix")], { encoding: "utf8" })
    expect(res.error, "nix-instantiate is missing: apt-get install nix-bin (.ci/run does)").toBeUndefined()
    // Debian's nix warns about its build-users group on stderr; only the exit status and the
    // absence of a parse error matter.
    expect(res.stderr).not.toMatch(/error/i)
    expect(res.status).toBe(0)
  })

  const root = path.resolve(import.meta.dirname, "..")

  it("fetches every locked package by its own integrity hash: no closure hash to keep in step with the lock", () => {
    const flake = fs.readFileSync(path.join(root, "flake.nix"), "utf8")
    expect(flake).toContain("npmDeps = pkgs.importNpmLock {")
    expect(flake).toContain("npmConfigHook = pkgs.importNpmLock.npmConfigHook;")
    expect(flake).not.toMatch(/npmDepsHash|fakeHash/)
    // The wrapper starts node with the young-generation and malloc-arena caps the container image sets too.
    expect(flake).toContain(`--set-default MALLOC_ARENA_MAX ${MALLOC_ARENAS} \\`)
    expect(flake).toContain(`--add-flags "--max-semi-space-size=${YOUNG_SEMI_SPACE_MIB} $out/lib/node_modules/effect-agentgateway/dist/main.js"`)
  })

  it("gives every package of package-lock.json the registry URL of its tarball (lib.lockWithUrls)", () => {
    const expr = `((import ${path.join(root, "flake.nix")}).outputs { self = null; nixpkgs = null; }).lib.lockWithUrls ` +
      `(builtins.fromJSON (builtins.readFile ${path.join(root, "package-lock.json")}))`
    const res = spawnSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr", expr], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 })
    expect(res.error, "nix-instantiate is missing: apt-get install nix-bin (.ci/run does)").toBeUndefined()
    expect(res.status, res.stderr).toBe(0)
    type Entry = { version?: string; integrity?: string; resolved?: string; name?: string }
    const lock = JSON.parse(fs.readFileSync(path.join(root, "package-lock.json"), "utf8")) as { packages: Record<string, Entry> }
    const withUrls = JSON.parse(res.stdout) as { packages: Record<string, Entry> }
    // (Nix orders attribute names; the set of packages is what matters.)
    expect(Object.keys(withUrls.packages).sort()).toEqual(Object.keys(lock.packages).sort())
    expect(withUrls.packages[""]).toEqual(lock.packages[""])
    const expected = (key: string, entry: Entry) => {
      const name = entry.name ?? key.slice(key.lastIndexOf("node_modules/") + "node_modules/".length)
      return `https://registry.npmjs.org/${name}/-/${name.replace(/^@[^/]+\//, "")}-${entry.version}.tgz`
    }
    const packages = Object.entries(lock.packages).filter(([key]) => key !== "")
    expect(packages.length).toBeGreaterThan(300)
    for (const [key, entry] of packages) {
      expect(entry.integrity, key).toMatch(/^sha512-/)
      expect(withUrls.packages[key], key).toEqual({ ...entry, resolved: entry.resolved ?? expected(key, entry) })
    }
    // Spot checks of the layout: scoped, nested, unscoped.
    expect(withUrls.packages["node_modules/@effect/platform-node"]?.resolved).toMatch(/^https:\/\/registry\.npmjs\.org\/@effect\/platform-node\/-\/platform-node-[0-9][^/]*\.tgz$/)
    expect(withUrls.packages["node_modules/undici"]?.resolved).toMatch(/^https:\/\/registry\.npmjs\.org\/undici\/-\/undici-[0-9][^/]*\.tgz$/)
  })
})
