/**
 * Origin and Host checks in front of the MCP frontends: always-on Origin well-formedness, and
 * `dnsRebindingProtection` (agentgateway `mcp/dns_rebinding.rs` cases).
 */
import { describe, expect, it } from "vitest"
import { check, INVALID_ORIGIN_MESSAGE, REBINDING_MESSAGE } from "../../src/mcp/Origin.ts"
import { request } from "../support/Requests.ts"

const verdict = (authority: string, origin: string | Array<string> | undefined, protect: boolean) => {
  const r = check(request({ authority, headers: origin === undefined ? {} : { origin } }), protect)
  return r === undefined ? "pass" : `${r.status} ${String(r.body)}`
}

describe("MCP Origin checks", () => {
  it("accepts localhost authorities and origins under dnsRebindingProtection", () => {
    for (const host of ["localhost", "localhost:8080", "127.0.0.1", "127.0.0.1:9", "[::1]", "[::1]:8080", "LOCALHOST:1"]) {
      expect(verdict(host, undefined, true)).toBe("pass")
    }
    expect(verdict("127.0.0.1:8080", "http://localhost:8080", true)).toBe("pass")
    expect(verdict("127.0.0.1", "http://127.0.0.1", true)).toBe("pass")
    expect(verdict("localhost", "https://[::1]:3000", true)).toBe("pass")
  })

  it("refuses other authorities and origins under dnsRebindingProtection", () => {
    const denied = `403 ${REBINDING_MESSAGE}`
    for (const host of ["evil.com", "evil.com:443", "localhost.evil.com", "[::1].evil.example", "127.0.0.1.nip.io", "localhost:abc", ""]) {
      expect(verdict(host, undefined, true)).toBe(denied)
    }
    for (const origin of ["null", "http://evil.com", "http://[::1].evil.example", "http://[::1]garbage", "http://localhost/path", "ftp://localhost", "http://user@localhost", "http://localhost.evil.com"]) {
      expect(verdict("localhost", origin, true)).toBe(denied)
    }
    expect(verdict("localhost", ["http://localhost", "http://evil.example"], true)).toBe(denied)
  })

  it("without the protection refuses only malformed or duplicate origins", () => {
    expect(verdict("mcp.example.com", undefined, false)).toBe("pass")
    expect(verdict("mcp.example.com", "https://app.example.com", false)).toBe("pass")
    expect(verdict("mcp.example.com", "null", false)).toBe("pass")
    const invalid = `403 ${INVALID_ORIGIN_MESSAGE}`
    for (const origin of ["garbage", "http://a.example, http://b.example", "http://a.example/path", "javascript:alert(1)"]) {
      expect(verdict("mcp.example.com", origin, false)).toBe(invalid)
    }
    expect(verdict("mcp.example.com", ["https://a.example", "https://a.example"], false)).toBe(invalid)
  })
})
