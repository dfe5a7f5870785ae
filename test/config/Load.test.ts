/**
 * The loader's error reporting and `$VAR` expansion.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { describe, expect, it } from "vitest"
import { type ConfigIssue, formatIssue } from "../../src/config/ConfigError.ts"
import type * as Env from "../../src/config/Env.ts"
import * as Load from "../../src/config/Load.ts"
import { loadIr } from "../../src/Gateway.ts"

const env = (vars: Record<string, string>): Env.Lookup => (name) => vars[name]

const issues = (text: string, vars: Record<string, string> = {}): ReadonlyArray<ConfigIssue> => {
  const exit = Effect.runSyncExit(loadIr(text, "config.yaml", env(vars)))
  if (Exit.isSuccess(exit)) throw new Error("expected a config error")
  const failure = exit.cause.reasons[0]
  if (failure === undefined || failure._tag !== "Fail") throw new Error(String(exit.cause))
  return failure.error.issues
}
const messages = (text: string, vars: Record<string, string> = {}) => issues(text, vars).map(formatIssue)
const load = (text: string, vars: Record<string, string> = {}) => Effect.runSync(Load.parse(text, "config.yaml", env(vars))).config

const bind = (route: string) => `binds:
- port: 3000
  listeners:
  - routes:
    - ${route}
`

describe("config errors", () => {
  it("unknown field: file:line:column, path and name", () => {
    expect(messages(bind("backends:\n      - hots: 127.0.0.1:1"))).toEqual([
      'config.yaml:6:9 binds[0].listeners[0].routes[0].backends[0]: unknown field "hots"'
    ])
  })

  it("wrong type", () => {
    expect(messages("binds:\n- port: abc\n  listeners: []\n")).toEqual(['config.yaml:2:9 binds[0].port: Expected number, got "abc"'])
  })

  it("missing required field", () => {
    expect(messages("binds:\n- port: 3000\n")).toEqual(['config.yaml:2:3 binds[0]: missing required field "listeners"'])
  })

  it("bad duration", () => {
    const [issue] = messages(bind("policies:\n        cors: {maxAge: 10 parsecs}"))
    expect(issue).toContain("binds[0].listeners[0].routes[0].policies.cors.maxAge")
    expect(issue).toContain('invalid duration "10 parsecs"')
  })

  it("alternatives: exactly one of exact, pathPrefix, regex", () => {
    const [issue] = messages(bind("matches:\n      - path: {exact: /a, pathPrefix: /b}"))
    expect(issue).toBe("config.yaml:6:9 binds[0].listeners[0].routes[0].matches[0].path: only one of exact, pathPrefix may be set")
  })

  it("invalid regex is reported at the match", () => {
    const [issue] = messages(bind("matches:\n      - path: {regex: \"(\"}"))
    expect(issue).toMatch(/^config\.yaml:6:\d+ binds\[0\]\.listeners\[0\]\.routes\[0\]\.matches\[0\]\.path\.regex: invalid regular expression/)
  })

  it("YAML syntax errors and duplicate keys carry their line", () => {
    expect(messages("binds:\n- port: 3000\n  listeners: [\n")[0]).toMatch(/^config\.yaml:4:\d+ /)
    expect(messages("binds: []\nbinds: []\n")[0]).toMatch(/^config\.yaml:2:1 .*[Mm]ap keys must be unique/)
  })

  it("frontendPolicies.tls: handshakeTimeout must be positive; the fields not implemented are refused by name", () => {
    expect(messages("frontendPolicies:\n  tls: {handshakeTimeout: 0s}\nbinds: []\n")).toEqual([
      "config.yaml:2:27 frontendPolicies.tls.handshakeTimeout: must be longer than 0s (Node would read 0 as its own 120 s default)"
    ])
    expect(messages("frontendPolicies:\n  tls: {alpn: [[104, 50]]}\nbinds: []\n")[0]).toContain("frontendPolicies.tls.alpn is not supported yet")
    expect(Exit.isSuccess(Effect.runSyncExit(loadIr("frontendPolicies:\n  tls: {handshakeTimeout: 5s}\nbinds: []\n", "config.yaml", env({}))))).toBe(true)
  })

  it("every error is reported at once", () => {
    expect(messages("binds:\n- port: abc\n  listeners: []\n  bogus: 1\n")).toHaveLength(2)
  })
})

describe("environment expansion", () => {
  it("expands $VAR, ${VAR} and ${VAR:-default} in values", () => {
    const config = load(
      `config:\n  adminAddr: "$HOST:\${PORT}"\n  statsAddr: \${STATS:-127.0.0.1:9}\n  readinessAddr: "\${READY:-off}"\n`,
      { HOST: "127.0.0.1", PORT: "15000", READY: "127.0.0.1:8" }
    )
    expect(config.config?.adminAddr).toBe("127.0.0.1:15000")
    expect(config.config?.statsAddr).toBe("127.0.0.1:9")
    expect(config.config?.readinessAddr).toBe("127.0.0.1:8")
  })

  it("re-types unquoted scalars (port: $PORT is a number) but keeps quoted ones strings", () => {
    expect(load("binds:\n- port: $PORT\n  listeners: []\n", { PORT: "3000" }).binds?.[0]?.port).toBe(3000)
    expect(messages('binds:\n- port: "$PORT"\n  listeners: []\n', { PORT: "3000" })[0]).toContain('Expected number, got "3000"')
  })

  it("an undefined variable is an error naming it and its line", () => {
    expect(messages("config:\n  adminAddr: $NOPE\n")).toEqual(['config.yaml:2:14 environment variable "NOPE" is not defined'])
  })

  it("a `$` not followed by a name is left alone; values cannot inject YAML structure", () => {
    expect(load('config:\n  adminAddr: "a$ b"\n').config?.adminAddr).toBe("a$ b")
    expect(load("config:\n  adminAddr: $X\n", { X: "{statsAddr: off}" }).config?.adminAddr).toBe("{statsAddr: off}")
  })
})

describe("input formats", () => {
  it("JSON is YAML", () => {
    expect(load('{"binds": [{"port": 3000, "listeners": []}]}').binds?.[0]?.port).toBe(3000)
  })
  it("an empty document is an empty config", () => {
    expect(load("")).toEqual({})
  })
})
