/**
 * `npm run schema`: writes schema/config.schema.json. A test fails when the committed file is stale.
 */
import { writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { generate } from "./schema.ts"

const target = fileURLToPath(new URL("../schema/config.schema.json", import.meta.url))
writeFileSync(target, generate())
process.stdout.write(`wrote ${target}\n`)
