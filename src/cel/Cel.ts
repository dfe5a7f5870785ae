/**
 * CEL, compiled once and evaluated many times. `compile` runs when a snapshot is built: a
 * syntax or type error is a `ConfigError` naming the field. The `Program` it returns evaluates
 * synchronously and never throws: `eval` answers a `Result` (value or error) for callers that
 * treat errors specially (an authorization deny rule), `evalBool` answers `false` on any error
 * or non-boolean, `evalString`/`evalValue` answer `undefined`.
 *
 * One `Environment` serves the whole process: agentgateway's variables (Context.ts) and
 * functions (Functions.ts) are registered once, at module load.
 *
 * @since 0.1.0
 */
import { type ASTNode, Environment, EvaluationError, ParseError, TypeError } from "@marcbachmann/cel-js"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as ConfigError from "../config/ConfigError.ts"
import * as Context from "./Context.ts"
import * as Functions from "./Functions.ts"

/**
 * Parser bounds for config-supplied expressions: far above any real policy, low enough that
 * a pathological expression cannot stall a snapshot build.
 */
const LIMITS = {
  maxAstNodes: 10_000,
  maxDepth: 100,
  maxListElements: 1_000,
  maxMapEntries: 1_000,
  maxCallArguments: 32
}

/** The shared environment. Literals may mix types (`[1, "a"]`) as in cel-rust. */
export const environment: Environment = (() => {
  const env = new Environment({ homogeneousAggregateLiterals: false, enableOptionalTypes: true, limits: LIMITS })
  Context.registerTypes(env)
  Functions.register(env)
  return env
})()

/** An evaluation failure: a missing key, a type mismatch at runtime, `fail()`, … */
export class CelError {
  readonly _tag = "CelError"
  /** cel-js's error code (`no_such_key`, `unknown_variable`, …), or `internal`. */
  readonly code: string
  readonly message: string
  constructor(code: string, message: string) {
    this.code = code
    this.message = message
  }
}

/** What an expression reads, from its AST: which roots, and the first field of each. */
export interface References {
  /** Root variables referenced (`request`, `jwt`, …). */
  readonly roots: ReadonlySet<string>
  /** `root.field` paths referenced (`request.headers`, `jwt.sub`); a whole root appears as `root`. */
  readonly paths: ReadonlySet<string>
  /** Reads `request.body` (or the whole `request`): the body must be buffered before evaluating. */
  readonly requestBody: boolean
  /** Reads `response.body` (or the whole `response`). */
  readonly responseBody: boolean
}

export interface Program {
  readonly source: string
  /** Config field path the expression came from, for logs. */
  readonly path: string
  /** The checked result type (`bool`, `string`, `dyn`, …). */
  readonly type: string
  readonly references: References
  /** Value or error; never throws. */
  eval(activation: object): Result.Result<unknown, CelError>
  /** `true` only for a boolean `true`; errors and non-booleans are `false`. */
  evalBool(activation: object): boolean
  /**
   * The boolean result, or `onError` for an error or a non-boolean: a fail-closed check (an
   * authorization deny rule) passes `true`. Allocates nothing, unlike `eval`.
   */
  evalBoolOr(activation: object, onError: boolean): boolean
  /** The value as text (strings as is, numbers and booleans formatted, bytes as UTF-8, others as JSON); `undefined` on error. */
  evalString(activation: object): string | undefined
  /** The raw CEL value, `undefined` on error. */
  evalValue(activation: object): unknown
}

type Evaluate = (activation: object) => unknown

const firstLine = (message: string): string => {
  const nl = message.indexOf("\n")
  return nl < 0 ? message : message.slice(0, nl)
}

const toCelError = (error: unknown): CelError => {
  if (error instanceof EvaluationError || error instanceof TypeError) return new CelError(error.code, error.summary)
  if (error instanceof Error) return new CelError("internal", firstLine(error.message))
  return new CelError("internal", String(error))
}

class CompiledProgram implements Program {
  readonly source: string
  readonly path: string
  readonly type: string
  readonly references: References
  private readonly run: Evaluate
  constructor(source: string, path: string, type: string, references: References, run: Evaluate) {
    this.source = source
    this.path = path
    this.type = type
    this.references = references
    this.run = run
  }

  eval(activation: object): Result.Result<unknown, CelError> {
    try {
      return Result.succeed(this.run(activation))
    } catch (error) {
      return Result.fail(toCelError(error))
    }
  }

  evalBool(activation: object): boolean {
    try {
      return this.run(activation) === true
    } catch {
      return false
    }
  }

  evalBoolOr(activation: object, onError: boolean): boolean {
    try {
      const value = this.run(activation)
      return typeof value === "boolean" ? value : onError
    } catch {
      return onError
    }
  }

  evalString(activation: object): string | undefined {
    try {
      return Functions.toText(this.run(activation))
    } catch {
      return undefined
    }
  }

  evalValue(activation: object): unknown {
    try {
      return this.run(activation)
    } catch {
      return undefined
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AST passes
// ---------------------------------------------------------------------------------------------

const isNode = (v: unknown): v is ASTNode => v !== null && typeof v === "object" && "op" in v && "args" in v

const children = (node: ASTNode): Array<ASTNode> => {
  const out: Array<ASTNode> = []
  const visit = (v: unknown): void => {
    if (isNode(v)) out.push(v)
    else if (Array.isArray(v)) for (const x of v) visit(x)
  }
  if (node.op !== "value" && node.op !== "id") visit(node.args)
  return out
}

const HEADER_ROOTS: ReadonlySet<string> = new Set(["request", "response"])

/** `request.headers` / `response.headers` (or `source.connectHeaders`). */
const isHeaderMap = (node: ASTNode): boolean =>
  node.op === "." && node.args[0].op === "id" &&
  ((node.args[1] === "headers" && HEADER_ROOTS.has(node.args[0].args)) || (node.args[1] === "connectHeaders" && node.args[0].args === "source"))

/**
 * Header names are case-insensitive and stored lower-case: a literal key in
 * `request.headers["X-Env"]` is lower-cased once here, so no lookup pays for it.
 */
const lowerHeaderKeys = (node: ASTNode): void => {
  if ((node.op === "[]" || node.op === "[?]") && isHeaderMap(node.args[0])) {
    const key = node.args[1]
    // The parser's nodes are plain mutable objects; `args` is only typed readonly.
    if (key.op === "value" && typeof key.args === "string") Reflect.set(key, "args", key.args.toLowerCase())
  }
  for (const child of children(node)) lowerHeaderKeys(child)
}

/** Macros whose first argument names a variable bound in the rest (`l.exists(x, …)`). */
const BINDING_MACROS: ReadonlySet<string> = new Set(["all", "exists", "exists_one", "map", "filter", "with", "mapValues", "filterKeys"])

const referencesOf = (ast: ASTNode): References => {
  const roots = new Set<string>()
  const paths = new Set<string>()
  const visit = (node: ASTNode, parent: ASTNode | undefined, bound: ReadonlySet<string>): void => {
    if (node.op === "id") {
      const name = node.args
      if (bound.has(name) || !Context.ROOTS.has(name)) return
      roots.add(name)
      const field = parent !== undefined && (parent.op === "." || parent.op === ".?") && parent.args[0] === node
        ? parent.args[1]
        : parent !== undefined && (parent.op === "[]" || parent.op === "[?]") && parent.args[0] === node &&
            parent.args[1].op === "value" && typeof parent.args[1].args === "string"
        ? parent.args[1].args
        : undefined
      paths.add(field === undefined ? name : `${name}.${field}`)
      return
    }
    if (node.op === "rcall") {
      const [name, receiver, args] = node.args
      const first = args[0]
      const isBind = name === "bind" && receiver.op === "id" && receiver.args === "cel"
      if (first?.op === "id" && (BINDING_MACROS.has(name) || isBind)) {
        const inner = new Set(bound).add(first.args)
        if (!isBind) visit(receiver, node, bound)
        args.slice(1).forEach((arg, i) => visit(arg, node, isBind && i === 0 ? bound : inner))
        return
      }
    }
    for (const child of children(node)) visit(child, node, bound)
  }
  visit(ast, undefined, new Set())
  const reads = (root: string) => paths.has(`${root}.body`) || paths.has(`${root}.bodyPrefix`) || paths.has(root)
  return { roots, paths, requestBody: reads("request"), responseBody: reads("response") }
}

// ---------------------------------------------------------------------------------------------
// Compile
// ---------------------------------------------------------------------------------------------

const configError = (path: string, source: string, error: unknown): ConfigError.ConfigError => {
  const reason = error instanceof ParseError || error instanceof TypeError || error instanceof EvaluationError
    ? `${error.summary}${error.range === undefined ? "" : ` (at offset ${error.range.start})`}`
    : error instanceof Error
    ? firstLine(error.message)
    : String(error)
  return ConfigError.make(path, `invalid CEL expression ${JSON.stringify(source)}: ${reason}`)
}

/** Compiles synchronously; throws the library's error (for `compile` to wrap). */
const build = (source: string, path: string): Program => {
  const parsed = environment.parse(source)
  lowerHeaderKeys(parsed.ast)
  const checked = parsed.check()
  if (!checked.valid) throw checked.error
  return new CompiledProgram(source, path, checked.type ?? "dyn", referencesOf(parsed.ast), parsed)
}

/**
 * Parses and type-checks `source`. A syntax or type error (unknown variable or field, no such
 * function, wrong operand types) fails with a ConfigError at `path`.
 */
export const compile = (source: string, path: string): Effect.Effect<Program, ConfigError.ConfigError> =>
  Effect.try({ try: () => build(source, path), catch: (error) => configError(path, source, error) })

/** Like `compile`, and the result must be able to be a boolean (`bool` or `dyn`). */
export const compileBool = (source: string, path: string): Effect.Effect<Program, ConfigError.ConfigError> =>
  Effect.flatMap(compile(source, path), (program) =>
    program.type === "bool" || program.type.startsWith("dyn")
      ? Effect.succeed(program)
      : Effect.fail(ConfigError.make(path, `invalid CEL expression ${JSON.stringify(source)}: must evaluate to bool, not ${program.type}`)))
