import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { exportJWK, generateKeyPair, SignJWT } from "jose"
import * as McpAuthentication from "../../src/policies/McpAuthentication.ts"
import { exchange } from "../support/Policies.ts"
import { request, type RequestSpec } from "../support/Requests.ts"

const ISSUER = "https://idp.example/realms/mcp"
const rsa = await generateKeyPair("RS256", { extractable: true })
const JWKS = JSON.stringify({ keys: [{ ...(await exportJWK(rsa.publicKey)), kid: "k1", alg: "RS256" }] })

/** Valid at TestClock time 0 for an hour. */
const token = (extra: Record<string, unknown> = {}) =>
  Effect.promise(() =>
    new SignJWT({ iss: ISSUER, sub: "alice", aud: "http://gw.example/stdio/mcp", exp: 3600, ...extra }).setProtectedHeader({ alg: "RS256", kid: "k1" }).sign(rsa.privateKey)
  )

const config = (extra: Partial<McpAuthentication.Config> = {}): McpAuthentication.Config => ({
  issuer: ISSUER,
  audiences: ["http://gw.example/stdio/mcp"],
  jwks: JWKS,
  resourceMetadata: {
    resource: "http://gw.example/stdio/mcp",
    scopesSupported: ["read:all"],
    bearerMethodsSupported: ["header"],
    resourcePolicyUri: "http://gw.example/policies"
  },
  ...extra
})

const run = (cfg: McpAuthentication.Config, specs: ReadonlyArray<RequestSpec>) =>
  Effect.gen(function*() {
    const { send, close } = yield* exchange(McpAuthentication.policy, cfg)
    const out = []
    for (const spec of specs) out.push(yield* send(request({ host: "127.0.0.1", authority: "127.0.0.1:3000", ...spec })))
    yield* close
    return out
  })

const UNAUTHORIZED = `{"error":"unauthorized","error_description":"JWT token required"}`

describe("mcpAuthentication", () => {
  it.effect("strict (default): no token is 401 JSON pointing at the resource metadata of this path", () =>
    Effect.gen(function*() {
      const [out] = yield* run(config(), [{ method: "POST", path: "/stdio/mcp" }])
      assert.strictEqual(out!.response.status, 401)
      assert.strictEqual(out!.response.body, UNAUTHORIZED)
      assert.strictEqual(out!.response.headers["content-type"], "application/json")
      assert.strictEqual(out!.response.headers["www-authenticate"], `Bearer resource_metadata="http://gw.example/.well-known/oauth-protected-resource/stdio/mcp"`)
      assert.isUndefined(out!.forwarded)
    }))

  it.effect("without resourceMetadata.resource the base is the request's, x-forwarded-proto honoured", () =>
    Effect.gen(function*() {
      const [plain, forwarded] = yield* run(config({ resourceMetadata: {} }), [
        { method: "POST", path: "/mcp" },
        { method: "POST", path: "/mcp", headers: { "x-forwarded-proto": "https" } }
      ])
      assert.strictEqual(plain!.response.headers["www-authenticate"], `Bearer resource_metadata="http://127.0.0.1:3000/.well-known/oauth-protected-resource/mcp"`)
      assert.strictEqual(forwarded!.response.headers["www-authenticate"], `Bearer resource_metadata="https://127.0.0.1:3000/.well-known/oauth-protected-resource/mcp"`)
    }))

  it.effect("x-forwarded-proto never downgrades a request that arrived over TLS to http", () =>
    Effect.gen(function*() {
      const [downgrade, doc] = yield* run(config({ resourceMetadata: {} }), [
        { method: "POST", path: "/mcp", scheme: "https", headers: { "x-forwarded-proto": "http" } },
        { path: "/.well-known/oauth-protected-resource/mcp", scheme: "https", headers: { "x-forwarded-proto": "http" } }
      ])
      assert.strictEqual(downgrade!.response.headers["www-authenticate"], `Bearer resource_metadata="https://127.0.0.1:3000/.well-known/oauth-protected-resource/mcp"`)
      assert.strictEqual(JSON.parse(String(doc!.response.body)).resource, "https://127.0.0.1:3000/mcp")
    }))

  it.effect("the protected-resource document: computed fields, then resourceMetadata in snake_case; CORS for any origin", () =>
    Effect.gen(function*() {
      const [doc, preflight, computed] = yield* run(config(), [
        { path: "/.well-known/oauth-protected-resource/stdio/mcp" },
        { method: "OPTIONS", path: "/.well-known/oauth-protected-resource/stdio/mcp" },
        { path: "/.well-known/oauth-protected-resource/other" }
      ])
      assert.strictEqual(doc!.response.status, 200)
      assert.strictEqual(doc!.response.headers["content-type"], "application/json")
      assert.strictEqual(doc!.response.headers["access-control-allow-origin"], "*")
      assert.deepStrictEqual(JSON.parse(String(doc!.response.body)), {
        resource: "http://gw.example/stdio/mcp",
        authorization_servers: [ISSUER],
        mcp_protocol_version: "2025-06-18",
        resource_type: "mcp-server",
        scopes_supported: ["read:all"],
        bearer_methods_supported: ["header"],
        resource_policy_uri: "http://gw.example/policies"
      })
      assert.strictEqual(preflight!.response.status, 200)
      assert.strictEqual(preflight!.response.headers["access-control-allow-origin"], "*")
      // `resource` from config overrides the computed one, whatever path was asked for.
      assert.strictEqual(JSON.parse(String(computed!.response.body)).resource, "http://gw.example/stdio/mcp")
    }))

  it.effect("without a configured resource, it is the request's base plus the path after the well-known prefix", () =>
    Effect.gen(function*() {
      const [doc] = yield* run(config({ resourceMetadata: { scopesSupported: ["a"] }, provider: { keycloak: {} } }), [
        { path: "/.well-known/oauth-protected-resource/keycloak/mcp" }
      ])
      const body = JSON.parse(String(doc!.response.body))
      assert.strictEqual(body.resource, "http://127.0.0.1:3000/keycloak/mcp")
      // A provider adapter makes the gateway the authorization server the client talks to.
      assert.deepStrictEqual(body.authorization_servers, ["http://127.0.0.1:3000/keycloak/mcp"])
    }))

  it.effect("a valid token: forwarded without it, kept for passthrough, claims and identity set", () =>
    Effect.gen(function*() {
      const jwt = yield* token()
      const [out, again] = yield* run(config(), [
        { method: "POST", path: "/stdio/mcp", headers: { authorization: `Bearer ${jwt}` } },
        { method: "POST", path: "/stdio/mcp", headers: { authorization: `Bearer ${jwt}` } }
      ])
      assert.strictEqual(out!.response.status, 200)
      const ctx = out!.forwarded!
      assert.isUndefined(ctx.headers["authorization"])
      assert.strictEqual(ctx.validatedJwt, jwt)
      assert.strictEqual(ctx.identity, `jwt:${ISSUER}|alice`)
      assert.isDefined(ctx.celExtensions?.jwt)
      // The second request is served from the verified-token cache, with the same effect.
      assert.strictEqual(again!.forwarded?.validatedJwt, jwt)
    }))

  it.effect("wrong audience, wrong issuer, expired, garbage: 401 with the challenge", () =>
    Effect.gen(function*() {
      const bad = [yield* token({ aud: "http://elsewhere/mcp" }), yield* token({ iss: "https://evil" }), yield* token({ exp: -120 }), "not.a.jwt"]
      const outs = yield* run(config(), bad.map((t) => ({ method: "POST", path: "/stdio/mcp", headers: { authorization: `Bearer ${t}` } })))
      for (const out of outs) {
        assert.strictEqual(out.response.status, 401)
        assert.strictEqual(out.response.body, UNAUTHORIZED)
        assert.isUndefined(out.forwarded)
      }
    }))

  it.effect("optional passes a request without a token but not a bad one; permissive passes both", () =>
    Effect.gen(function*() {
      const wrong = yield* token({ aud: "x" })
      const spec = (t?: string): RequestSpec => ({ method: "POST", path: "/mcp", ...(t === undefined ? {} : { headers: { authorization: `Bearer ${t}` } }) })
      const [none, bad] = yield* run(config({ mode: "optional" }), [spec(), spec(wrong)])
      assert.strictEqual(none!.response.status, 200)
      assert.strictEqual(bad!.response.status, 401)
      const [pNone, pBad] = yield* run(config({ mode: "permissive" }), [spec(), spec(wrong)])
      assert.strictEqual(pNone!.response.status, 200)
      assert.strictEqual(pBad!.response.status, 200)
      assert.isUndefined(pBad!.forwarded?.validatedJwt)
    }))

  it("metadata keys become snake_case as upstream's heck does", () => {
    assert.strictEqual(McpAuthentication.snakeCase("scopesSupported"), "scopes_supported")
    assert.strictEqual(McpAuthentication.snakeCase("mcpResourceURI"), "mcp_resource_uri")
    assert.strictEqual(McpAuthentication.snakeCase("resource"), "resource")
    assert.strictEqual(McpAuthentication.snakeCase("already_snake"), "already_snake")
  })
})
