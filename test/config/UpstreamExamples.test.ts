/**
 * Every upstream example config either decodes, or is rejected with a precise message naming a
 * field this gateway does not support yet. The table is the current state: when a feature
 * lands and an example gets further, this test fails until the table is updated, so the list
 * only shrinks on purpose.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { ConfigIssue } from "../../src/config/ConfigError.ts"
import { BODY_IDLE_TIMEOUT_ENV, SEND_TIMEOUT_ENV } from "../../src/config/Normalize.ts"
import { validate } from "../../src/Gateway.ts"

const dir = path.resolve(import.meta.dirname, "../../../shared/reference/agentgateway/examples")

/** Files under examples/ that are not agentgateway configs. */
const NOT_CONFIGS = new Set(["mcp-telemetry/otel-collector-config.yaml", "traffic-ratelimiting-global/ratelimit-config.yaml"])

type Expected = "valid" | { readonly path: string; readonly unsupported: string } | { readonly path: string; readonly error: RegExp }

/** The first issue of each rejected example (issues are sorted by position in the file). */
const EXPECTED: Record<string, Expected> = {
  "fault-injection/config.yaml": "valid",
  "llm-basic/config.yaml": { path: "llm", unsupported: "llm (the LLM gateway)" },
  "llm-cost-routing/config.yaml": { path: "llm", unsupported: "llm (the LLM gateway)" },
  "llm-ollama-postgres/config.yaml": { path: "config.database", unsupported: "config.database" },
  "llm-prompt-enrichment/config.yaml": { path: "binds[0].listeners[0].routes[0].backends[0].ai", unsupported: "ai backends (LLM gateway)" },
  "llm-prompt-guard/azure-content-safety-config.yaml": { path: "binds[0].listeners[0].routes[0].backends[0].ai", unsupported: "ai backends (LLM gateway)" },
  "llm-prompt-guard/bedrock-config.yaml": { path: "binds[0].listeners[0].routes[0].backends[0].ai", unsupported: "ai backends (LLM gateway)" },
  "llm-prompt-guard/config.yaml": { path: "binds[0].listeners[0].routes[0].backends[0].ai", unsupported: "ai backends (LLM gateway)" },
  "llm-prompt-guard/model-armor-config.yaml": { path: "binds[0].listeners[0].routes[0].backends[0].ai", unsupported: "ai backends (LLM gateway)" },
  "llm-standalone-epp/config.yaml": { path: "services", unsupported: "services" },
  "mcp-apps/config-multiplex.yaml": "valid",
  "mcp-apps/config.yaml": "valid",
  // Scenario B's target is https (test/e2e/McpAuthentication.test.ts runs the example against local peers).
  "mcp-authentication/config.yaml": "valid",
  // Its JWKS path is relative to agentgateway's repository root (the e2e test points it at a local file).
  "mcp-authorization/config.yaml": { path: "binds[0].listeners[0].routes[0].policies.jwtAuth.jwks.file", error: /^cannot read \.\/manifests\/jwt\/pub-key/ },
  "mcp-basic/config.yaml": "valid",
  "mcp-multiplex/config.yaml": "valid",
  "mcp-openapi/config.yaml": "valid",
  "mcp-telemetry/config.yaml": "valid",
  // Its certificate paths are relative to agentgateway's repository root.
  "mcp-tls/config.yaml": { path: "binds[0].listeners[0].tls.cert", error: /^cannot read examples\/mcp-tls\/certs\/cert\.pem/ },
  "traffic-a2a/config.yaml": "valid",
  "traffic-aws-agentcore/config.yaml": { path: "binds[0].listeners[0].routes[0].backends[0].aws", unsupported: "aws backends" },
  "traffic-egress-proxy/config-conditional.yaml": { path: "tcpRoutes", unsupported: "tcpRoutes" },
  "traffic-egress-proxy/config-dynamic-tls.yaml": { path: "binds[1].listeners[0].routes[0].backends[0].dynamic", unsupported: "dynamic backends" },
  "traffic-egress-proxy/config.yaml": { path: "tcpRoutes", unsupported: "tcpRoutes" },
  "traffic-http/config.yaml": "valid",
  "traffic-jwt-sign/config.yaml": { path: "binds[0].listeners[0].routes[0].policies.backendAuth.jwtSign", unsupported: "backendAuth.jwtSign" },
  "traffic-oauth2-proxy/config.yaml": "valid",
  "traffic-oidc/config.yaml": { path: "binds[0].listeners[0].routes[0].policies.oidc", unsupported: "policy oidc" },
  "traffic-ratelimiting-global/config.yaml": "valid",
  "traffic-ratelimiting-local/config.yaml": "valid",
  "traffic-spiffe/config.yaml": { path: "config.spiffe", unsupported: "config.spiffe" },
  "traffic-tailscale-auth/config.yaml": { path: "binds[0].listeners[0].routes[0].policies.extAuthz.host", unsupported: "unix socket backends" },
  "traffic-unified-gateway/config.yaml": { path: "llm", unsupported: "llm (the LLM gateway)" },
}

const examples = fs
  .readdirSync(dir)
  .flatMap((d) => fs.readdirSync(path.join(dir, d)).filter((f) => f.endsWith(".yaml")).map((f) => `${d}/${f}`))
  .filter((f) => !NOT_CONFIGS.has(f))
  .sort()

const issuesOf = async (file: string): Promise<ReadonlyArray<ConfigIssue> | "valid"> => {
  // Upstream examples read API keys from the environment: any variable is defined here, except
  // SESSION_KEY, which must be 64 hex chars when set, and WORKER_THREADS, a count (none of the examples sets them).
  const exit = await Effect.runPromiseExit(
    validate({ _tag: "File", path: path.join(dir, file), watch: false }, (name) => (name === "SESSION_KEY" || name === "WORKER_THREADS" || name === BODY_IDLE_TIMEOUT_ENV || name === SEND_TIMEOUT_ENV ? undefined : "dummy"))
  )
  if (Exit.isSuccess(exit)) return "valid"
  const error = Cause.squash(exit.cause)
  if (typeof error === "object" && error !== null && "issues" in error && Array.isArray(error.issues)) return error.issues as ReadonlyArray<ConfigIssue>
  throw new Error(`${file}: not a config error: ${String(error)}`)
}

describe("upstream example configs", () => {
  // Upstream's examples name files relative to its repository root (`./examples/mcp-openapi/openapi.json`),
  // where its binary runs from: so does this test.
  const cwd = process.cwd()
  beforeAll(() => process.chdir(path.dirname(dir)))
  afterAll(() => process.chdir(cwd))

  it("the table lists exactly the examples there are", () => {
    expect(Object.keys(EXPECTED).sort()).toEqual(examples)
  })

  it.each(examples)("%s", async (file) => {
    const expected = EXPECTED[file]
    const issues = await issuesOf(file)
    if (expected === "valid" || issues === "valid") {
      expect(issues).toBe(expected)
      return
    }
    if (expected !== undefined && "error" in expected) {
      expect(issues[0]!.path).toBe(expected.path)
      expect(issues[0]!.message).toMatch(expected.error)
      return
    }
    // Every rejection names a field, its line, and says it is not supported yet.
    for (const issue of issues) {
      expect(issue.path).not.toBe("")
      expect(issue.line).toBeGreaterThan(0)
      expect(issue.file).toBe(path.join(dir, file))
      expect(issue.message).toMatch(/is not supported yet by effect-agentgateway$/)
    }
    expect({ path: issues[0]!.path, unsupported: issues[0]!.message.replace(" is not supported yet by effect-agentgateway", "") }).toEqual(expected)
  })
})
