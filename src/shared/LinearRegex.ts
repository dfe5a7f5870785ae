/**
 * Regular expressions from config (route `regex` matches, CEL `matches` and `regexReplace`)
 * run against attacker-chosen input. agentgateway's Rust regex engine is linear-time; V8's
 * is backtracking, so a pattern like `(a+)+$` would spend seconds per request. V8 can switch a
 * regex to its linear engine once it backtracks too much: this module turns that on, for the
 * whole process, as soon as anything that compiles such patterns is loaded. Normal matches
 * keep V8's fast engine (the fallback only triggers on excessive backtracking). Patterns
 * compiled with the `u` flag cannot fall back, so config patterns are compiled without it,
 * unless they use syntax that needs it (`\p{…}`, `\P{…}`, `\u{…}`).
 *
 * @since 0.1.0
 */
import * as v8 from "node:v8"

v8.setFlagsFromString("--enable-experimental-regexp-engine-on-excessive-backtracks")

const NEEDS_UNICODE = /\\[pPu]\{/

/** A config-supplied pattern, compiled so that V8 may fall back to its linear engine. */
export const compile = (source: string): RegExp => new RegExp(source, NEEDS_UNICODE.test(source) ? "u" : "")
