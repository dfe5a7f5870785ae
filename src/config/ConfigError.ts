/**
 * Config errors: each names the file, line:column, the field path and what was expected,
 * e.g. `config.yaml:7:9 binds[0].listeners[0].routes[0].backends[0]: unknown field "hots"`.
 * A failed load carries every error found, not just the first.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"

export interface ConfigIssue {
  /** Field path in the config, e.g. `binds[0].listeners[0]`; "" for the document itself. */
  readonly path: string
  readonly message: string
  /** Filled in by the loader from the YAML source, when the path exists there. */
  readonly file?: string | undefined
  readonly line?: number | undefined
  readonly column?: number | undefined
}

export class ConfigError extends Data.TaggedError("ConfigError")<{
  readonly issues: ReadonlyArray<ConfigIssue>
}> {
  override get message(): string {
    return this.issues.map(formatIssue).join("\n")
  }
}

export const formatIssue = (issue: ConfigIssue): string => {
  const where = issue.file === undefined
    ? ""
    : issue.line === undefined
    ? `${issue.file}: `
    : `${issue.file}:${issue.line}:${issue.column ?? 1} `
  return `${where}${issue.path === "" ? "" : issue.path + ": "}${issue.message}`
}

export const make = (path: string, message: string): ConfigError => new ConfigError({ issues: [{ path, message }] })

/** Renders a field path the way error messages show it: `a.b[0].c`. */
export const renderPath = (segments: ReadonlyArray<PropertyKey>): string => {
  let out = ""
  for (const segment of segments) {
    if (typeof segment === "number") out += `[${segment}]`
    else if (typeof segment === "string" && /^[A-Za-z_][A-Za-z0-9_-]*$/.test(segment)) out += out === "" ? segment : `.${segment}`
    else out += `[${JSON.stringify(String(segment))}]`
  }
  return out
}

/** Parses a rendered path back to segments (for locating a Normalize error in the YAML). */
export const parsePath = (path: string): Array<string | number> => {
  const out: Array<string | number> = []
  const re = /([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]/g
  for (const m of path.matchAll(re)) {
    if (m[1] !== undefined) out.push(m[1])
    else if (m[2] !== undefined) out.push(Number(m[2]))
    else if (m[3] !== undefined) out.push(JSON.parse(`"${m[3]}"`) as string)
  }
  return out
}
