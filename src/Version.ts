/**
 * The version reported by `--version`, the build-info metric and logs.
 *
 * @since 0.1.0
 */
import { createRequire } from "node:module"

const require = createRequire(import.meta.url)
const pkg: { readonly version: string } = require("../package.json")

export const VERSION: string = pkg.version
