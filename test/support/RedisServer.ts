/**
 * A real `redis-server` (the Debian package, /usr/bin/redis-server) for tests: started on a
 * free loopback port with persistence off, killed by `stop`.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as net from "node:net"
import { freePort } from "./Harness.ts"

export const REDIS_SERVER = process.env["REDIS_SERVER"] ?? "/usr/bin/redis-server"

/** How long redis-server may take to listen. */
const START_TIMEOUT_MS = 10_000

export interface RedisServer {
  readonly port: number
  readonly url: string
  /** One raw command over RESP (e.g. `["SCRIPT", "FLUSH"]`); resolves with the raw reply text. */
  command(args: ReadonlyArray<string>): Promise<string>
  stop(): Promise<void>
  /** Starts it again on the same port (after `stop`). */
  restart(): Promise<void>
}

const waitForPort = async (port: number, deadline: number): Promise<void> => {
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.end()
        resolve(true)
      })
      socket.on("error", () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`redis-server did not listen on ${port}`)
}

const launch = async (port: number): Promise<ChildProcess> => {
  const child = spawn(REDIS_SERVER, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" })
  const failed = new Promise<never>((_, reject) => child.once("error", (e) => reject(new Error(`cannot start ${REDIS_SERVER}: ${e.message}`))))
  await Promise.race([waitForPort(port, Date.now() + START_TIMEOUT_MS), failed])
  return child
}

export const startRedis = async (): Promise<RedisServer> => {
  const port = await freePort()
  let child: ChildProcess | undefined = await launch(port)
  const stop = async () => {
    const c = child
    child = undefined
    if (c === undefined || c.exitCode !== null) return
    await new Promise<void>((resolve) => {
      c.once("exit", () => resolve())
      c.kill("SIGKILL")
    })
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    command: (args) =>
      new Promise((resolve, reject) => {
        const socket = net.connect(port, "127.0.0.1")
        let reply = ""
        socket.on("data", (d) => {
          reply += d.toString()
          if (reply.endsWith("\r\n")) {
            socket.end()
            resolve(reply)
          }
        })
        socket.on("error", reject)
        socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`)
      }),
    stop,
    restart: async () => {
      child = await launch(port)
    }
  }
}
