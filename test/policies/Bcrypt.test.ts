import bcrypt from "bcryptjs"
import { Effect } from "effect"
import { afterEach, describe, expect, it, vi } from "vitest"
import * as Bcrypt from "../../src/policies/Bcrypt.ts"
import * as BasicAuth from "../../src/policies/BasicAuth.ts"
import { exchange } from "../support/Policies.ts"
import { request } from "../support/Requests.ts"

const HASH = bcrypt.hashSync("right", 4)

afterEach(() => {
  vi.restoreAllMocks()
})

describe("Bcrypt.compare", () => {
  it("answers match/mismatch, and busy without running bcrypt beyond MAX_CONCURRENT + MAX_WAITING", async () => {
    const compare = vi.spyOn(bcrypt, "compare")
    const total = Bcrypt.MAX_CONCURRENT + Bcrypt.MAX_WAITING + 5
    const outcomes = await Effect.runPromise(
      Effect.forEach(Array.from({ length: total }, (_, i) => (i === 0 ? "right" : "wrong")), (secret) => Bcrypt.compare(secret, HASH), {
        concurrency: "unbounded"
      })
    )
    expect(outcomes[0]).toBe("match")
    expect(outcomes.filter((o) => o === "busy")).toHaveLength(5)
    expect(outcomes.filter((o) => o === "mismatch")).toHaveLength(total - 6)
    expect(compare).toHaveBeenCalledTimes(total - 5)
    expect(Bcrypt.inFlight()).toBe(0)
  })
})

describe("basicAuth with bcrypt entries", () => {
  it("remembers a wrong password: repeating it runs no bcrypt check", async () => {
    const compare = vi.spyOn(bcrypt, "compare")
    const statuses = await Effect.runPromise(
      Effect.gen(function*() {
        const { send, close } = yield* exchange(BasicAuth.policy, { htpasswd: `bob:${HASH}`, mode: "strict" })
        const basic = (password: string) => request({ headers: { authorization: `Basic ${Buffer.from(`bob:${password}`).toString("base64")}` } })
        const out: Array<number> = []
        for (const password of ["wrong", "wrong", "wrong", "right"]) out.push((yield* send(basic(password))).response.status)
        yield* close
        return out
      })
    )
    expect(statuses).toEqual([401, 401, 401, 200])
    expect(compare).toHaveBeenCalledTimes(2)
  })
})

describe("basicAuth with an unknown user", () => {
  it("runs a bcrypt check like a known user would (no timing oracle), and remembers the failure", async () => {
    const statuses = await Effect.runPromise(
      Effect.gen(function*() {
        const { send, close } = yield* exchange(BasicAuth.policy, { htpasswd: `bob:${HASH}`, mode: "strict" })
        const compare = vi.spyOn(bcrypt, "compare")
        const basic = (user: string) => request({ headers: { authorization: `Basic ${Buffer.from(`${user}:pw`).toString("base64")}` } })
        const out: Array<number> = []
        for (const user of ["mallory", "mallory"]) out.push((yield* send(basic(user))).response.status)
        expect(compare).toHaveBeenCalledTimes(1)
        yield* close
        return out
      })
    )
    expect(statuses).toEqual([401, 401])
  })
})
