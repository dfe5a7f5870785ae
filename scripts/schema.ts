/**
 * Generates `schema/config.schema.json` from the config's Effect Schema (the single source of
 * truth), post-processed to describe what the decoder accepts:
 * - objects with listed properties reject unknown ones (`additionalProperties: false`), as the
 *   decoder does with `onExcessProperty: "error"`;
 * Fields this gateway does not implement yet appear as `null`-only, with a description saying so.
 */
import * as Schema from "effect/Schema"
import { LocalConfig } from "../src/config/LocalConfig.ts"

type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }
type JsonObject = { [key: string]: Json }

const isObject = (value: unknown): value is JsonObject => typeof value === "object" && value !== null && !Array.isArray(value)

const postProcess = (node: Json): Json => {
  if (Array.isArray(node)) return node.map(postProcess)
  if (!isObject(node)) return node
  const out: JsonObject = {}
  for (const [key, value] of Object.entries(node)) out[key] = postProcess(value)
  if (isObject(out["properties"])) out["additionalProperties"] = false
  // Key annotations arrive as `allOf: [{description}]`; a plain `description` is what editors show.
  const allOf = out["allOf"]
  if (Array.isArray(allOf) && allOf.length === 1 && isObject(allOf[0]) && Object.keys(allOf[0]).length === 1 && typeof allOf[0]["description"] === "string") {
    out["description"] = allOf[0]["description"]
    delete out["allOf"]
  }
  return out
}

export const generate = (): string => {
  const document = Schema.toJsonSchemaDocument(LocalConfig)
  const root = postProcess(JSON.parse(JSON.stringify(document.schema)) as Json)
  const definitions = postProcess(JSON.parse(JSON.stringify(document.definitions)) as Json)
  const schema: JsonObject = {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: "https://github.com/effect-agentgateway/effect-agentgateway/schema/config.schema.json",
    ...(isObject(root) ? root : {}),
    ...(isObject(definitions) && Object.keys(definitions).length > 0 ? { $defs: definitions } : {})
  }
  return JSON.stringify(schema, null, 2) + "\n"
}
