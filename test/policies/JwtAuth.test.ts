import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { TestClock } from "effect/testing"
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from "jose"
import * as http from "node:http"
import * as Cel from "../../src/cel/Cel.ts"
import * as CelContext from "../../src/cel/Context.ts"
import type { ProxyRequest } from "../../src/pipeline/RequestContext.ts"
import * as JwtAuth from "../../src/policies/JwtAuth.ts"
import { buildEnv, exchange } from "../support/Policies.ts"
import { request, type RequestSpec } from "../support/Requests.ts"

const ISSUER = "https://issuer.example"

const rsa = await generateKeyPair("RS256", { extractable: true })
const ec = await generateKeyPair("ES256", { extractable: true })
const rsaJwk = { ...(await exportJWK(rsa.publicKey)), kid: "rsa-1" }
const ecJwk = { ...(await exportJWK(ec.publicKey)), kid: "ec-1", alg: "ES256" }
const rsaPem = await exportSPKI(rsa.publicKey)
const rotated = await generateKeyPair("RS256", { extractable: true })
const rotatedJwk = { ...(await exportJWK(rotated.publicKey)), kid: "rsa-2" }

const jwks = (...keys: ReadonlyArray<object>) => JSON.stringify({ keys })

/** Claims valid at TestClock time 0 (the epoch) for an hour. */
const claims = (extra: Record<string, unknown> = {}) => ({ iss: ISSUER, sub: "alice", aud: "api", exp: 3600, ...extra })

const sign = (payload: Record<string, unknown>, header: { alg: string; kid?: string } = { alg: "RS256", kid: "rsa-1" }, key: Parameters<SignJWT["sign"]>[0] = rsa.privateKey) =>
  Effect.promise(() => new SignJWT(payload).setProtectedHeader(header).sign(key))

const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url")

interface Outcome {
  readonly status: number
  readonly body: unknown
  readonly forwarded: ProxyRequest | undefined
}

/** Builds the policy once (one snapshot); `send` runs one request through it. */
const build = (config: JwtAuth.Config) =>
  Effect.map(exchange(JwtAuth.policy, config), ({ send: once, close }) => {
    const send = (spec: RequestSpec) =>
      Effect.map(once(request(spec)), ({ response, forwarded }): Outcome => ({ status: response.status, body: response.body, forwarded }))
    const bearer = (token: string) => send({ headers: { authorization: `Bearer ${token}` } })
    return { send, bearer, close }
  })

const inline = (extra: Partial<{ mode: "strict" | "optional" | "permissive"; audiences: Array<string>; requiredClaims: Array<string> }> = {}): JwtAuth.Config => ({
  issuer: ISSUER,
  jwks: jwks(rsaJwk, ecJwk),
  ...(extra.mode === undefined ? {} : { mode: extra.mode }),
  ...(extra.audiences === undefined ? {} : { audiences: extra.audiences }),
  ...(extra.requiredClaims === undefined ? {} : { jwtValidationOptions: { requiredClaims: extra.requiredClaims } })
})

const rejected = (detail: string) => ({ status: 401, body: `authentication failure: ${detail}` })
const statusBody = (o: Outcome) => ({ status: o.status, body: o.body })

const configError = (config: JwtAuth.Config) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const exit = yield* Effect.exit(Scope.provide(JwtAuth.policy.make(config, buildEnv(), "policies.jwtAuth"), scope))
    assert.isTrue(Exit.isFailure(exit))
    const error = Exit.isFailure(exit) && exit.cause.reasons[0]?._tag === "Fail" ? exit.cause.reasons[0].error : undefined
    return error?.issues[0]
  })

describe("jwtAuth", () => {
  it.effect("an RS256 token: forwarded without the credential, claims in CEL (ints as BigInt), identity set", () =>
    Effect.gen(function*() {
      const policy = yield* build(inline())
      const token = yield* sign(claims({ n: 42, nested: { key: "value" } }))
      const out = yield* policy.bearer(token)
      assert.deepStrictEqual(statusBody(out), { status: 200, body: "upstream" })
      const ctx = out.forwarded!
      assert.isUndefined(ctx.headers["authorization"])
      assert.strictEqual(ctx.identity, `jwt:${ISSUER}|alice`)
      const rule = yield* Cel.compileBool('jwt.sub == "alice" && jwt.n == 42 && jwt.nested.key == "value"', "rule")
      assert.isTrue(rule.evalBool(CelContext.forRequest(ctx)))
      const jwt = ctx.celExtensions?.jwt
      assert.isTrue(typeof jwt === "object" && jwt !== null && "n" in jwt && jwt.n === 42n)
      yield* policy.close
    }))

  it.effect("an ES256 token verifies with its curve's algorithm", () =>
    Effect.gen(function*() {
      const policy = yield* build(inline())
      const token = yield* sign(claims(), { alg: "ES256", kid: "ec-1" }, ec.privateKey)
      assert.deepStrictEqual(statusBody(yield* policy.bearer(token)), { status: 200, body: "upstream" })
      yield* policy.close
    }))

  it.effect("modes: strict rejects a missing token, optional passes it, permissive passes an invalid one untouched", () =>
    Effect.gen(function*() {
      const strict = yield* build(inline({ mode: "strict" }))
      assert.deepStrictEqual(statusBody(yield* strict.send({})), rejected("no bearer token found"))
      // A header without the `Bearer ` prefix is no bearer token.
      assert.deepStrictEqual(statusBody(yield* strict.send({ headers: { authorization: "Basic abc" } })), rejected("no bearer token found"))
      const optional = yield* build(inline())
      const passed = yield* optional.send({})
      assert.deepStrictEqual(statusBody(passed), { status: 200, body: "upstream" })
      assert.isUndefined(passed.forwarded!.identity)
      assert.deepStrictEqual(statusBody(yield* optional.bearer("not.a.jwt")), rejected("the token header is malformed"))
      const permissive = yield* build(inline({ mode: "permissive" }))
      const bad = yield* permissive.bearer("not.a.jwt")
      assert.deepStrictEqual(statusBody(bad), { status: 200, body: "upstream" })
      assert.strictEqual(bad.forwarded!.headers["authorization"], "Bearer not.a.jwt")
      assert.isUndefined(bad.forwarded!.celExtensions?.jwt)
      const good = yield* permissive.bearer(yield* sign(claims()))
      assert.strictEqual(good.forwarded!.identity, `jwt:${ISSUER}|alice`)
    }))

  it.effect("the algorithm comes from the key: HS256 signed with the RSA public key, alg none and a zero ES256 signature fail", () =>
    Effect.gen(function*() {
      const policy = yield* build(inline())
      const confused = yield* sign(claims(), { alg: "HS256", kid: "rsa-1" }, new TextEncoder().encode(rsaPem))
      assert.deepStrictEqual(statusBody(yield* policy.bearer(confused)), rejected("the token is invalid: algorithm not allowed for its key"))
      const none = `${b64({ alg: "none", kid: "rsa-1" })}.${b64(claims())}.`
      assert.deepStrictEqual(statusBody(yield* policy.bearer(none)), rejected("the token is invalid: algorithm not allowed for its key"))
      const psychic = `${b64({ alg: "ES256", kid: "ec-1" })}.${b64(claims())}.${Buffer.alloc(64).toString("base64url")}`
      assert.deepStrictEqual(statusBody(yield* policy.bearer(psychic)), rejected("the token is invalid: signature verification failed"))
      // A token signed by another key under a known kid.
      const forged = yield* sign(claims(), { alg: "RS256", kid: "rsa-1" }, rotated.privateKey)
      assert.deepStrictEqual(statusBody(yield* policy.bearer(forged)), rejected("the token is invalid: signature verification failed"))
    }))

  it.effect("the kid is required and must name a configured key", () =>
    Effect.gen(function*() {
      const policy = yield* build(inline())
      assert.deepStrictEqual(statusBody(yield* policy.bearer(yield* sign(claims(), { alg: "RS256" }))), rejected("the token header does not specify a `kid`"))
      assert.deepStrictEqual(statusBody(yield* policy.bearer(yield* sign(claims(), { alg: "RS256", kid: "nope" }))), rejected("token uses an unknown key"))
    }))

  it.effect("exp is required by default and checked with the clock skew, also for cached tokens; nbf in the future is rejected", () =>
    Effect.gen(function*() {
      const policy = yield* build(inline())
      const noExp = yield* sign({ iss: ISSUER, sub: "alice" })
      assert.deepStrictEqual(statusBody(yield* policy.bearer(noExp)), rejected("the token is invalid: missing required claim `exp`"))
      const early = yield* sign(claims({ nbf: 600 }))
      assert.deepStrictEqual(statusBody(yield* policy.bearer(early)), rejected("the token is invalid: not yet valid"))
      const token = yield* sign(claims())
      assert.strictEqual((yield* policy.bearer(token)).status, 200)
      // Within the skew after exp the cached verification still holds; past it, it does not.
      yield* TestClock.adjust(`${3600 + JwtAuth.CLOCK_SKEW_SECONDS - 1} seconds`)
      assert.strictEqual((yield* policy.bearer(token)).status, 200)
      yield* TestClock.adjust("2 seconds")
      assert.deepStrictEqual(statusBody(yield* policy.bearer(token)), rejected("the token is invalid: expired"))
      // nbf within the skew is accepted.
      assert.strictEqual((yield* policy.bearer(yield* sign(claims({ nbf: 3700, exp: 9000 })))).status, 200)
    }))

  it.effect("requiredClaims: [] accepts a token without exp", () =>
    Effect.gen(function*() {
      const policy = yield* build(inline({ requiredClaims: [] }))
      assert.strictEqual((yield* policy.bearer(yield* sign({ iss: ISSUER, sub: "bob" }))).status, 200)
    }))

  it.effect("iss must match; aud must be one of the audiences when some are configured", () =>
    Effect.gen(function*() {
      const policy = yield* build(inline({ audiences: ["other", "api"] }))
      assert.deepStrictEqual(statusBody(yield* policy.bearer(yield* sign(claims({ iss: "https://evil.example" })))), rejected("the token is invalid: issuer not accepted"))
      assert.deepStrictEqual(statusBody(yield* policy.bearer(yield* sign(claims({ iss: undefined })))), rejected("the token is invalid: missing required claim `iss`"))
      assert.deepStrictEqual(statusBody(yield* policy.bearer(yield* sign(claims({ aud: "web" })))), rejected("the token is invalid: audience not accepted"))
      assert.deepStrictEqual(statusBody(yield* policy.bearer(yield* sign(claims({ aud: undefined })))), rejected("the token is invalid: missing required claim `aud`"))
      assert.strictEqual((yield* policy.bearer(yield* sign(claims({ aud: ["web", "api"] })))).status, 200)
      // Without audiences, aud is not checked.
      const any = yield* build(inline())
      assert.strictEqual((yield* any.bearer(yield* sign(claims({ aud: "web" })))).status, 200)
    }))

  it.effect("providers: the kid selects the provider, whose issuer is then required", () =>
    Effect.gen(function*() {
      const policy = yield* build({
        mode: "strict",
        providers: [
          { issuer: "https://a.example", jwks: jwks(rsaJwk) },
          { issuer: "https://b.example", jwks: jwks(ecJwk) }
        ]
      })
      assert.strictEqual((yield* policy.bearer(yield* sign(claims({ iss: "https://a.example" }))))
        .forwarded!.identity, "jwt:https://a.example|alice")
      const b = yield* sign(claims({ iss: "https://b.example" }), { alg: "ES256", kid: "ec-1" }, ec.privateKey)
      assert.strictEqual((yield* policy.bearer(b)).forwarded!.identity, "jwt:https://b.example|alice")
      // Signed by provider a's key but claiming b's issuer.
      assert.deepStrictEqual(statusBody(yield* policy.bearer(yield* sign(claims({ iss: "https://b.example" })))), rejected("the token is invalid: issuer not accepted"))
    }))

  it.effect("locations: a query parameter and a cookie are read and removed before forwarding", () =>
    Effect.gen(function*() {
      const token = yield* sign(claims())
      const query = yield* build({ ...inline({ mode: "strict" }), location: { queryParameter: { name: "access_token" } } })
      const q = yield* query.send({ query: `?a=1&access_token=${token}&b=2` })
      assert.strictEqual(q.status, 200)
      assert.strictEqual(q.forwarded!.query, "?a=1&b=2")
      const cookie = yield* build({ ...inline({ mode: "strict" }), location: { cookie: { name: "session" } } })
      const c = yield* cookie.send({ headers: { cookie: `theme=dark; session=${token}` } })
      assert.strictEqual(c.status, 200)
      assert.strictEqual(c.forwarded!.headers["cookie"], "theme=dark")
      const header = yield* build({ ...inline({ mode: "strict" }), location: { header: { name: "x-token" } } })
      const h = yield* header.send({ headers: { "x-token": token } })
      assert.strictEqual(h.status, 200)
      assert.isUndefined(h.forwarded!.headers["x-token"])
    }))

  it.effect("bad JWKS: keys without kid, symmetric keys and an alg that does not fit the key are config errors", () =>
    Effect.gen(function*() {
      const { kid: _kid, ...noKid } = rsaJwk
      assert.deepStrictEqual(yield* configError({ issuer: ISSUER, jwks: jwks(noKid) }), { path: "policies.jwtAuth.jwks", message: "keys[0]: the key has no `kid`" })
      assert.deepStrictEqual(yield* configError({ issuer: ISSUER, jwks: jwks({ kty: "oct", k: "c2VjcmV0", kid: "hmac" }) }), {
        path: "policies.jwtAuth.jwks",
        message: "keys[0] (\"hmac\"): symmetric (kty oct) keys are not accepted: only RSA, EC and OKP public keys"
      })
      assert.deepStrictEqual(yield* configError({ issuer: ISSUER, jwks: jwks({ ...ecJwk, alg: "HS256" }) }), {
        path: "policies.jwtAuth.jwks",
        message: "keys[0] (\"ec-1\"): alg \"HS256\" does not fit a EC key"
      })
      assert.deepStrictEqual(yield* configError({ issuer: ISSUER, jwks: "{" }), {
        path: "policies.jwtAuth.jwks",
        message: "invalid JWKS JSON: Expected property name or '}' in JSON at position 1 (line 1 column 2)"
      })
      assert.deepStrictEqual(yield* configError({ issuer: ISSUER, jwks: { url: "ftp://x" } }), { path: "policies.jwtAuth.jwks.url", message: "a JWKS URL must be http or https" })
      // Checked before JSON.parse, which a deeply nested document blocks the event loop on (security.md §0.4).
      assert.deepStrictEqual(yield* configError({ issuer: ISSUER, jwks: `{"keys":${"[".repeat(100)}${"]".repeat(100)}}` }), {
        path: "policies.jwtAuth.jwks",
        message: "invalid JWKS JSON: JSON nested deeper than 64 levels"
      })
    }))

  it("Cache-Control max-age is clamped to the min and max TTL", () => {
    assert.strictEqual(JwtAuth.ttlOf(undefined), JwtAuth.JWKS_DEFAULT_TTL_MS)
    assert.strictEqual(JwtAuth.ttlOf("public, max-age=5"), JwtAuth.JWKS_MIN_TTL_MS)
    assert.strictEqual(JwtAuth.ttlOf("max-age=300"), 300_000)
    assert.strictEqual(JwtAuth.ttlOf("max-age=99999999"), JwtAuth.JWKS_MAX_TTL_MS)
    assert.strictEqual(JwtAuth.ttlOf("no-store"), JwtAuth.JWKS_MIN_TTL_MS)
  })
})

/** A JWKS server that counts its fetches; `keys` and `down` can be changed by the test. */
const jwksServer = () =>
  Effect.acquireRelease(
    Effect.promise(() => {
      const state = { fetches: 0, keys: [rsaJwk] as Array<object>, port: 0, server: undefined as http.Server | undefined }
      const server = http.createServer((_req, res) => {
        state.fetches++
        res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=120" })
        res.end(JSON.stringify({ keys: state.keys }))
      })
      state.server = server
      return new Promise<typeof state>((resolve) =>
        server.listen(0, "127.0.0.1", () => {
          const address = server.address()
          state.port = typeof address === "object" && address !== null ? address.port : 0
          resolve(state)
        })
      )
    }),
    (state) =>
      Effect.promise(() =>
        new Promise<void>((resolve) => {
          state.server?.closeAllConnections()
          state.server?.close(() => resolve())
          if (state.server?.listening !== true) resolve()
        })
      )
  )

const stop = (server: http.Server | undefined) =>
  Effect.promise(() =>
    new Promise<void>((resolve) => {
      server?.closeAllConnections()
      server?.close(() => resolve())
    })
  )

describe("jwtAuth with a JWKS URL", () => {
  it.live("loads the keys when the policy is built (real clock)", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const server = yield* jwksServer()
        const policy = yield* build({ issuer: ISSUER, jwks: { url: `http://127.0.0.1:${server.port}/jwks.json` } })
        assert.strictEqual(server.fetches, 1)
        const exp = Math.floor(Date.now() / 1000) + 3600
        assert.strictEqual((yield* policy.bearer(yield* sign(claims({ exp })))).status, 200)
        yield* policy.close
      })
    ))

  it.effect("unknown kids: ≤ 1 fetch per cooldown, a rotated key is found after it; a dead server keeps the last good keys", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const server = yield* jwksServer()
        const policy = yield* build({ issuer: ISSUER, jwks: { url: `http://127.0.0.1:${server.port}/jwks.json` } })
        assert.strictEqual(server.fetches, 1)
        // Within the cooldown of the initial load: no fetch at all, however many bogus kids.
        for (let i = 0; i < 50; i++) {
          assert.deepStrictEqual(statusBody(yield* policy.bearer(yield* sign(claims(), { alg: "RS256", kid: `bogus-${i}` }))), rejected("token uses an unknown key"))
        }
        assert.strictEqual(server.fetches, 1)
        // After the cooldown: one fetch for the whole flood, concurrent requests included.
        yield* TestClock.adjust(`${JwtAuth.UNKNOWN_KID_COOLDOWN_MS} millis`)
        const bogus = yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => i), (i) => sign(claims(), { alg: "RS256", kid: `flood-${i}` }))
        const outcomes = yield* Effect.forEach(bogus, (t) => policy.bearer(t), { concurrency: "unbounded" })
        assert.isTrue(outcomes.every((o) => o.status === 401))
        for (const t of bogus) assert.strictEqual((yield* policy.bearer(t)).status, 401)
        assert.strictEqual(server.fetches, 2)
        // The issuer rotates in a new key: found by the first unknown-kid fetch after the cooldown.
        server.keys = [rsaJwk, rotatedJwk]
        const next = yield* sign(claims(), { alg: "RS256", kid: "rsa-2" }, rotated.privateKey)
        assert.strictEqual((yield* policy.bearer(next)).status, 401)
        yield* TestClock.adjust(`${JwtAuth.UNKNOWN_KID_COOLDOWN_MS} millis`)
        assert.strictEqual((yield* policy.bearer(next)).forwarded!.identity, `jwt:${ISSUER}|alice`)
        assert.strictEqual(server.fetches, 3)
        // The server goes away: a failed fetch keeps the last good keys.
        yield* stop(server.server)
        yield* TestClock.adjust(`${JwtAuth.UNKNOWN_KID_COOLDOWN_MS} millis`)
        assert.strictEqual((yield* policy.bearer(yield* sign(claims(), { alg: "RS256", kid: "gone" }))).status, 401)
        const fresh = yield* sign(claims({ jti: "fresh" }), { alg: "RS256", kid: "rsa-2" }, rotated.privateKey)
        assert.strictEqual((yield* policy.bearer(fresh)).status, 200)
        const old = yield* sign(claims({ jti: "old" }))
        assert.strictEqual((yield* policy.bearer(old)).status, 200)
        yield* policy.close
      })
    ))

  it.effect("the keys are refreshed in the background once max-age has passed", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const server = yield* jwksServer()
        const built = yield* JwtAuth.build({ issuer: ISSUER, jwks: { url: `http://127.0.0.1:${server.port}/jwks.json` } }, "policies.jwtAuth")
        const remote = built.remotes[0]!
        assert.deepStrictEqual([...remote.keys.keys()], ["rsa-1"])
        server.keys = [rotatedJwk]
        yield* TestClock.adjust("119 seconds")
        assert.strictEqual(server.fetches, 1)
        yield* TestClock.adjust("1 second")
        // The refresher's fetch is real I/O: wait (bounded) for it to land.
        for (let i = 0; i < 200 && !remote.keys.has("rsa-2"); i++) yield* Effect.promise(() => new Promise((r) => setTimeout(r, 5)))
        assert.deepStrictEqual([...remote.keys.keys()], ["rsa-2"])
        assert.strictEqual(server.fetches, 2)
      })
    ))

  it.effect("an unreachable JWKS at build time does not fail the config; tokens are 401 until keys load", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const server = yield* jwksServer()
        const port = server.port
        yield* stop(server.server)
        const policy = yield* build({ mode: "strict", issuer: ISSUER, jwks: { url: `http://127.0.0.1:${port}/jwks.json` } })
        assert.deepStrictEqual(statusBody(yield* policy.bearer(yield* sign(claims()))), rejected("token uses an unknown key"))
        yield* policy.close
      })
    ))
})
