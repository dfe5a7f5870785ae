/**
 * Hot reload from a watched file: good changes apply, bad ones leave the old snapshot
 * serving (counted in a metric), a new bind on a busy port changes nothing, and requests in
 * flight finish on the snapshot they started with.
 */
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { startUpstream } from "../support/Upstream.ts"

const routeConfig = (port: number, body: string, extra = "") => `
binds:
- port: ${port}
  listeners:
  - routes:
    - policies:
        directResponse: {status: 200, body: "${body}"}
${extra}`

const waitFor = async (check: () => Promise<boolean>, ms = 5000) => {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error("condition not met in time")
}

const metric = async (gw: Running, name: string) => {
  const text = await (await fetch(`http://127.0.0.1:${gw.ports.stats}/metrics`)).text()
  const line = text.split("\n").find((l) => l.startsWith(name))
  return line === undefined ? 0 : Number(line.split(" ").at(-1))
}

let cleanup: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanup.reverse()) await c()
  cleanup = []
})

const setup = async (initial: (port: number) => string) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "agw-reload-"))
  const file = path.join(dir, "config.yaml")
  const port = await freePort()
  await fs.writeFile(file, initial(port))
  const gw = await startGateway("", { file })
  cleanup.push(async () => {
    await gw.stop()
    await fs.rm(dir, { recursive: true, force: true })
  })
  const body = async () => (await fetch(gw.url(port, "/"))).text()
  return { gw, file, port, body }
}

describe("hot reload", () => {
  it("applies files saved by rename, again and again (editors)", async () => {
    const { file, port, body } = await setup((p) => routeConfig(p, "one"))
    expect(await body()).toBe("one")
    // An editor's save: write a temporary file beside it, rename it over the config (new inode).
    for (const version of ["renamed-1", "renamed-2"]) {
      await fs.writeFile(`${file}.tmp`, routeConfig(port, version))
      await fs.rename(`${file}.tmp`, file)
      await waitFor(async () => (await body()) === version)
    }
  })

  it("follows a Kubernetes ConfigMap update: the ..data symlink swapped to a new directory", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "agw-configmap-"))
    const port = await freePort()
    // The kubelet's layout: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>/
    await fs.mkdir(path.join(dir, "..v1"))
    await fs.writeFile(path.join(dir, "..v1", "config.yaml"), routeConfig(port, "v1"))
    await fs.symlink("..v1", path.join(dir, "..data"))
    await fs.symlink(path.join("..data", "config.yaml"), path.join(dir, "config.yaml"))
    const gw = await startGateway("", { file: path.join(dir, "config.yaml") })
    cleanup.push(async () => {
      await gw.stop()
      await fs.rm(dir, { recursive: true, force: true })
    })
    const body = async () => (await fetch(gw.url(port, "/"))).text()
    expect(await body()).toBe("v1")
    for (const version of ["v2", "v3"]) {
      await fs.mkdir(path.join(dir, `..${version}`))
      await fs.writeFile(path.join(dir, `..${version}`, "config.yaml"), routeConfig(port, version))
      await fs.symlink(`..${version}`, path.join(dir, "..data_tmp"))
      await fs.rename(path.join(dir, "..data_tmp"), path.join(dir, "..data"))
      await waitFor(async () => (await body()) === version)
    }
  })

  it("applies a changed file", async () => {
    const { file, port, body } = await setup((p) => routeConfig(p, "one"))
    expect(await body()).toBe("one")
    await fs.writeFile(file, routeConfig(port, "two"))
    await waitFor(async () => (await body()) === "two")
  })

  it("keeps serving the old snapshot when the new file does not decode, and counts the failure", async () => {
    const { gw, file, port, body } = await setup((p) => routeConfig(p, "good"))
    await fs.writeFile(file, routeConfig(port, "bad").replace("directResponse", "directResponze"))
    await waitFor(async () => (await metric(gw, 'agentgateway_config_reloads_total{result="failure"}')) >= 1)
    expect(await body()).toBe("good")
    expect(await metric(gw, "agentgateway_config_synchronized")).toBe(0)
    // a later good file applies again
    await fs.writeFile(file, routeConfig(port, "fixed"))
    await waitFor(async () => (await body()) === "fixed")
    expect(await metric(gw, "agentgateway_config_synchronized")).toBe(1)
  })

  it("keeps the old snapshot when a new bind cannot listen", async () => {
    const busy = net.createServer()
    await new Promise<void>((r) => busy.listen(0, r))
    const address = busy.address()
    const busyPort = typeof address === "object" && address !== null ? address.port : 0
    cleanup.push(() => new Promise((r) => busy.close(() => r())))
    const { gw, file, port, body } = await setup((p) => routeConfig(p, "stable"))
    await fs.writeFile(
      file,
      routeConfig(port, "changed", `- port: ${busyPort}\n  listeners:\n  - routes:\n    - policies: {directResponse: {status: 200}}\n`)
    )
    await waitFor(async () => (await metric(gw, 'agentgateway_config_reloads_total{result="failure"}')) >= 1)
    expect(await body()).toBe("stable")
    expect(gw.gateway.ports().data.has(busyPort)).toBe(false)
  })

  it("opens new ports and closes removed ones", async () => {
    const extra = await freePort()
    const { gw, file, port } = await setup((p) => routeConfig(p, "a"))
    await fs.writeFile(file, routeConfig(port, "a", `- port: ${extra}\n  listeners:\n  - routes:\n    - policies: {directResponse: {status: 202}}\n`))
    await waitFor(async () => gw.gateway.ports().data.has(extra))
    expect((await fetch(`http://127.0.0.1:${extra}/`)).status).toBe(202)
    await fs.writeFile(file, routeConfig(port, "a"))
    await waitFor(async () => !gw.gateway.ports().data.has(extra))
    await expect(fetch(`http://127.0.0.1:${extra}/`)).rejects.toThrow()
  })

  it("finishes in-flight requests on the snapshot they started with", async () => {
    const upstream = await startUpstream()
    cleanup.push(() => upstream.close())
    const proxied = (p: number) => `
binds:
- port: ${p}
  listeners:
  - routes:
    - backends:
      - host: 127.0.0.1:${upstream.port}
`
    const { gw, file, port } = await setup(proxied)
    const inflight = fetch(gw.url(port, "/slow?ms=800"))
    await new Promise((r) => setTimeout(r, 100))
    await fs.writeFile(file, routeConfig(port, "new"))
    await waitFor(async () => (await (await fetch(gw.url(port, "/"))).text()) === "new")
    const res = await inflight
    expect(res.status).toBe(200)
    expect(await res.text()).toBe("slow")
  })
})
