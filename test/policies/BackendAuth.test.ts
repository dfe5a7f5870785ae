import { assert, describe, it } from "@effect/vitest"
import aws4 from "aws4"
import { Effect, Exit, Scope } from "effect"
import { TestClock } from "effect/testing"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { ProxyRequest } from "../../src/pipeline/RequestContext.ts"
import * as AwsSigV4 from "../../src/policies/AwsSigV4.ts"
import * as BackendAuth from "../../src/policies/BackendAuth.ts"
import * as GcpToken from "../../src/policies/GcpToken.ts"
import { buildEnv, exchange } from "../support/Policies.ts"
import { request, type RequestSpec } from "../support/Requests.ts"

/** Runs one request through the policy; the request as the backend would get it. */
const forward = (config: BackendAuth.Config, spec: RequestSpec = {}, prepare: (ctx: ProxyRequest) => void = () => {}) =>
  Effect.gen(function*() {
    const { send, close } = yield* exchange(BackendAuth.policy, config)
    const req = request(spec)
    prepare(req)
    const out = yield* send(req)
    yield* close
    return out
  })

const configError = (config: BackendAuth.Config) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const exit = yield* Effect.exit(Scope.provide(BackendAuth.policy.make(config, buildEnv(), "policies.backendAuth"), scope))
    assert.isTrue(Exit.isFailure(exit))
    const error = Exit.isFailure(exit) && exit.cause.reasons[0]?._tag === "Fail" ? exit.cause.reasons[0].error : undefined
    return error?.issues[0]
  })

// AWS's published SigV4 test suite (aws-sig-v4-test-suite), shared by every SDK.
const VECTOR_CREDENTIALS = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" }
const VECTOR_SCOPE = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature="

describe("backendAuth", () => {
  it.effect("key: a string is sent as Authorization: Bearer, replacing the client's", () =>
    Effect.gen(function*() {
      const out = yield* forward({ key: "sk-123" }, { headers: { authorization: "Bearer client" } })
      assert.strictEqual(out.response.status, 200)
      assert.strictEqual(out.forwarded?.headers["authorization"], "Bearer sk-123")
    }))

  it.effect("key: {value, location} places it in another header, with or without a prefix", () =>
    Effect.gen(function*() {
      const plain = yield* forward({ key: { value: "sk-1", location: { header: { name: "X-Api-Key" } } } })
      assert.strictEqual(plain.forwarded?.headers["x-api-key"], "sk-1")
      assert.isUndefined(plain.forwarded?.headers["authorization"])
      const prefixed = yield* forward({ key: { value: "sk-2", location: { header: { name: "authorization", prefix: "Token " } } } })
      assert.strictEqual(prefixed.forwarded?.headers["authorization"], "Token sk-2")
    }))

  it.effect("key: query parameter (an existing one replaced) and cookie locations", () =>
    Effect.gen(function*() {
      const query = yield* forward({ key: { value: "a b&c", location: { queryParameter: { name: "key" } } } }, { query: "?key=client&x=1" })
      assert.strictEqual(query.forwarded?.query, "?x=1&key=a%20b%26c")
      const cookie = yield* forward({ key: { value: "s1", location: { cookie: { name: "session" } } } }, { headers: { cookie: "a=1; session=client" } })
      assert.strictEqual(cookie.forwarded?.headers["cookie"], "a=1; session=s1")
    }))

  it.effect("key: {file} is read when the snapshot is built, surrounding whitespace trimmed", () =>
    Effect.gen(function*() {
      const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "backendauth-")), "key")
      fs.writeFileSync(file, "  from-file\n")
      const out = yield* forward({ key: { file } })
      assert.strictEqual(out.forwarded?.headers["authorization"], "Bearer from-file")
    }))

  it.effect("credentials: extra pairs next to the main credential, or alone", () =>
    Effect.gen(function*() {
      const both = yield* forward({
        key: "main",
        credentials: [{ location: { header: { name: "x-tenant-key" } }, key: "t1" }, { location: { queryParameter: { name: "sig" } }, key: "q" }]
      })
      assert.strictEqual(both.forwarded?.headers["authorization"], "Bearer main")
      assert.strictEqual(both.forwarded?.headers["x-tenant-key"], "t1")
      assert.strictEqual(both.forwarded?.query, "?sig=q")
      const alone = yield* forward({ credentials: [{ location: { header: { name: "x-k", prefix: "K " } }, key: "v" }] })
      assert.strictEqual(alone.forwarded?.headers["x-k"], "K v")
    }))

  it.effect("passthrough: re-adds the validated JWT (default Bearer, or at a location); nothing without one", () =>
    Effect.gen(function*() {
      const withToken = yield* forward({ passthrough: {} }, {}, (ctx) => {
        ctx.validatedJwt = "eyJ.validated.jwt"
      })
      assert.strictEqual(withToken.forwarded?.headers["authorization"], "Bearer eyJ.validated.jwt")
      const located = yield* forward({ passthrough: { location: { header: { name: "x-user-token" } } } }, {}, (ctx) => {
        ctx.validatedJwt = "tok"
      })
      assert.strictEqual(located.forwarded?.headers["x-user-token"], "tok")
      // An unvalidated client header is not "passed through": it is whatever the client sent.
      const without = yield* forward({ passthrough: {} }, { headers: { "x-other": "1" } })
      assert.isUndefined(without.forwarded?.headers["authorization"])
    }))

  it.effect("bad config names the field: an expression location, a line break, two kinds at once, nothing at all", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* configError({ key: { value: "k", location: { expression: "request.path" } } }), {
        path: "policies.backendAuth.key.location.expression",
        message: "a backend credential cannot be placed by an expression: use header, queryParameter or cookie"
      })
      assert.deepStrictEqual(yield* configError({ key: "a\r\nx-injected: 1" }), {
        path: "policies.backendAuth.key",
        message: "the credential contains a line break or NUL"
      })
      assert.deepStrictEqual(yield* configError({ gcp: { credential: "{\"type\":\"service_account\",\"private_key\":\"SECRET-PEM\"}" } }), {
        path: "policies.backendAuth.gcp.credential",
        message: "the credential has no client_email"
      })
    }))

  it("the schema rejects two credential kinds and an empty policy", async () => {
    const { Schema } = await import("effect")
    const decode = Schema.decodeUnknownExit(BackendAuth.Config)
    assert.isTrue(Exit.isFailure(decode({ key: "a", passthrough: {} })))
    assert.isTrue(Exit.isFailure(decode({})))
    assert.isTrue(Exit.isSuccess(decode({ key: { value: "a", location: { header: { name: "x" } } } })))
    assert.isTrue(Exit.isSuccess(decode({ gcp: { type: "idToken", audience: "https://x" } })))
    assert.isTrue(Exit.isSuccess(decode({ aws: { accessKeyId: "a", secretAccessKey: "b", region: "eu-west-1" } })))
  })

  it("ADC parsing never quotes the credential in its reason", () => {
    const secret = "-----BEGIN PRIVATE KEY-----TOPSECRET"
    for (const text of [`{"type":"service_account","private_key":"${secret}"`, `{"type":"authorized_user","private_key":"${secret}"}`, `{"type":"service_account","client_email":"a@b","private_key":"nope TOPSECRET"}`]) {
      const reason = GcpToken.parseServiceAccount(text)
      assert.isString(reason)
      assert.notInclude(String(reason), "TOPSECRET")
    }
  })

  it("MCP backends: aws and an audience-less ID token run per target, header credentials once", () => {
    assert.isTrue(BackendAuth.perMcpTarget({ aws: { accessKeyId: "a", secretAccessKey: "b" } }))
    assert.isTrue(BackendAuth.perMcpTarget({ gcp: { type: "idToken" } }))
    assert.isFalse(BackendAuth.perMcpTarget({ gcp: { type: "idToken", audience: "https://svc" } }))
    assert.isFalse(BackendAuth.perMcpTarget({ key: "k" }))
  })
})

describe("backendAuth aws (SigV4)", () => {
  const vector = (pathAndQuery: string) =>
    AwsSigV4.sign(aws4, {
      method: "GET",
      path: pathAndQuery,
      headers: { host: "example.amazonaws.com" },
      payload: new Uint8Array(0),
      amzDate: "20150830T123600Z",
      service: "service",
      region: "us-east-1",
      credentials: VECTOR_CREDENTIALS
    })

  it("get-vanilla and get-vanilla-query-order-key-case give AWS's published signatures", () => {
    assert.deepStrictEqual(vector("/"), {
      "x-amz-date": "20150830T123600Z",
      authorization: `${VECTOR_SCOPE}5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31`
    })
    assert.strictEqual(vector("/?Param2=value2&Param1=value1").authorization, `${VECTOR_SCOPE}b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500`)
  })

  it("S3 gets x-amz-content-sha256 (the body's hash, or UNSIGNED-PAYLOAD) and signs it", () => {
    const signed = AwsSigV4.sign(aws4, {
      method: "PUT",
      path: "/bucket/key",
      headers: { host: "s3.amazonaws.com", "content-type": "text/plain", "user-agent": "x" },
      payload: AwsSigV4.UNSIGNED_PAYLOAD,
      amzDate: "20150830T123600Z",
      service: "s3",
      region: "us-east-1",
      credentials: { ...VECTOR_CREDENTIALS, sessionToken: "session" }
    })
    assert.strictEqual(signed["x-amz-content-sha256"], "UNSIGNED-PAYLOAD")
    assert.strictEqual(signed["x-amz-security-token"], "session")
    assert.match(signed["authorization"]!, /SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token,/)
  })

  it.effect("the policy signs at send time (upstreamSigner), with the Clock's time, dropping client x-amz-* and authorization", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.UTC(2015, 7, 30, 12, 36, 0))
      const out = yield* forward(
        { aws: { accessKeyId: VECTOR_CREDENTIALS.accessKeyId, secretAccessKey: VECTOR_CREDENTIALS.secretAccessKey, region: "us-east-1", serviceName: "service" } },
        { host: "example.amazonaws.com", headers: { authorization: "Bearer client", "x-amz-date": "19990101T000000Z", "x-amz-security-token": "forged" } }
      )
      const ctx = out.forwarded!
      // Nothing is signed yet: the backend call runs the signer after its own edits.
      assert.strictEqual(ctx.headers["authorization"], "Bearer client")
      const signer = ctx.upstreamSigner!
      ctx.upstreamSigner = undefined
      yield* signer(ctx)
      assert.isUndefined(ctx.headers["x-amz-security-token"])
      assert.strictEqual(ctx.headers["x-amz-date"], "20150830T123600Z")
      assert.strictEqual(ctx.headers["authorization"], `${VECTOR_SCOPE}5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31`)
    }))

  it.effect("without credentials anywhere: 500 `backend authentication failed`", () =>
    Effect.gen(function*() {
      const saved = { id: process.env["AWS_ACCESS_KEY_ID"], secret: process.env["AWS_SECRET_ACCESS_KEY"] }
      delete process.env["AWS_ACCESS_KEY_ID"]
      delete process.env["AWS_SECRET_ACCESS_KEY"]
      const out = yield* forward({ aws: { serviceName: "execute-api", region: "eu-west-1" } })
      if (saved.id !== undefined) process.env["AWS_ACCESS_KEY_ID"] = saved.id
      if (saved.secret !== undefined) process.env["AWS_SECRET_ACCESS_KEY"] = saved.secret
      const ctx = out.forwarded!
      const exit = yield* Effect.exit(ctx.upstreamSigner!(ctx))
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) && exit.cause.reasons[0]?._tag === "Fail" ? exit.cause.reasons[0].error : undefined
      assert.strictEqual(error?.reason._tag, "BackendAuthFailed")
    }))
})
