/**
 * deploy/: the Kubernetes manifests and the Dockerfile, checked against the code instead of
 * against copies of its numbers. No cluster and no docker here, so:
 * - the manifests are parsed with `yaml` and cross-checked (selectors, names, mounts);
 * - the ConfigMap's config is loaded by the real loader with the Deployment's environment, and
 *   the ports and drain deadlines the probes and the grace period must match are read from the
 *   normalised settings (defaults included);
 * - the gateway is started from that config (Harness) and answers on the probe paths and the
 *   scrape path the manifests name;
 * - the Dockerfile's stages, user and CMD are parsed, and the CMD's script is the file the
 *   build emits for the package's `bin`.
 */
import * as Effect from "effect/Effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as YAML from "yaml"
import * as Address from "../../src/admin/Address.ts"
import { DRAIN_MARGIN_MS } from "../../src/cluster/Primary.ts"
import * as Load from "../../src/config/Load.ts"
import { loadIr, validate } from "../../src/Gateway.ts"
import type * as Ir from "../../src/ir/Ir.ts"
import { SHUTDOWN_FLUSH_MS } from "../../src/observability/Tracing.ts"
import { MALLOC_ARENAS } from "../../src/shared/MallocArenas.ts"
import { YOUNG_SEMI_SPACE_MIB } from "../../src/shared/StartupMemory.ts"
import { send } from "../support/Client.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"

const ROOT = path.resolve(import.meta.dirname, "../..")
const K8S = path.join(ROOT, "deploy/kubernetes")
const read = (file: string) => fs.readFileSync(path.join(ROOT, file), "utf8")

// --- typed access to parsed YAML (a wrong shape fails the test, naming the path) ---

type Json = unknown
const at = (value: Json, ...keys: ReadonlyArray<string | number>): Json => {
  let v = value
  for (const k of keys) {
    if (typeof k === "number") v = Array.isArray(v) ? v[k] : undefined
    else v = typeof v === "object" && v !== null && !Array.isArray(v) ? Reflect.get(v, k) : undefined
  }
  return v
}
const str = (value: Json, ...keys: ReadonlyArray<string | number>): string => {
  const v = at(value, ...keys)
  if (typeof v !== "string") throw new Error(`${keys.join(".")}: expected a string, got ${JSON.stringify(v)}`)
  return v
}
const num = (value: Json, ...keys: ReadonlyArray<string | number>): number => {
  const v = at(value, ...keys)
  if (typeof v !== "number") throw new Error(`${keys.join(".")}: expected a number, got ${JSON.stringify(v)}`)
  return v
}
const list = (value: Json, ...keys: ReadonlyArray<string | number>): Array<Json> => {
  const v = at(value, ...keys)
  if (!Array.isArray(v)) throw new Error(`${keys.join(".")}: expected a list, got ${JSON.stringify(v)}`)
  return v
}
const labels = (value: Json, ...keys: ReadonlyArray<string | number>): Record<string, string> => {
  const v = at(value, ...keys)
  const out: Record<string, string> = {}
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error(`${keys.join(".")}: expected a map`)
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== "string") throw new Error(`${keys.join(".")}.${k}: expected a string`)
    out[k] = x
  }
  return out
}

// --- the manifests ---

const kustomization = YAML.parse(fs.readFileSync(path.join(K8S, "kustomization.yaml"), "utf8"))
const resources = list(kustomization, "resources").map((r) => String(r))
const documents = resources.flatMap((file) =>
  YAML.parseAllDocuments(fs.readFileSync(path.join(K8S, file), "utf8")).map((d) => {
    expect(d.errors).toEqual([])
    return d.toJS()
  })
)
const ofKind = (kind: string): Json => {
  const found = documents.filter((d) => at(d, "kind") === kind)
  if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}`)
  return found[0]
}
const deployment = ofKind("Deployment")
const service = ofKind("Service")
const configMap = ofKind("ConfigMap")
const pdb = ofKind("PodDisruptionBudget")
const hpa = ofKind("HorizontalPodAutoscaler")
const pod = at(deployment, "spec", "template")
const containers = list(pod, "spec", "containers")
expect(containers).toHaveLength(1)
const container = containers[0]
const containerPort = (name: string | number): number => {
  if (typeof name === "number") return name
  const port = list(container, "ports").find((p) => at(p, "name") === name)
  return num(port, "containerPort")
}

/** The Deployment's environment as the gateway sees it: literal values (secret references are unknown here). */
const env = (name: string): string | undefined => {
  const entry = (at(container, "env") === undefined ? [] : list(container, "env")).find((e) => at(e, "name") === name)
  const value = at(entry, "value")
  return typeof value === "string" ? value : undefined
}

// --- the Dockerfile ---

interface Stage {
  readonly image: string
  readonly name: string | undefined
  readonly lines: Array<string>
}
const dockerfile = read("deploy/Dockerfile")
const stages: Array<Stage> = []
for (const raw of dockerfile.split("\n")) {
  const line = raw.trim()
  if (line === "" || line.startsWith("#")) continue
  const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$/i.exec(line)
  if (from !== null) stages.push({ image: from[1]!, name: from[2], lines: [] })
  else stages.at(-1)?.lines.push(line)
}
const final = stages.at(-1)!
const instruction = (stage: Stage, name: string) => stage.lines.filter((l) => l.toUpperCase().startsWith(`${name} `)).map((l) => l.slice(name.length + 1).trim())
const cmd: Array<string> = JSON.parse(instruction(final, "CMD").at(-1) ?? "[]")
const imageUser = instruction(final, "USER").at(-1) ?? "root"

// --- the config the ConfigMap carries ---

const configKey = "config.yaml"
const configText = str(configMap, "data", configKey)
let settings: Ir.Settings
let snapshot: Ir.Snapshot

beforeAll(async () => {
  // The loader itself (YAML, $VAR expansion, Schema decode with unknown fields as errors)…
  await Effect.runPromise(Load.parse(configText, "deploy/kubernetes/configmap.yaml", env))
  // …then normalisation and the full snapshot build, with the Deployment's environment.
  snapshot = await Effect.runPromise(validate({ _tag: "Inline", text: configText }, env))
  settings = (await Effect.runPromise(loadIr(configText, "configmap.yaml", env))).ir.settings
})

const portOf = (address: string): number | undefined => {
  const parsed = Address.parse(address)
  return "error" in parsed || parsed._tag === "Off" ? undefined : parsed.port
}

describe("deploy/kubernetes manifests", () => {
  it("kustomization lists every manifest in the directory", () => {
    const files = fs.readdirSync(K8S).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml").sort()
    expect([...resources].sort()).toEqual(files)
  })

  it("the readiness and liveness probes use the readiness address's port; stats is the scrape target; admin is not exposed", () => {
    const readiness = portOf(settings.readinessAddr)
    expect(readiness).toBeDefined()
    for (const probe of ["readinessProbe", "livenessProbe"]) {
      const port = at(container, probe, "httpGet", "port")
      expect(typeof port === "string" || typeof port === "number").toBe(true)
      expect(containerPort(typeof port === "number" ? port : String(port))).toBe(readiness)
    }
    const stats = portOf(settings.statsAddr)
    expect(containerPort("stats")).toBe(stats)
    expect(Number(str(pod, "metadata", "annotations", "prometheus.io/port"))).toBe(stats)
    // The admin API stays on loopback: reachable by port-forward only, never a container port.
    const admin = Address.parse(settings.adminAddr)
    expect("error" in admin || admin._tag === "Off" || ["localhost", "127.0.0.1", "::1"].includes(admin.host)).toBe(true)
    const exposed = list(container, "ports").map((p) => num(p, "containerPort"))
    expect(exposed).not.toContain(portOf(settings.adminAddr))
  })

  it("the data-plane port is the config's bind, exposed by the Service", () => {
    const binds = snapshot.binds.map((b) => b.port)
    expect(binds).toEqual([containerPort("http")])
    const http = list(service, "spec", "ports").find((p) => at(p, "name") === "http")
    expect(containerPort(str(http, "targetPort"))).toBe(binds[0])
  })

  it("terminationGracePeriodSeconds covers the drain: minimum + deadline + the final flush", () => {
    const grace = num(pod, "spec", "terminationGracePeriodSeconds") * 1000
    const drain = settings.terminationMinDeadlineMs + settings.terminationDeadlineMs
    expect(settings.terminationDeadlineMs).toBeGreaterThan(0)
    expect(grace).toBeGreaterThanOrEqual(drain + Math.max(SHUTDOWN_FLUSH_MS, DRAIN_MARGIN_MS))
    // Readiness turns 503 at SIGTERM; the listeners keep serving until a probe has seen it.
    const readiness = at(container, "readinessProbe")
    expect(settings.terminationMinDeadlineMs).toBeGreaterThanOrEqual(num(readiness, "periodSeconds") * num(readiness, "failureThreshold") * 1000)
    // Liveness shares the endpoint that answers 503 while draining: it must not restart a draining pod.
    const liveness = at(container, "livenessProbe")
    expect(num(liveness, "periodSeconds") * num(liveness, "failureThreshold") * 1000).toBeGreaterThan(grace)
  })

  it("runs as the image's non-root user with a read-only root filesystem", () => {
    const podSecurity = at(pod, "spec", "securityContext")
    expect(at(podSecurity, "runAsNonRoot")).toBe(true)
    const uid = num(podSecurity, "runAsUser")
    expect(uid).toBeGreaterThan(0)
    expect(imageUser.split(":")[0]).toBe(String(uid))
    const security = at(container, "securityContext")
    expect(at(security, "readOnlyRootFilesystem")).toBe(true)
    expect(at(security, "allowPrivilegeEscalation")).toBe(false)
    expect(list(security, "capabilities", "drop")).toEqual(["ALL"])
    // With a read-only root, /tmp is the one writable place (stdio MCP servers, Node temp files).
    const tmp = list(container, "volumeMounts").find((m) => at(m, "mountPath") === "/tmp")
    const volume = list(pod, "spec", "volumes").find((v) => at(v, "name") === at(tmp, "name"))
    expect(at(volume, "emptyDir")).toBeDefined()
  })

  it("the ConfigMap is mounted where the image's CMD reads the config, as a directory (hot reload)", () => {
    const file = cmd[cmd.indexOf("-f") + 1]!
    const mount = list(container, "volumeMounts").find((m) => file.startsWith(`${str(m, "mountPath")}/`))
    expect(mount).toBeDefined()
    expect(at(mount, "subPath")).toBeUndefined()
    expect(path.posix.relative(str(mount, "mountPath"), file)).toBe(configKey)
    const volume = list(pod, "spec", "volumes").find((v) => at(v, "name") === at(mount, "name"))
    expect(str(volume, "configMap", "name")).toBe(str(configMap, "metadata", "name"))
    // The Deployment does not override the image's entry point.
    expect(at(container, "command")).toBeUndefined()
    expect(at(container, "args")).toBeUndefined()
  })

  it("Service, PodDisruptionBudget and HPA select the Deployment's pods; the HPA keeps what the PDB needs", () => {
    const podLabels = labels(pod, "metadata", "labels")
    expect(labels(deployment, "spec", "selector", "matchLabels")).toEqual(podLabels)
    for (const selector of [labels(service, "spec", "selector"), labels(pdb, "spec", "selector", "matchLabels")]) {
      for (const [k, v] of Object.entries(selector)) expect(podLabels[k]).toBe(v)
    }
    expect(str(hpa, "spec", "scaleTargetRef", "kind")).toBe("Deployment")
    expect(str(hpa, "spec", "scaleTargetRef", "name")).toBe(str(deployment, "metadata", "name"))
    expect(num(hpa, "spec", "minReplicas")).toBeGreaterThan(num(pdb, "spec", "maxUnavailable"))
    expect(num(hpa, "spec", "minReplicas")).toBeLessThanOrEqual(num(hpa, "spec", "maxReplicas"))
    // CPU utilisation is relative to the request: without one the HPA cannot scale.
    expect(str(container, "resources", "requests", "cpu")).toMatch(/^\d+m?$/)
  })
})

describe("the gateway started from the ConfigMap", () => {
  let gw: Running
  let port: number
  beforeAll(async () => {
    port = await freePort()
    // Only the listen port changes (8080 may be taken here); everything else is the shipped text.
    const doc = YAML.parseDocument(configText)
    doc.setIn(["binds", 0, "port"], port)
    gw = await startGateway(doc.toString())
  })
  afterAll(async () => {
    await gw?.stop()
  })

  it("answers 200 on the probe paths the Deployment names, and 404 on a path it does not serve", async () => {
    for (const probe of ["readinessProbe", "livenessProbe"]) {
      const res = await fetch(`http://127.0.0.1:${gw.ports.readiness}${str(container, probe, "httpGet", "path")}`)
      expect(res.status).toBe(200)
      expect(await res.text()).toBe("ready\n")
    }
    expect((await fetch(`http://127.0.0.1:${gw.ports.readiness}/healthz/live`)).status).toBe(404)
  })

  it("serves Prometheus text on the scrape path the pod's annotations name", async () => {
    const res = await fetch(`http://127.0.0.1:${gw.ports.stats}${str(pod, "metadata", "annotations", "prometheus.io/path")}`)
    expect(res.status).toBe(200)
    expect(await res.text()).toContain("agentgateway_build_info")
  })

  it("serves the config's routes on the data plane", async () => {
    const reply = await send(port, "GET", "/ping")
    expect([reply.status, reply.body]).toEqual([200, "pong\n"])
  })
})

describe("deploy/Dockerfile", () => {
  const pkg: { readonly bin: Record<string, string>; readonly scripts: Record<string, string> } = JSON.parse(read("package.json"))

  it("every stage is Node 24", () => {
    expect(stages.length).toBeGreaterThanOrEqual(2)
    for (const stage of stages) expect(stage.image).toMatch(/^node:24(?:[.-]|$)/)
  })

  it("the runtime stage runs as a numeric non-root user with production dependencies only", () => {
    expect(imageUser).toMatch(/^[1-9]\d*(?::\d+)?$/)
    const copies = instruction(final, "COPY")
    const depsStage = stages.find((s) => copies.some((c) => c.startsWith(`--from=${s.name} `) && c.includes("node_modules")))
    expect(depsStage).toBeDefined()
    expect(instruction(depsStage!, "RUN").some((r) => /npm ci\b.*--omit=dev/.test(r))).toBe(true)
    // package.json is read at start (src/Version.ts).
    expect(copies.some((c) => /^package\.json\b/.test(c))).toBe(true)
    // The runtime stage builds nothing: no npm install, no compiler.
    expect(instruction(final, "RUN")).toEqual([])
  })

  it("the runtime stage caps V8's young generation (peak memory under load, README Operating > Memory), a flag node accepts there", () => {
    const env = instruction(final, "ENV")
    // And glibc's arenas, so that the gateway need not re-execute itself to cap them.
    expect(env).toContain(`MALLOC_ARENA_MAX=${MALLOC_ARENAS}`)
    expect(env).toContain(`NODE_OPTIONS=--max-semi-space-size=${YOUNG_SEMI_SPACE_MIB}`)
    // Node refuses to start with a V8 flag it does not allow in NODE_OPTIONS; this one it takes.
    const res = spawnSync(process.execPath, ["-e", "console.log(require('v8').getHeapStatistics().total_heap_size > 0)"], {
      encoding: "utf8",
      env: { ...process.env, NODE_OPTIONS: `--max-semi-space-size=${YOUNG_SEMI_SPACE_MIB}` }
    })
    expect(res.stderr).toBe("")
    expect(res.stdout.trim()).toBe("true")
  })

  it("CMD runs the script the build emits for the package's bin", () => {
    expect(cmd[0]).toBe("node")
    const script = cmd[1]!
    expect(Object.values(pkg.bin)).toContain(script)
    // tsconfig.build.json maps src/ onto dist/: the script's source is src/<same path>.ts.
    const build: { readonly compilerOptions: { readonly outDir: string; readonly rootDir: string } } = JSON.parse(read("tsconfig.build.json"))
    const source = path.join(build.compilerOptions.rootDir, path.relative(build.compilerOptions.outDir, script)).replace(/\.js$/, ".ts")
    expect(fs.existsSync(path.join(ROOT, source))).toBe(true)
    // The build stage runs the package's build (that tsconfig, then the bundle), and the runtime
    // copies its output directory.
    expect(pkg.scripts["build"]).toContain("tsconfig.build.json")
    const builder = stages.find((s) => instruction(s, "RUN").some((r) => /^npm run build$/.test(r)))
    expect(builder).toBeDefined()
    expect(instruction(final, "COPY")).toContain(`--from=${builder!.name} /app/${build.compilerOptions.outDir} ./${build.compilerOptions.outDir}`)
    // `npm test` builds before testing: the file exists after a build.
    expect(fs.existsSync(path.join(ROOT, script))).toBe(true)
  })

  it(".dockerignore keeps host builds and modules out, and everything the Dockerfile copies in", () => {
    const ignored = read(".dockerignore").split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"))
    expect(ignored).toEqual(expect.arrayContaining(["node_modules", "dist", ".git"]))
    const sources = stages.flatMap((s) => instruction(s, "COPY")).filter((c) => !c.startsWith("--from=")).flatMap((c) => c.split(/\s+/).slice(0, -1))
    expect(sources.length).toBeGreaterThan(0)
    for (const source of sources) {
      expect(ignored).not.toContain(source)
      expect(fs.existsSync(path.join(ROOT, source))).toBe(true)
    }
  })
})
