/**
 * `npm run build`, second step: writes dist/main.js, the command (`node dist/main.js`), as one
 * self-contained ES module, over the per-file dist/main.js tsc emits first. The per-file dist/
 * stays what library users import (`dist/index.js`).
 *
 * Why one file: loading effect, yaml and our ~110 modules through Node's ES module loader costs
 * about 13 MiB of resident memory that one bundle does not (idle RSS 92 → 73 MiB in
 * `npm run bench:http`; same CPU per request).
 *
 * Kept out of the bundle and loaded from node_modules when first used, as before: the packages
 * the gateway imports lazily (a config that never names them never loads them). They are
 * CommonJS, which Node loads without the module-loader cost.
 */
import * as esbuild from "esbuild"
import { fileURLToPath } from "node:url"

const root = (p: string): string => fileURLToPath(new URL(`../${p}`, import.meta.url))

/** Imported with `import()` on first use (backends/Undici.ts, policies, sidecar/, Tracing.ts). */
const lazy = ["undici", "jose", "aws4", "@grpc/grpc-js", "ioredis"]

await esbuild.build({
  entryPoints: [root("src/main.ts")],
  outfile: root("dist/main.js"),
  allowOverwrite: true,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node24",
  external: lazy,
  // Bundled CommonJS code calls require() for Node built-ins; an ES module has none of its own.
  banner: { js: "import { createRequire as __agwCreateRequire } from \"node:module\"; const require = __agwCreateRequire(import.meta.url);" },
  // Whitespace and syntax only: identifiers keep their source names, so functions and classes are
  // named as in src/ without `keepNames`, whose `__name()` helper is an `Object.defineProperty` for
  // every closure created, several per request. `node --enable-source-maps` maps stack traces to src/.
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: true,
  legalComments: "none",
  logLevel: "warning"
})
