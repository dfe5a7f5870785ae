/**
 * Reads a config: YAML (JSON is YAML) → `$ENV` expansion → Effect Schema decode with unknown
 * fields as errors. Every problem becomes a `ConfigIssue` with file, line:column and field
 * path; all of them are reported at once.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import { readFile } from "node:fs/promises"
import * as YAML from "yaml"
import { type ConfigIssue, ConfigError, parsePath, renderPath } from "./ConfigError.ts"
import * as Env from "./Env.ts"
import { LocalConfig } from "./LocalConfig.ts"

/** A parsed source: kept so later stages (Normalize) can point at a line too. */
export interface Source {
  readonly file: string
  readonly document: YAML.Document.Parsed
  readonly lines: YAML.LineCounter
}

export interface Loaded {
  readonly config: LocalConfig
  readonly source: Source
}

const position = (source: Source, offset: number) => {
  const pos = source.lines.linePos(offset)
  return { line: pos.line, column: pos.col }
}

/**
 * Finds where a field path lives in the YAML. For an unknown field the key itself is the
 * place; for a missing one, the closest existing parent.
 */
export const locate = (source: Source, segments: ReadonlyArray<PropertyKey>, atKey = false): { line: number; column: number } | undefined => {
  let node: unknown = source.document.contents
  let last: { line: number; column: number } | undefined = YAML.isNode(node) && node.range ? position(source, node.range[0]) : undefined
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i]
    if (YAML.isMap(node)) {
      const pair = node.items.find((p) => YAML.isScalar(p.key) && String(p.key.value) === String(segment))
      if (pair === undefined) return last
      const isLast = i === segments.length - 1
      // A block value starts on the next line: the key is where a reader looks for the field.
      const target = isLast && (atKey || YAML.isCollection(pair.value) || pair.value === null) ? pair.key : pair.value ?? pair.key
      if (YAML.isNode(target) && target.range) last = position(source, target.range[0])
      node = pair.value
    } else if (YAML.isSeq(node) && typeof segment === "number") {
      const item = node.items[segment]
      if (item === undefined) return last
      if (YAML.isNode(item) && item.range) last = position(source, item.range[0])
      node = item
    } else {
      return last
    }
  }
  return last
}

const leafMessage = (issue: SchemaIssue.Leaf): string => {
  switch (issue._tag) {
    case "UnexpectedKey":
      return "unknown field"
    case "MissingKey":
      return "missing required field"
    default:
      return SchemaIssue.defaultLeafHook(issue)
  }
}
const formatter = SchemaIssue.makeFormatterStandardSchemaV1({ leafHook: leafMessage })

/** Turns a Schema failure into located issues (`unknown field "hots"` at the key). */
const schemaIssues = (source: Source, issue: SchemaIssue.Issue): Array<ConfigIssue> =>
  formatter(issue).issues.map((i) => {
    const path = i.path ?? []
    const segments = path.map((p) => (typeof p === "object" ? p.key : p))
    // Optional fields accept YAML null as "absent": that is not worth saying in every message.
    let message = i.message.replace(/ \| null\b/g, "")
    let fieldPath = segments
    if (message === "unknown field" || message === "missing required field") {
      const name = String(segments[segments.length - 1])
      message = `${message} "${name}"`
      fieldPath = segments.slice(0, -1)
    }
    const at = locate(source, segments, message.startsWith("unknown field"))
    return { file: source.file, path: renderPath(fieldPath), message, line: at?.line, column: at?.column }
  }).sort(byPosition)

const byPosition = (a: ConfigIssue, b: ConfigIssue) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0)

/** Expands `$VAR` in string scalars; plain scalars are re-typed after expansion (`port: $PORT`). */
const expandEnv = (source: Source, lookup: Env.Lookup): Array<ConfigIssue> => {
  const issues: Array<ConfigIssue> = []
  YAML.visit(source.document, {
    Scalar(key, node) {
      if (key === "key" || typeof node.value !== "string") return
      const result = Env.expand(node.value, lookup)
      if (result._tag === "Unchanged") return
      if (result._tag === "Undefined") {
        const at = node.range ? position(source, node.range[0]) : undefined
        issues.push({
          file: source.file,
          path: "",
          message: `environment variable "${result.name}" is not defined`,
          line: at?.line,
          column: at?.column
        })
        return
      }
      if (node.type === "PLAIN") {
        const retyped: unknown = YAML.parse(result.value)
        node.value = retyped !== null && typeof retyped === "object" ? result.value : retyped
      } else {
        node.value = result.value
      }
    }
  })
  return issues
}

/** Parses and decodes config text; `file` names it in messages (`-` for stdin, `<inline>` for -c). */
export const parse = (text: string, file: string, lookup: Env.Lookup = Env.processLookup): Effect.Effect<Loaded, ConfigError> =>
  Effect.suspend(() => {
    const lines = new YAML.LineCounter()
    const document = YAML.parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false })
    const source: Source = { file, document, lines }
    if (document.errors.length > 0) {
      return Effect.fail(
        new ConfigError({
          issues: document.errors.map((e) => {
            const at = position(source, e.pos[0])
            return { file, path: "", message: e.message.split("\n")[0]!, line: at.line, column: at.column }
          })
        })
      )
    }
    const envIssues = expandEnv(source, lookup)
    if (envIssues.length > 0) return Effect.fail(new ConfigError({ issues: envIssues }))
    const json: unknown = document.toJS({ maxAliasCount: 100 }) ?? {}
    const decoded = Schema.decodeUnknownExit(LocalConfig, { onExcessProperty: "error", errors: "all", reportInput: true })(json)
    if (Exit.isSuccess(decoded)) return Effect.succeed({ config: decoded.value, source })
    const failure = decoded.cause.reasons.find((r) => r._tag === "Fail")
    if (failure === undefined || failure._tag !== "Fail") {
      return Effect.fail(new ConfigError({ issues: [{ file, path: "", message: "config could not be decoded" }] }))
    }
    return Effect.fail(new ConfigError({ issues: schemaIssues(source, failure.error.issue) }))
  })

/** Adds file and line:column to issues raised after decoding (by Normalize or the snapshot build). */
export const locateIssues = (source: Source, error: ConfigError): ConfigError =>
  new ConfigError({
    issues: error.issues.map((issue) => {
      if (issue.line !== undefined) return issue
      const at = locate(source, parsePath(issue.path))
      return { ...issue, file: source.file, line: at?.line, column: at?.column }
    }).sort(byPosition)
  })

export const readText = (file: string): Effect.Effect<string, ConfigError> =>
  Effect.tryPromise({
    try: () => (file === "-" ? readStdin() : readFile(file, "utf8")),
    catch: (cause) =>
      new ConfigError({
        issues: [{ file, path: "", message: `cannot read config: ${cause instanceof Error ? cause.message : String(cause)}` }]
      })
  })

const readStdin = async (): Promise<string> => {
  const chunks: Array<Buffer> = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString("utf8")
}
