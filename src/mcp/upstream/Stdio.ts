/**
 * stdio targets: one supervised child process per session, JSON-RPC as newline-delimited JSON
 * on stdin/stdout. The child leads its own process group (`detached`) so the whole tree (`npx`
 * and the node it starts, `uvx` and python) is killed together: on session end, idle expiry,
 * gateway shutdown (scope finalizers), and, as a last resort, on process exit.
 *
 * A child that cannot start or dies fails every pending call with a clear error at once:
 * no call waits on a dead process.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process"
import type * as Ir from "../../ir/Ir.ts"
import { LineSplitter } from "../EventStream.ts"
import * as McpSchema from "../McpSchema.ts"
import { type Connect, type Inbound, type Upstream, UpstreamError } from "../Upstream.ts"

/** How long a child gets after SIGTERM before its group is SIGKILLed. */
export const KILL_GRACE_MS = 2000

/** Process groups alive now, killed synchronously if the gateway exits without closing its scopes. */
const liveGroups = new Set<number>()
let exitHookInstalled = false
const installExitHook = () => {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once("exit", () => {
    for (const pgid of liveGroups) killGroup(pgid, "SIGKILL")
  })
}

const killGroup = (pgid: number, signal: NodeJS.Signals) => {
  try {
    process.kill(-pgid, signal)
  } catch {
    // ESRCH: the group is gone already.
  }
}

type Pending = (response: McpSchema.Response | UpstreamError) => void

export const connect = (target: string, spec: Extract<Ir.McpTransport, { _tag: "Stdio" }>): Connect => (inbound: Inbound) =>
  Effect.acquireRelease(
    Effect.sync(() => new StdioConnection(target, spec, inbound)),
    (conn) => conn.close()
  ).pipe(Effect.map((conn): Upstream => conn))

class StdioConnection implements Upstream {
  readonly target: string
  private readonly child: ChildProcessWithoutNullStreams
  private readonly pending = new Map<number, Pending>()
  private nextId = 1
  private failure: string | undefined
  private exited = false
  private readonly exitWaiters: Array<() => void> = []
  private readonly inbound: Inbound

  constructor(target: string, spec: Extract<Ir.McpTransport, { _tag: "Stdio" }>, inbound: Inbound) {
    this.target = target
    this.inbound = inbound
    installExitHook()
    this.child = spawn(spec.cmd, [...spec.args], {
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
      env: spec.clearEnv ? { ...spec.env } : { ...process.env, ...spec.env }
    })
    const pid = this.child.pid
    if (pid !== undefined) liveGroups.add(pid)
    this.child.on("error", (error) => {
      this.fail(pid === undefined ? `failed to start stdio server: ${error.message}` : `stdio server failed: ${error.message}`)
      this.onExit()
    })
    this.child.on("exit", (code, signal) => {
      this.fail(`stdio server exited (${signal ?? `code ${code}`})`)
      this.onExit()
    })
    this.child.stdin.on("error", () => {
      // EPIPE after the child died: the exit handler reports it.
    })
    // Servers log on stderr; it is drained so a chatty child never blocks on a full pipe.
    this.child.stderr.resume()
    const splitter = new LineSplitter((line) => this.onLine(line))
    const stdout = this.child.stdout
    stdout.on("data", (chunk: Buffer) => {
      const error = splitter.push(chunk)
      if (error !== undefined) {
        this.fail(error)
        this.kill("SIGKILL")
      }
    })
  }

  private onLine(line: string): void {
    const message = McpSchema.parseUpstream(line)
    if (message._tag === "Invalid") {
      const pending = typeof message.id === "number" ? this.pending.get(message.id) : undefined
      if (pending !== undefined && typeof message.id === "number") {
        this.pending.delete(message.id)
        pending(new UpstreamError({ target: this.target, message: "invalid response from upstream" }))
      }
      return
    }
    if (message._tag === "Response") {
      const id = message.message.id
      if (typeof id !== "number") return
      const pending = this.pending.get(id)
      if (pending !== undefined) {
        this.pending.delete(id)
        pending(message.message)
      }
      return
    }
    const pause = this.inbound.deliver(message.message)
    if (pause !== undefined && !this.child.stdout.isPaused()) {
      this.child.stdout.pause()
      pause(() => this.child.stdout.resume())
    }
  }

  private fail(reason: string): void {
    if (this.failure !== undefined) return
    this.failure = reason
    const error = new UpstreamError({ target: this.target, message: reason })
    for (const p of this.pending.values()) p(error)
    this.pending.clear()
    this.inbound.closed(reason)
  }

  private onExit(): void {
    if (this.exited) return
    this.exited = true
    if (this.child.pid !== undefined) {
      // The leader is gone; anything it left in its group goes with it.
      killGroup(this.child.pid, "SIGKILL")
      liveGroups.delete(this.child.pid)
    }
    for (const w of this.exitWaiters.splice(0)) w()
  }

  private write(message: unknown): UpstreamError | undefined {
    if (this.failure !== undefined) return new UpstreamError({ target: this.target, message: this.failure })
    this.child.stdin.write(`${JSON.stringify(message)}\n`)
    return undefined
  }

  readonly request = (method: string, params: Record<string, unknown> | undefined) =>
    Effect.callback<McpSchema.Response, UpstreamError>((resume) => {
      const id = this.nextId++
      this.pending.set(id, (r) => resume(r instanceof UpstreamError ? Effect.fail(r) : Effect.succeed(r)))
      const error = this.write(params === undefined ? { jsonrpc: "2.0", id, method } : { jsonrpc: "2.0", id, method, params })
      if (error !== undefined) {
        this.pending.delete(id)
        resume(Effect.fail(error))
        return
      }
      return Effect.sync(() => {
        if (this.pending.delete(id)) this.write({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: id, reason: "cancelled" } })
      })
    })

  readonly send = (message: McpSchema.Notification | McpSchema.Response) =>
    Effect.suspend(() => {
      const error = this.write(message)
      return error === undefined ? Effect.void : Effect.fail(error)
    })

  readonly listen = () => Effect.void

  readonly serverMessages = true
  readonly resumeToken = () => undefined

  private kill(signal: NodeJS.Signals): void {
    if (this.child.pid !== undefined && !this.exited) killGroup(this.child.pid, signal)
  }

  close(): Effect.Effect<void> {
    return Effect.callback<void>((resume) => {
      this.fail("session closed")
      if (this.exited || this.child.pid === undefined) return resume(Effect.void)
      this.exitWaiters.push(() => resume(Effect.void))
      this.child.stdin.end()
      this.kill("SIGTERM")
      const timer = setTimeout(() => this.kill("SIGKILL"), KILL_GRACE_MS)
      this.exitWaiters.push(() => clearTimeout(timer))
    })
  }
}
