/**
 * Per-target MCP policies without sockets: the header edit a target's `backendAuth` and
 * `requestHeaderModifier` make on a call's context (with and without a downstream request),
 * the aws signer handed to the transport, the accumulated authorizer, and the config errors
 * (path and reason) for what upstream refuses on targets.
 */
import { describe, expect, it } from "@effect/vitest"
import aws4 from "aws4"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { validate } from "../../src/Gateway.ts"
import type * as Ir from "../../src/ir/Ir.ts"
import type { BuildEnv } from "../../src/pipeline/Policy.ts"
import { allowAll } from "../../src/mcp/Hooks.ts"
import * as TargetPolicies from "../../src/mcp/TargetPolicies.ts"
import { request } from "../support/Requests.ts"

const env: BuildEnv = {
  maxBufferSize: 1024,
  backendCall: () => Effect.die("unused"),
  resolveBackend: () => Effect.die("unused")
}

const target = (policies: Ir.McpTargetPolicies): Ir.McpTarget => ({
  name: "a",
  path: "t",
  transport: { _tag: "StreamableHttp", target: { _tag: "Host", host: "127.0.0.1", port: 1, isHostname: false }, path: "/mcp", tls: false },
  policies
})

const editOf = (policies: Ir.McpTargetPolicies) =>
  Effect.flatMap(TargetPolicies.editor(target(policies), "127.0.0.1:1", env), (edit) => (edit === undefined ? Effect.die("no edit") : Effect.succeed(edit)))

describe("TargetPolicies.editor", () => {
  it.effect("key then header modifier, on a copy of the forwarded headers", () =>
    Effect.gen(function*() {
      const edit = yield* editOf({ backendAuth: { key: "k1" }, requestHeaderModifier: { set: { "x-t": "a" }, remove: ["x-drop"] } })
      const forwarded = { "x-drop": "1", "x-keep": "2" }
      const out = yield* edit({ headers: forwarded, protocolVersion: undefined, request: request() })
      expect(out.headers).toEqual({ "x-keep": "2", authorization: "Bearer k1", "x-t": "a", host: "127.0.0.1:1" })
      expect(forwarded).toEqual({ "x-drop": "1", "x-keep": "2" })
    }).pipe(Effect.scoped))

  it.effect("passthrough re-adds the validated JWT, and adds nothing without one", () =>
    Effect.gen(function*() {
      const edit = yield* editOf({ backendAuth: { passthrough: {} } })
      const withJwt = request()
      withJwt.validatedJwt = "jwt.token"
      expect((yield* edit({ headers: {}, protocolVersion: undefined, request: withJwt })).headers?.["authorization"]).toBe("Bearer jwt.token")
      expect((yield* edit({ headers: {}, protocolVersion: undefined, request: request() })).headers?.["authorization"]).toBeUndefined()
    }).pipe(Effect.scoped))

  it.effect("no edit without header policies", () =>
    Effect.map(TargetPolicies.editor(target({}), undefined, env), (edit) => expect(edit).toBeUndefined()).pipe(Effect.scoped))

  it.effect("without a downstream request: key and header edits apply, passthrough adds nothing", () =>
    Effect.gen(function*() {
      const keyed = yield* editOf({ backendAuth: { key: "k1" }, requestHeaderModifier: { set: { "x-t": "a" } } })
      expect((yield* keyed({ headers: undefined, protocolVersion: undefined })).headers).toEqual({ authorization: "Bearer k1", "x-t": "a", host: "127.0.0.1:1" })
      const passthrough = yield* editOf({ backendAuth: { passthrough: {} } })
      expect((yield* passthrough({ headers: undefined, protocolVersion: undefined })).headers?.["authorization"]).toBeUndefined()
    }).pipe(Effect.scoped))

  it.effect("aws: the edit hands the transport a signer, which signs the request as sent", () =>
    Effect.gen(function*() {
      const credentials = { accessKeyId: "AKIDTARGET", secretAccessKey: "target-secret" }
      const edit = yield* editOf({
        backendAuth: { aws: { ...credentials, region: "eu-west-1", serviceName: "execute-api" } },
        requestHeaderModifier: { set: { "x-amz-target": "Mcp.Call" } }
      })
      for (const downstream of [request({ headers: { authorization: "Bearer client" } }), undefined]) {
        const call = yield* edit({ headers: { authorization: "Bearer client", "x-keep": "1" }, protocolVersion: undefined, request: downstream })
        // Nothing is signed yet: the transport builds the request.
        expect(call.headers?.["authorization"]).toBe("Bearer client")
        expect(call.sign).toBeDefined()
        const headers: Record<string, string | Array<string>> = { ...call.headers, host: "127.0.0.1:1", "content-type": "application/json" }
        const body = Buffer.from(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
        yield* call.sign!({ method: "POST", path: "/mcp?x=1", headers, body })
        const auth = String(headers["authorization"])
        expect(auth).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDTARGET\/\d{8}\/eu-west-1\/execute-api\/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, /)
        const check = new aws4.RequestSigner(
          {
            method: "POST",
            path: "/mcp?x=1",
            headers: { "content-type": "application/json", host: "127.0.0.1:1", "x-amz-date": String(headers["x-amz-date"]), "x-amz-target": "Mcp.Call" },
            body,
            service: "execute-api",
            region: "eu-west-1",
            doNotModifyHeaders: true
          },
          credentials
        )
        check.datetime = String(headers["x-amz-date"])
        check.sign()
        expect(auth).toBe(check.request.headers?.["Authorization"])
        expect(headers["x-keep"]).toBe("1")
      }
    }).pipe(Effect.scoped))
})

describe("TargetPolicies.authorizer", () => {
  it.effect("a target's rules hide only that target's items, on top of the backend's", () =>
    Effect.gen(function*() {
      const backend: typeof allowAll = (item) => item.name !== "pid"
      const b: Ir.McpTarget = { ...target({ mcpAuthorization: { rules: [{ deny: 'mcp.tool.name == "echo"' }] } }), name: "b" }
      const authorize = yield* TargetPolicies.authorizer(backend, [target({}), b])
      const req = request()
      expect(authorize({ kind: "tool", target: "a", name: "echo" }, req)).toBe(true)
      expect(authorize({ kind: "tool", target: "b", name: "echo" }, req)).toBe(false)
      expect(authorize({ kind: "tool", target: "b", name: "other" }, req)).toBe(true)
      expect(authorize({ kind: "tool", target: "a", name: "pid" }, req)).toBe(false)
      // Without target rules the backend's authorizer is kept as is (allowAll keeps lists verbatim).
      expect(yield* TargetPolicies.authorizer(allowAll, [target({})])).toBe(allowAll)
    }))
})

/** The first config issue of a YAML text, as `path: message`, or "valid". */
const firstIssue = async (text: string): Promise<string> => {
  const exit = await Effect.runPromiseExit(validate({ _tag: "Inline", text }, () => undefined))
  if (Exit.isSuccess(exit)) return "valid"
  const error = Cause.squash(exit.cause)
  const issues = typeof error === "object" && error !== null && "issues" in error && Array.isArray(error.issues) ? error.issues : []
  const issue: unknown = issues[0]
  return typeof issue === "object" && issue !== null && "path" in issue && "message" in issue ? `${String(issue.path)}: ${String(issue.message)}` : String(error)
}

const withTarget = (target: string, extra = "") => `
${extra}
binds:
- port: 3000
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - ${target}
`
const AT = "binds[0].listeners[0].routes[0].backends[0].mcp.targets[0]"

describe("per-target policies in the config", () => {
  it("accepts the connection policies upstream allows on HTTP targets", async () => {
    expect(await firstIssue(withTarget(`{name: a, mcp: {host: "http://127.0.0.1:1/mcp"}, policies: {backendAuth: {key: k}, requestHeaderModifier: {set: {x: y}}}}`))).toBe("valid")
  })

  it("refuses mcpAuthorization inline on a target, pointing at where it belongs", async () => {
    const issue = await firstIssue(withTarget(`{name: a, mcp: {host: "http://127.0.0.1:1/mcp"}, policies: {mcpAuthorization: {rules: ["true"]}}}`))
    expect(issue).toContain(`${AT}.policies.mcpAuthorization`)
    expect(issue).toContain("mcpAuthorization is not allowed on an MCP target: it applies to the full target set")
  })

  it("refuses policies on stdio targets", async () => {
    expect(await firstIssue(withTarget(`{name: a, stdio: {cmd: x}, policies: {backendAuth: {key: k}}}`))).toBe(`${AT}.policies.backendAuth: policies are not supported on stdio targets`)
  })

  it("accepts aws signing on HTTP targets", async () => {
    const aws = `{backendAuth: {aws: {accessKeyId: a, secretAccessKey: b, region: r}}}`
    expect(await firstIssue(withTarget(`{name: a, mcp: {host: "http://127.0.0.1:1/mcp"}, policies: ${aws}}`))).toBe("valid")
    expect(await firstIssue(withTarget(`{name: a, sse: {host: "http://127.0.0.1:1/sse"}, policies: ${aws}}`))).toBe("valid")
  })

  it("aws on an MCP backend needs an HTTP target to sign for", async () => {
    const backendWith = (target: string) => `
backends:
- name: m
  policies: {backendAuth: {aws: {accessKeyId: a, secretAccessKey: b, region: r}}}
  mcp: {targets: [${target}]}
binds:
- port: 3000
  listeners:
  - routes:
    - backends: [{backend: m}]
`
    expect(await firstIssue(backendWith(`{name: a, stdio: {cmd: x}}`))).toBe("binds[0].listeners[0].routes[0].backends[0].policies.backendAuth: this backendAuth signs HTTP requests, and every target of this MCP backend is stdio")
    expect(await firstIssue(backendWith(`{name: a, mcp: {host: "http://127.0.0.1:1/mcp"}}`))).toBe("valid")
  })

  it("resolves {backend: name} targets against host backends only", async () => {
    expect(await firstIssue(withTarget(`{name: a, mcp: {backend: nowhere}}`))).toBe(`${AT}.mcp: backend "nowhere" is not defined in backends`)
    expect(await firstIssue(withTarget(`{name: a, openapi: {schema: "{}", backend: other}}`, "backends:\n- {name: other, mcp: {targets: []}}")))
      .toBe(`${AT}.openapi: backend "other" is not a host backend`)
    expect(await firstIssue(withTarget(`{name: a, sse: {backend: up, path: /events}}`, "backends:\n- {name: up, host: \"127.0.0.1:9\"}"))).toBe("valid")
  })

  it("checks policies targeting a section: the backend, the target and the policy", async () => {
    const named = (section: string, policy: string) => `
backends:
- name: fed
  mcp:
    targets:
    - {name: a, mcp: {host: "http://127.0.0.1:1/mcp"}}
policies:
- name: {name: p, namespace: default}
  target: {backend: {backend: {name: fed, namespace: default, section: ${section}}}}
  policy: ${policy}
`
    expect(await firstIssue(named("a", `{mcpAuthorization: {rules: ["true"]}}`))).toBe("valid")
    expect(await firstIssue(named("b", `{backendAuth: {key: k}}`))).toBe(`policies[0].target.backend.backend.section: backend "fed" has no MCP target "b"`)
    expect(await firstIssue(named("a", `{cors: {allowOrigins: ["*"]}}`))).toBe(
      "policies[0].policy.cors: a policy targeting an MCP target (section) must be one of: requestHeaderModifier, backendTLS, backendAuth, mcpAuthorization"
    )
  })
})
