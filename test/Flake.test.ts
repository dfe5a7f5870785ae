/**
 * flake.nix cannot be built offline here, but it must at least parse. `.ci/run` installs
 * Debian's nix-bin for this; locally: `apt-get install nix-bin`.
 */
import { spawnSync } from "node:child_process"
import * as path from "node:path"
import { describe, expect, it } from "vitest"

describe("flake.nix", () => {
  it("parses (nix-instantiate --parse)", () => {
    const res = spawnSync("nix-instantiate", ["--parse", path.resolve(import.meta.dirname, "../flake.nix")], { encoding: "utf8" })
    expect(res.error, "nix-instantiate is missing: apt-get install nix-bin (.ci/run does)").toBeUndefined()
    // Debian's nix warns about its build-users group on stderr; only the exit status and the
    // absence of a parse error matter.
    expect(res.stderr).not.toMatch(/error/i)
    expect(res.status).toBe(0)
  })
})
