/**
 * Header maps: every header name is an own data property (prototype-named ones included), the
 * maps inherit nothing, and they serialise as plain records (CEL `toJson`, access-log fields).
 */
import { describe, expect, it } from "vitest"
import * as Functions from "../../src/cel/Functions.ts"
import * as Headers from "../../src/shared/headers.ts"

describe("Headers.empty", () => {
  it("keeps __proto__, constructor and Object.prototype member names as plain headers", () => {
    const h = Headers.empty()
    for (const name of ["__proto__", "constructor", "tostring", "toString", "hasOwnProperty", "valueOf"]) Headers.set(h, name, `v-${name}`)
    expect(Object.keys(h)).toEqual(["__proto__", "constructor", "tostring", "toString", "hasOwnProperty", "valueOf"])
    expect(Object.getOwnPropertyDescriptor(h, "__proto__")?.value).toBe("v-__proto__")
    expect(Object.getPrototypeOf(h)).toBe(Headers.PROTOTYPE)
    expect(Object.prototype.hasOwnProperty.call(Object.prototype, "v-__proto__")).toBe(false)
  })

  it("inherits nothing: no member of Object.prototype reads through a missing header", () => {
    const h = Headers.empty()
    for (const name of ["constructor", "toString", "hasOwnProperty", "__proto__", "__defineGetter__"]) {
      expect(Headers.get(h, name)).toBeUndefined()
      expect(name in h).toBe(false)
    }
    expect(Object.isFrozen(Headers.PROTOTYPE)).toBe(true)
    expect(Object.getPrototypeOf(Headers.PROTOTYPE)).toBeNull()
    const copy = Headers.copyEndToEnd({ "x-a": "1", connection: "x-b", "x-b": "2", "set-cookie": ["a", "b"] })
    expect({ ...copy }).toEqual({ "x-a": "1", "set-cookie": ["a", "b"] })
  })

  it("serialises as a plain record, as CEL toJson and the access log need", () => {
    const h = Headers.empty()
    Headers.append(h, "x-a", "1")
    Headers.append(h, "x-a", "2")
    Headers.set(h, "constructor", "c")
    expect(Functions.toJsonValue({ headers: h })).toEqual({ headers: { "x-a": ["1", "2"], constructor: "c" } })
    expect(JSON.parse(JSON.stringify(h))).toEqual({ "x-a": ["1", "2"], constructor: "c" })
  })
})
