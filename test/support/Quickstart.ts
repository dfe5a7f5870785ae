/**
 * examples/quickstart.yaml as `npm start` serves it, on free ports: its ports and paths
 * rewritten for the test, nothing else.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { freePorts, type Running, startGateway } from "./Harness.ts"

const root = path.resolve(import.meta.dirname, "../..")

/** The running quickstart and its main port (3000 in the file). */
export const startQuickstart = async (): Promise<{ gw: Running; port: number }> => {
  const yaml = fs.readFileSync(path.join(root, "examples/quickstart.yaml"), "utf8")
    .replaceAll("port: 3000", "port: $P0")
    .replaceAll("port: 3001", "port: $P1")
    .replaceAll("127.0.0.1:3001", "127.0.0.1:$P1")
    .replaceAll("[node_modules/", `[${root}/node_modules/`)
    .replaceAll("cmd: node", `cmd: "${process.execPath}"`)
    .replace("adminAddr: localhost:15000", "adminAddr: $ADMIN_ADDR")
  const [p0, p1] = await freePorts(2)
  const gw = await startGateway(yaml, { vars: { P0: p0!, P1: p1! } })
  return { gw, port: p0! }
}
