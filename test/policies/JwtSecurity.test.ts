/**
 * security.md §4 rows not covered by JwtAuth.test.ts: keys never come from the token
 * (`jwk`, `jku`, `x5u` header parameters ignored, no fetch), unknown `crit` extensions are
 * rejected, an oversized `kid` is only an unknown key, and an empty `aud` array is not an
 * audience; an `iat` beyond the clock skew in the future is refused. (alg none, RS→HS, ES256 r=s=0, missing/unknown kid, exp/nbf and skew, iss/aud,
 * unknown-kid flood and a dead JWKS server are in JwtAuth.test.ts.)
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { exportJWK, generateKeyPair, SignJWT } from "jose"
import { KeyObject, sign as rawSign } from "node:crypto"
import * as http from "node:http"
import * as JwtAuth from "../../src/policies/JwtAuth.ts"
import { exchange } from "../support/Policies.ts"
import { request } from "../support/Requests.ts"

type SigningKey = Awaited<ReturnType<typeof generateKeyPair>>["privateKey"]

const ISSUER = "https://issuer.example"
const trusted = await generateKeyPair("RS256", { extractable: true })
const attacker = await generateKeyPair("RS256", { extractable: true })
const trustedJwk = { ...(await exportJWK(trusted.publicKey)), kid: "rsa-1" }
const attackerJwk = { ...(await exportJWK(attacker.publicKey)), kid: "rsa-1" }

/** Valid at TestClock time 0 for an hour. */
const claims = { iss: ISSUER, sub: "alice", aud: "api", exp: 3600 }

const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url")

/** A compact RS256 JWS over any header, signed with node:crypto (jose refuses unknown `crit`). */
const compact = (header: object, payload: object, key: SigningKey) => {
  const input = `${b64(header)}.${b64(payload)}`
  return `${input}.${rawSign("sha256", Buffer.from(input), KeyObject.from(key)).toString("base64url")}`
}

const policy = (config: Partial<JwtAuth.Config> = {}) =>
  Effect.map(exchange(JwtAuth.policy, { issuer: ISSUER, jwks: JSON.stringify({ keys: [trustedJwk] }), mode: "strict", ...config }), ({ send }) =>
    (token: string) =>
      Effect.map(send(request({ headers: { authorization: `Bearer ${token}` } })), ({ response }) => ({ status: response.status, body: response.body })))

const rejected = (detail: string) => ({ status: 401, body: `authentication failure: ${detail}` })

/** A server that counts requests: nothing may ever fetch from it. */
const bait = () =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ readonly url: string; readonly hits: () => number; readonly server: http.Server }>((resolve) => {
        let hits = 0
        const server = http.createServer((_req, res) => {
          hits++
          res.writeHead(200, { "content-type": "application/json" })
          res.end(JSON.stringify({ keys: [attackerJwk] }))
        })
        server.listen(0, "127.0.0.1", () => {
          const a = server.address()
          resolve({ url: `http://127.0.0.1:${typeof a === "object" && a !== null ? a.port : 0}/jwks`, hits: () => hits, server })
        })
      })
    ),
    ({ server }) => Effect.promise(() => new Promise<void>((r) => server.close(() => r())))
  )

describe("jwtAuth: keys come from the config only", () => {
  it.effect("an embedded `jwk` with the trusted kid does not verify the attacker's signature", () =>
    Effect.gen(function*() {
      const check = yield* policy()
      const token = yield* Effect.promise(() =>
        new SignJWT(claims).setProtectedHeader({ alg: "RS256", kid: "rsa-1", jwk: attackerJwk }).sign(attacker.privateKey)
      )
      assert.deepStrictEqual(yield* check(token), rejected("the token is invalid: signature verification failed"))
    }))

  it.live("`jku` and `x5u` are never fetched: the token stays an unknown key", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const server = yield* bait()
        const check = yield* policy()
        const exp = Math.floor(Date.now() / 1000) + 600
        const token = yield* Effect.promise(() =>
          new SignJWT({ ...claims, exp }).setProtectedHeader({ alg: "RS256", kid: "evil", jku: server.url, x5u: server.url }).sign(attacker.privateKey)
        )
        assert.deepStrictEqual(yield* check(token), rejected("token uses an unknown key"))
        assert.strictEqual(server.hits(), 0)
      })
    ))

  it.effect("an unknown `crit` extension is rejected even with a valid signature", () =>
    Effect.gen(function*() {
      const check = yield* policy()
      assert.strictEqual((yield* check(compact({ alg: "RS256", kid: "rsa-1" }, claims, trusted.privateKey))).status, 200)
      const critical = compact({ alg: "RS256", kid: "rsa-1", crit: ["x-must-understand"], "x-must-understand": true }, claims, trusted.privateKey)
      assert.deepStrictEqual(yield* check(critical), rejected("the token is invalid: malformed"))
    }))

  it.effect("a huge or path-like `kid` is only an unknown key", () =>
    Effect.gen(function*() {
      const check = yield* policy()
      for (const kid of ["../../etc/passwd", "x".repeat(100_000), "rsa-1' OR '1'='1"]) {
        assert.deepStrictEqual(yield* check(compact({ alg: "RS256", kid }, claims, trusted.privateKey)), rejected("token uses an unknown key"))
      }
    }))

  it.effect("with audiences configured, an empty `aud` array is rejected", () =>
    Effect.gen(function*() {
      const check = yield* policy({ audiences: ["api"] })
      assert.deepStrictEqual(yield* check(compact({ alg: "RS256", kid: "rsa-1" }, { ...claims, aud: [] }, trusted.privateKey)), rejected("the token is invalid: audience not accepted"))
      assert.strictEqual((yield* check(compact({ alg: "RS256", kid: "rsa-1" }, { ...claims, aud: ["web", "api"] }, trusted.privateKey))).status, 200)
    }))
})

describe("jwtAuth: token time claims", () => {
  it.effect("an `iat` in the future beyond the clock skew is refused; within it, accepted", () =>
    Effect.gen(function*() {
      const check = yield* policy()
      const at = (iat: number) => compact({ alg: "RS256", kid: "rsa-1" }, { ...claims, iat }, trusted.privateKey)
      assert.deepStrictEqual(yield* check(at(JwtAuth.CLOCK_SKEW_SECONDS + 60)), rejected("the token is invalid: issued in the future"))
      assert.strictEqual((yield* check(at(JwtAuth.CLOCK_SKEW_SECONDS - 30))).status, 200)
      assert.strictEqual((yield* check(at(0))).status, 200)
    }))
})
