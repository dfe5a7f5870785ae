/**
 * schema/config.schema.json is generated from the Effect Schema: it must be current, and every
 * field must say what it is.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { generate } from "../../scripts/schema.ts"

const file = path.resolve(import.meta.dirname, "../../schema/config.schema.json")

type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }
const isObject = (value: Json | undefined): value is { readonly [key: string]: Json } =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** JSON paths of properties without a description. */
const undescribed = (node: Json, at: string, out: Array<string>): Array<string> => {
  if (Array.isArray(node)) {
    node.forEach((n, i) => undescribed(n, `${at}[${i}]`, out))
    return out
  }
  if (!isObject(node)) return out
  const properties = node["properties"]
  if (isObject(properties)) {
    for (const [name, schema] of Object.entries(properties)) {
      if (!isObject(schema) || typeof schema["description"] !== "string" || schema["description"] === "") out.push(`${at}.${name}`)
    }
  }
  for (const [key, value] of Object.entries(node)) undescribed(value, `${at}/${key}`, out)
  return out
}

describe("schema/config.schema.json", () => {
  const committed = fs.readFileSync(file, "utf8")
  const schema = JSON.parse(committed) as Json

  it("is what the generator produces now (run `npm run schema`)", () => {
    expect(committed).toBe(generate())
  })

  it("describes every field", () => {
    expect(undescribed(schema, "$", [])).toEqual([])
  })

  it("rejects unknown fields at the root and lists the top-level sections", () => {
    expect(isObject(schema) && schema["additionalProperties"]).toBe(false)
    const properties = isObject(schema) ? schema["properties"] : undefined
    expect(isObject(properties) ? Object.keys(properties) : []).toEqual(
      expect.arrayContaining(["config", "binds", "gateways", "routes", "backends", "policies", "frontendPolicies", "mcp", "llm"])
    )
  })
})
