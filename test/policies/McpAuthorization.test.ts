import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Schema } from "effect"
import * as CelContext from "../../src/cel/Context.ts"
import * as Functions from "../../src/cel/Functions.ts"
import { allowAll, type Authorizer, type Item } from "../../src/mcp/Hooks.ts"
import * as McpAuthorization from "../../src/policies/McpAuthorization.ts"
import { request, type RequestSpec } from "../support/Requests.ts"

const PATH = "backends[0].policies.mcpAuthorization"

const build = (rules: ReadonlyArray<unknown>) =>
  McpAuthorization.authorizer(Schema.decodeUnknownSync(McpAuthorization.Config)({ rules }), PATH)

const tool = (name: string, target = "srv"): Item => ({ kind: "tool", target, name })

const decide = (authorize: Authorizer, items: ReadonlyArray<Item>, spec: RequestSpec = {}, jwt?: unknown) => {
  const req = request(spec)
  if (jwt !== undefined) CelContext.attach(req, "jwt", Functions.fromJson(jwt))
  return items.map((i) => `${i.kind}:${i.name}=${authorize(i, req)}`)
}

describe("mcpAuthorization", () => {
  it.effect("without rules everything is allowed (and lists pass through untouched)", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* McpAuthorization.authorizer(undefined, PATH), allowAll)
      assert.strictEqual(yield* build([]), allowAll)
    }))

  it.effect("an allow-list shows only what it names; other item kinds are outside it", () =>
    Effect.gen(function*() {
      const authorize = yield* build([`mcp.tool.name == "echo"`, { allow: `mcp.prompt.name == "greet" && mcp.prompt.target == "srv"` }])
      assert.deepStrictEqual(decide(authorize, [tool("echo"), tool("add"), { kind: "prompt", target: "srv", name: "greet" }, { kind: "prompt", target: "other", name: "greet" }, { kind: "resource", target: "srv", name: "file:///a" }]), [
        "tool:echo=true",
        "tool:add=false",
        "prompt:greet=true",
        "prompt:greet=false",
        "resource:file:///a=false"
      ])
    }))

  it.effect("deny and require rules, with jwt and request roots", () =>
    Effect.gen(function*() {
      const authorize = yield* build([
        { deny: `has(mcp.tool) && mcp.tool.name == "rm"` },
        { require: `jwt.sub == "alice"` },
        `mcp.resource.name.startsWith("file:///pub/") || request.headers["x-admin"] == "yes"`
      ])
      const items = [tool("rm"), tool("ls"), { kind: "resource" as const, target: "fs", name: "file:///pub/a" }]
      assert.deepStrictEqual(decide(authorize, items, {}, { sub: "alice" }), ["tool:rm=false", "tool:ls=false", "resource:file:///pub/a=true"])
      assert.deepStrictEqual(decide(authorize, items, { headers: { "x-admin": "yes" } }, { sub: "alice" }), ["tool:rm=false", "tool:ls=true", "resource:file:///pub/a=true"])
      // require: no jwt at all is not "true".
      assert.deepStrictEqual(decide(authorize, items, { headers: { "x-admin": "yes" } }), ["tool:rm=false", "tool:ls=false", "resource:file:///pub/a=false"])
    }))

  it.effect("a deny rule that errors denies (stricter than upstream); an allow rule that errors does not allow", () =>
    Effect.gen(function*() {
      const deny = yield* build([{ deny: `request.headers["x-tier"] == "free"` }])
      assert.deepStrictEqual(decide(deny, [tool("echo")]), ["tool:echo=false"])
      assert.deepStrictEqual(decide(deny, [tool("echo")], { headers: { "x-tier": "paid" } }), ["tool:echo=true"])
      const allow = yield* build([`jwt.sub == "bob"`])
      assert.deepStrictEqual(decide(allow, [tool("echo")]), ["tool:echo=false"])
    }))

  it.effect("exposes mcp.methodName and mcp.sessionId, and restores the request's mcp root afterwards", () =>
    Effect.gen(function*() {
      const authorize = yield* build([`mcp.methodName == "tools/list" && mcp.sessionId == "s1"`])
      const req = request()
      req.mcp = { method: "tools/list", target: undefined, toolName: undefined, sessionId: "s1" }
      assert.isTrue(authorize(tool("echo"), req))
      assert.isUndefined(req.celExtensions?.mcp)
      req.mcp = { method: "tools/call", target: undefined, toolName: undefined, sessionId: undefined }
      CelContext.attach(req, "mcp", "before")
      assert.isFalse(authorize(tool("echo"), req))
      assert.strictEqual(req.celExtensions?.mcp, "before")
    }))

  it.effect("a bad expression is a ConfigError naming the rule", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(build([`mcp.tool.name == "a"`, { deny: `mcp.tool.name ==` }]))
      assert.isTrue(Exit.isFailure(exit))
      const text = String(Exit.isFailure(exit) ? exit.cause : "")
      assert.include(text, `${PATH}.rules[1].deny`)
      assert.include(text, `invalid CEL expression "mcp.tool.name =="`)
    }))
})
