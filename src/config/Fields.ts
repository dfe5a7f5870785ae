/**
 * Small builders for the config Schema: every field carries a description (the generated
 * JSON Schema and the error messages both read it), optional fields accept YAML `null` as
 * "absent" like upstream's serde, and fields upstream knows but this gateway does not
 * implement yet fail with a message that says so instead of "unknown field".
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import * as Duration from "./Duration.ts"

/**
 * Marks a field as required and documents it. Descriptions are key annotations, so they
 * survive on schemas that carry checks (a plain `annotate` would describe the check).
 */
export const req = <S extends Schema.Top>(schema: S, description: string) => schema.annotateKey({ description })

/** An optional field; YAML `null` counts as absent, as in upstream's serde model. */
export const opt = <S extends Schema.Top>(schema: S, description: string) =>
  Schema.optionalKey(Schema.NullOr(schema)).annotateKey({ description })

/** The message every not-yet-implemented field fails with. */
export const unsupportedMessage = (what: string) => `${what} is not supported yet by effect-agentgateway`

/**
 * A field agentgateway accepts but this gateway does not implement yet. Decoding any value
 * (other than null) fails with a precise message rather than silently ignoring configuration.
 */
export const unsupported = (what: string) =>
  Schema.optionalKey(
    Schema.Null.annotate({
      description: `${what}: accepted by agentgateway, not supported yet here`,
      message: unsupportedMessage(what)
    })
  )

/**
 * A struct whose keys are alternatives: exactly one of `keys` must be present (the shape of
 * upstream's externally tagged enums such as `{exact: …} | {pathPrefix: …}`).
 */
export const exactlyOneOf = (keys: ReadonlyArray<string>) =>
  Schema.makeFilter((value: object) => {
    const present = keys.filter((k) => k in value && (value as Record<string, unknown>)[k] !== null)
    if (present.length === 1) return undefined
    return present.length === 0
      ? `expected exactly one of: ${keys.join(", ")}`
      : `only one of ${present.join(", ")} may be set`
  })

/** Go-style duration strings: "1s", "100ms", "1h30m", "1.5s". */
export const DurationString = Schema.String.check(
  Schema.makeFilter((s: string) => Duration.isDuration(s) || `invalid duration "${s}" (expected e.g. "100ms", "10s", "1h30m")`)
).annotate({ description: "A duration such as \"100ms\", \"10s\" or \"1h30m\"." })

/** A regular expression, checked when the config is decoded. */
export const RegexString = Schema.String.check(
  Schema.makeFilter((s: string) => {
    try {
      new RegExp(s)
      return undefined
    } catch (error) {
      return `invalid regular expression: ${error instanceof Error ? error.message : String(error)}`
    }
  })
)
