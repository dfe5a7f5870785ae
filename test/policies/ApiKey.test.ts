import { assert, describe, it } from "@effect/vitest"
import bcrypt from "bcryptjs"
import { Effect, Exit, Scope } from "effect"
import { createHash } from "node:crypto"
import * as Cel from "../../src/cel/Cel.ts"
import * as CelContext from "../../src/cel/Context.ts"
import type { ProxyRequest } from "../../src/pipeline/RequestContext.ts"
import * as ApiKey from "../../src/policies/ApiKey.ts"
import { buildEnv, exchange } from "../support/Policies.ts"
import { request, type RequestSpec } from "../support/Requests.ts"

const hex = (s: string) => createHash("sha256").update(s).digest("hex")

interface Outcome {
  readonly status: number
  readonly body: unknown
  readonly forwarded: ProxyRequest | undefined
}

const build = (config: ApiKey.Config) =>
  Effect.map(exchange(ApiKey.policy, config), ({ send }) => (spec: RequestSpec) =>
    Effect.map(send(request(spec)), ({ response, forwarded }): Outcome => ({ status: response.status, body: response.body, forwarded })))

const KEYS: ApiKey.Config["keys"] = [
  { key: "agw_sk_plain", metadata: { name: "Example key", owner: "platform", tier: 3 } },
  { keyHash: `sha256:${hex("agw_sk_hashed").toUpperCase()}`, metadata: { owner: "ml" } },
  { keyHash: bcrypt.hashSync("agw_sk_bcrypt", 4), metadata: { owner: "legacy" } }
]

const bearer = (key: string): RequestSpec => ({ headers: { authorization: `Bearer ${key}` } })
const denied = (detail: string) => ({ status: 401, body: `api key authentication failure: ${detail}` })
const view = (o: Outcome) => ({ status: o.status, body: o.body })

describe("apiKey", () => {
  it.effect("plain, sha256 and bcrypt keys authenticate; metadata in CEL, identity set, credential removed", () =>
    Effect.gen(function*() {
      const send = yield* build({ keys: KEYS, mode: "strict" })
      const plain = yield* send(bearer("agw_sk_plain"))
      assert.deepStrictEqual(view(plain), { status: 200, body: "upstream" })
      assert.isUndefined(plain.forwarded!.headers["authorization"])
      assert.strictEqual(plain.forwarded!.identity, `apiKey:${hex("agw_sk_plain").slice(0, 16)}`)
      const rule = yield* Cel.compileBool('apiKey.owner == "platform" && apiKey.tier == 3 && apiKey.name == "Example key"', "rule")
      assert.isTrue(rule.evalBool(CelContext.forRequest(plain.forwarded!)))
      const hashed = yield* send(bearer("agw_sk_hashed"))
      assert.strictEqual(hashed.forwarded!.identity, `apiKey:${hex("agw_sk_hashed").slice(0, 16)}`)
      // The scheme is matched case-insensitively.
      const lower = yield* send({ headers: { authorization: "bearer agw_sk_hashed" } })
      assert.strictEqual(lower.status, 200)
      for (let i = 0; i < 2; i++) {
        const salted = yield* send(bearer("agw_sk_bcrypt"))
        assert.strictEqual(salted.status, 200)
        const owner = yield* Cel.compileBool('apiKey.owner == "legacy"', "rule")
        assert.isTrue(owner.evalBool(CelContext.forRequest(salted.forwarded!)))
      }
    }))

  it.effect("modes: strict rejects missing and unknown keys, optional only unknown ones, permissive neither", () =>
    Effect.gen(function*() {
      const strict = yield* build({ keys: KEYS, mode: "strict" })
      assert.deepStrictEqual(view(yield* strict({})), denied("no API Key found"))
      assert.deepStrictEqual(view(yield* strict(bearer("agw_sk_plai"))), denied("invalid credentials"))
      assert.deepStrictEqual(view(yield* strict(bearer("agw_sk_plainx"))), denied("invalid credentials"))
      const optional = yield* build({ keys: KEYS })
      assert.deepStrictEqual(view(yield* optional({})), { status: 200, body: "upstream" })
      assert.deepStrictEqual(view(yield* optional(bearer("nope"))), denied("invalid credentials"))
      const permissive = yield* build({ keys: KEYS, mode: "permissive" })
      const passed = yield* permissive(bearer("nope"))
      assert.deepStrictEqual(view(passed), { status: 200, body: "upstream" })
      assert.strictEqual(passed.forwarded!.headers["authorization"], "Bearer nope")
      assert.isUndefined(passed.forwarded!.identity)
    }))

  it.effect("a header location without prefix, and a query parameter", () =>
    Effect.gen(function*() {
      const header = yield* build({ keys: KEYS, mode: "strict", location: { header: { name: "x-api-key" } } })
      const h = yield* header({ headers: { "x-api-key": "agw_sk_plain" } })
      assert.strictEqual(h.status, 200)
      assert.isUndefined(h.forwarded!.headers["x-api-key"])
      assert.deepStrictEqual(view(yield* header(bearer("agw_sk_plain"))), denied("no API Key found"))
      const query = yield* build({ keys: KEYS, mode: "strict", location: { queryParameter: { name: "key" } } })
      const q = yield* query({ query: "?key=agw_sk_plain&x=1" })
      assert.strictEqual(q.status, 200)
      assert.strictEqual(q.forwarded!.query, "?x=1")
    }))

  it.effect("a malformed keyHash is a config error", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const exit = yield* Effect.exit(Scope.provide(ApiKey.policy.make({ keys: [{ keyHash: "md5:abc" }] }, buildEnv(), "policies.apiKey"), scope))
      const issues = Exit.isFailure(exit) && exit.cause.reasons[0]?._tag === "Fail" ? exit.cause.reasons[0].error.issues : []
      assert.deepStrictEqual(issues, [{ path: "policies.apiKey.keys[0].keyHash", message: "keyHash must be `sha256:<64 hex digits>` or a bcrypt hash (`$2a$`, `$2b$`, `$2y$`)" }])
    }))
})
