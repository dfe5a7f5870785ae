import { assert, describe, it } from "@effect/vitest"
import bcrypt from "bcryptjs"
import { Effect, Exit, Scope } from "effect"
import * as Cel from "../../src/cel/Cel.ts"
import * as CelContext from "../../src/cel/Context.ts"
import type { ProxyRequest } from "../../src/pipeline/RequestContext.ts"
import * as BasicAuth from "../../src/policies/BasicAuth.ts"
import { buildEnv, exchange } from "../support/Policies.ts"
import { request, type RequestSpec } from "../support/Requests.ts"

const bcryptHash = bcrypt.hashSync("b-pass", 4).replace(/^\$2b\$/, "$2y$")

const HTPASSWD = [
  "# users",
  "",
  "ann:$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0",
  "md5:$1$abc$BXBqpb9BZcZhXLgbee.0s/",
  "sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
  `bob:${bcryptHash}`
].join("\n")

interface Outcome {
  readonly status: number
  readonly body: unknown
  readonly challenge: unknown
  readonly forwarded: ProxyRequest | undefined
}

const build = (config: BasicAuth.Config) =>
  Effect.map(exchange(BasicAuth.policy, config), ({ send }) => (spec: RequestSpec) =>
    Effect.map(send(request(spec)), ({ response, forwarded }): Outcome => ({
      status: response.status,
      body: response.body,
      challenge: response.headers["www-authenticate"],
      forwarded
    })))

const basic = (user: string, password: string) => ({ headers: { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` } })

const denied = (detail: string, realm = "Restricted") => ({ status: 401, body: `basic authentication failure: ${detail}`, challenge: `Basic realm="${realm}"` })
const view = (o: Outcome) => ({ status: o.status, body: o.body, challenge: o.challenge })

describe("basicAuth", () => {
  it("MD5-crypt matches openssl's $apr1$ and $1$ output", () => {
    assert.strictEqual(BasicAuth.md5Crypt("secret", "saltsalt", "$apr1$"), "$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0")
    assert.strictEqual(BasicAuth.md5Crypt("password", "abc", "$1$"), "$1$abc$BXBqpb9BZcZhXLgbee.0s/")
  })

  it.effect("apr1, MD5-crypt, {SHA} and bcrypt ($2y$) users authenticate; the credential is removed", () =>
    Effect.gen(function*() {
      const send = yield* build({ htpasswd: HTPASSWD, mode: "strict" })
      for (const [user, password] of [["ann", "secret"], ["md5", "password"], ["sha", "secret"], ["bob", "b-pass"], ["bob", "b-pass"]] as const) {
        const out = yield* send(basic(user, password))
        assert.deepStrictEqual(view(out), { status: 200, body: "upstream", challenge: undefined }, user)
        assert.isUndefined(out.forwarded!.headers["authorization"])
        assert.strictEqual(out.forwarded!.identity, `basic:${user}`)
        const rule = yield* Cel.compileBool(`basicAuth.username == "${user}"`, "rule")
        assert.isTrue(rule.evalBool(CelContext.forRequest(out.forwarded!)))
      }
    }))

  it.effect("wrong passwords, unknown users and malformed credentials get 401 with the realm challenge", () =>
    Effect.gen(function*() {
      const send = yield* build({ htpasswd: HTPASSWD, realm: "ops \"team\"" })
      const realm = "ops \\\"team\\\""
      assert.deepStrictEqual(view(yield* send(basic("ann", "wrong"))), denied("invalid credentials", realm))
      assert.deepStrictEqual(view(yield* send(basic("bob", "wrong"))), denied("invalid credentials", realm))
      assert.deepStrictEqual(view(yield* send(basic("sha", "wrong"))), denied("invalid credentials", realm))
      assert.deepStrictEqual(view(yield* send(basic("nobody", "secret"))), denied("invalid credentials", realm))
      assert.deepStrictEqual(view(yield* send({ headers: { authorization: "Basic !!!" } })), denied("invalid credentials", realm))
      assert.deepStrictEqual(view(yield* send({ headers: { authorization: `Basic ${Buffer.from("nocolon").toString("base64")}` } })), denied("invalid credentials", realm))
      // optional (the default): no credentials pass.
      const anonymous = yield* send({})
      assert.deepStrictEqual(view(anonymous), { status: 200, body: "upstream", challenge: undefined })
      assert.isUndefined(anonymous.forwarded!.identity)
    }))

  it.effect("strict: missing credentials are challenged with the default realm", () =>
    Effect.gen(function*() {
      const send = yield* build({ htpasswd: HTPASSWD, mode: "strict" })
      assert.deepStrictEqual(view(yield* send({})), denied("no basic authentication credentials found"))
      assert.deepStrictEqual(view(yield* send({ headers: { authorization: "Bearer x" } })), denied("no basic authentication credentials found"))
    }))

  it.effect("unsupported hashes are config errors naming the line", () =>
    Effect.gen(function*() {
      const issues = (htpasswd: string) =>
        Effect.gen(function*() {
          const scope = yield* Scope.make()
          const exit = yield* Effect.exit(Scope.provide(BasicAuth.policy.make({ htpasswd }, buildEnv(), "policies.basicAuth"), scope))
          return Exit.isFailure(exit) && exit.cause.reasons[0]?._tag === "Fail" ? exit.cause.reasons[0].error.issues : []
        })
      assert.deepStrictEqual(yield* issues("ok:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\ndes:rl0uE9SYFXbjA\nsha512:$6$salt$abc\nplain:secret\nnohash"), [
        { path: "policies.basicAuth.htpasswd", message: "htpasswd line 2 (user \"des\"): DES crypt hashes are not supported; use bcrypt (htpasswd -B)" },
        { path: "policies.basicAuth.htpasswd", message: "htpasswd line 3 (user \"sha512\"): SHA-crypt ($5$/$6$) hashes are not supported; use bcrypt (htpasswd -B)" },
        { path: "policies.basicAuth.htpasswd", message: "htpasswd line 4 (user \"plain\"): unsupported hash (expected bcrypt `$2y$`, `$apr1$` MD5 or `{SHA}`)" },
        { path: "policies.basicAuth.htpasswd", message: "htpasswd line 5: expected \"user:hash\"" }
      ])
      const missing = yield* Effect.exit(Scope.provide(BasicAuth.policy.make({ htpasswd: { file: "/nonexistent/htpasswd" } }, buildEnv(), "p"), yield* Scope.make()))
      const issue = Exit.isFailure(missing) && missing.cause.reasons[0]?._tag === "Fail" ? missing.cause.reasons[0].error.issues[0] : undefined
      assert.strictEqual(issue?.path, "p.htpasswd.file")
      assert.match(issue?.message ?? "", /^cannot read \/nonexistent\/htpasswd: ENOENT/)
    }))
})
