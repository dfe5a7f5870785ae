/**
 * Randomised check of the path normaliser's invariants (seeded, so a failure reproduces), plus
 * a corpus of inputs that once broke a parser somewhere, kept as ordinary cases.
 */
import { describe, expect, it } from "vitest"
import { normalizePath } from "../../src/routing/Path.ts"
import { prng } from "../support/Prng.ts"

const ALPHABET = ["/", "/", "/", ".", ".", "a", "b", "%2e", "%2E", "%2f", "%5c", "%41", "%7e", "%", "%zz", "~", "-", "_", ";", "=", "%20", "\\", "..", "./"]


const CORPUS = [
  "/..",
  "/../",
  "/.",
  "/./",
  "//",
  "///a",
  "/a/..//b",
  "/%2e%2e/%2e%2e/x",
  "/.%2e/.%2e/x",
  "/%2e./x",
  "/a/%2e",
  "/a/.%2E/",
  "/%2525",
  "/a%2Fb/../c",
  "/a;/../b",
  "/~/%7E"
]

const checkInvariants = (input: string) => {
  const out = normalizePath(input)
  if (typeof out !== "string") {
    // Rejections happen only for inputs that carry something ambiguous.
    expect(/%(2f|5c|00)|\\|%(?![0-9a-f]{2})/i.test(input)).toBe(true)
    return
  }
  expect(out.startsWith("/")).toBe(true)
  expect(out).not.toMatch(/\/\//)
  expect(out.split("/")).not.toContain("..")
  expect(out.split("/")).not.toContain(".")
  expect(out).not.toMatch(/%2e|%2f|%5c|%41|%7e/i)
  expect(normalizePath(out)).toBe(out) // idempotent: routing, policies and the upstream agree
}

describe("normalizePath invariants", () => {
  it.each(CORPUS)("corpus %s", (input) => checkInvariants(input))

  it("holds for 20,000 random paths", () => {
    const next = prng(0x5eed)
    for (let i = 0; i < 20_000; i++) {
      let path = "/"
      const length = Math.floor(next() * 12)
      for (let j = 0; j < length; j++) path += ALPHABET[Math.floor(next() * ALPHABET.length)]
      checkInvariants(path)
    }
  })
})
