import { spawn } from "node:child_process"
import { setTimeout as sleep } from "node:timers/promises"
import { Pool } from "undici"
import { forkServer, startGateway, pidOf } from "./lib.ts"
const N = 8000
const up = await forkServer("upstream", "upstream.ts", [])
const baseline = await forkServer("baseline", "baseline-proxy.ts", [`http://127.0.0.1:${up.port}`])
const gw = await startGateway((port) => `
binds:
- port: ${port}
  listeners:
  - name: bench
    routes:
    - name: bench
      policies:
        requestHeaderModifier: {set: {x-bench: "1"}}
        responseHeaderModifier: {add: {x-served-by: agw}}
        cors: {allowOrigins: ["*"], allowMethods: [GET, POST], allowHeaders: [content-type], maxAge: 10m}
      backends:
      - host: 127.0.0.1:${up.port}
`, "x")
const run = async (name: string, port: number, pid: number) => {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 8 })
  const get = async () => { const r = await pool.request({ method: "GET", path: "/", headers: { origin: "http://example.com" } }); return { h: r.headers, b: await r.body.text() } }
  for (let i = 0; i < 2000; i++) await Promise.all([get(), get(), get(), get(), get(), get(), get(), get()])
  const st = spawn("strace", ["-f", "-p", String(pid), "-o", `/tmp/st/${name}.log`, "-e", "trace=write,writev,read,readv,sendmsg,recvfrom,epoll_pwait,epoll_wait"], { stdio: "ignore" })
  await sleep(1000)
  for (let i = 0; i < N / 8; i++) await Promise.all([get(), get(), get(), get(), get(), get(), get(), get()])
  await sleep(300); st.kill("SIGINT"); await sleep(500)
  const s = await get(); console.log(name, JSON.stringify(s.h), s.b.slice(0, 80))
  await pool.close()
}
await run("baseline", baseline.port, pidOf(baseline.child, "b"))
await run("gateway", gw.port, pidOf(gw.child, "g"))
process.exit(0)
