/**
 * config_dump redaction against the secret fields each policy declares (`SECRET_PATHS`): a
 * policy that adds a secret field lists it there, and this test fails until `Ops.redact`
 * removes it.
 */
import { describe, expect, it } from "vitest"
import * as Ops from "../../src/admin/Ops.ts"
import * as BackendAuth from "../../src/policies/BackendAuth.ts"
import * as McpAuthentication from "../../src/policies/McpAuthentication.ts"

const SECRET = "s3cr3t-value"

/** `{a: {b: [ {c: SECRET} ]}}` for the path `a.b[].c`. */
const place = (path: string): unknown => {
  const [head, ...rest] = path.split(".")
  const inner = rest.length === 0 ? SECRET : place(rest.join("."))
  return head!.endsWith("[]") ? { [head!.slice(0, -2)]: [inner] } : { [head!]: inner }
}

describe("config_dump redaction", () => {
  for (const [policy, paths] of [["backendAuth", BackendAuth.SECRET_PATHS], ["mcpAuthentication", McpAuthentication.SECRET_PATHS]] as const) {
    for (const path of paths) {
      it(`${policy}.${path}`, () => {
        const dumped = JSON.stringify(Ops.redact({ routes: [{ policies: { [policy]: place(path) } }] }))
        expect(dumped).not.toContain(SECRET)
        expect(dumped).toContain(Ops.REDACTED)
      })
    }
  }

  it("keeps the structure around a secret and strips URL userinfo", () => {
    expect(Ops.redact({ key: { value: SECRET, location: { header: { name: "x-api-key" } } } })).toEqual({
      key: { value: Ops.REDACTED, location: { header: { name: "x-api-key" } } }
    })
    expect(Ops.redact({ redis: { url: `redis://user:${SECRET}@127.0.0.1:6379` } })).toEqual({ redis: { url: `redis://${Ops.REDACTED}@127.0.0.1:6379` } })
  })
})
