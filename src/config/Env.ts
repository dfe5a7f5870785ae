/**
 * `$VAR`, `${VAR}` and `${VAR:-default}` expansion, as agentgateway's shellexpand does. It is
 * applied to string scalars after YAML parsing, so an environment value can never inject YAML
 * structure and positions in error messages stay those of the file. An undefined variable
 * without a default is an error.
 *
 * @since 0.1.0
 */

export type Lookup = (name: string) => string | undefined

export type Expansion =
  | { readonly _tag: "Unchanged" }
  | { readonly _tag: "Expanded"; readonly value: string }
  | { readonly _tag: "Undefined"; readonly name: string }

const PATTERN = /\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g

export const expand = (input: string, lookup: Lookup): Expansion => {
  if (!input.includes("$")) return { _tag: "Unchanged" }
  let missing: string | undefined
  const value = input.replace(PATTERN, (_match, braced: string | undefined, fallback: string | undefined, bare: string | undefined) => {
    const name = (braced ?? bare)!
    const found = lookup(name)
    if (found !== undefined && !(fallback !== undefined && found === "")) return found
    if (fallback !== undefined) return fallback
    missing ??= name
    return ""
  })
  if (missing !== undefined) return { _tag: "Undefined", name: missing }
  return value === input ? { _tag: "Unchanged" } : { _tag: "Expanded", value }
}

export const processLookup: Lookup = (name) => process.env[name]
