/**
 * Responses a client stops reading (security.md #9, slow read): the gateway has bytes for the
 * client that the connection does not take. Backpressure already bounds what is held (a
 * streamed body pauses its upstream; the MCP and A2A streams stop producing), but without a
 * deadline a client that reads nothing kept the connection, the upstream exchange and its
 * buffers for as long as it liked: a few thousand such connections hold a gateway's sockets
 * and memory.
 *
 * A connection is watched from the moment its output backs up (a streamed write that asks to
 * wait, or a buffered body the kernel did not take at once) until nothing is pending. It counts
 * as stalled when, for `RESPONSE_SEND_TIMEOUT` (30 s), the client took no byte. A slow reader
 * that takes some bytes is never cut, and a stream with nothing to send (a quiet SSE stream, a
 * long poll) is not watched at all, so this is nginx's `send_timeout`, not a duration limit. A
 * stalled connection is destroyed, which aborts the upstream exchange (the listener's `close`
 * handler), and its access-log line says `response send timeout`.
 *
 * "Pending" is what Node has not yet seen written (`writableLength`, a write counting until
 * libuv wrote all of it). Progress is `bytesWritten` (what the gateway wrote) minus what libuv
 * still queues for the socket (`writeQueueSize` of the TCP or TLS handle, which moves with
 * every partial write even while one large write is in flight): it grows when the kernel takes
 * bytes, and also when the gateway writes more, which backpressure bounds to a chunk past the
 * point where writes ask to wait (SSE keep-alive comments are skipped then). Sampled pending
 * bytes alone are no measure: a steady reader's socket refills between checks.
 *
 * @since 0.1.0
 */
import type { ServerResponse } from "node:http"
import type { Socket } from "node:net"
import { Sweep, type Verdict } from "./Sweep.ts"

/** Default longest time a response may wait for the client to take any byte (RESPONSE_SEND_TIMEOUT). */
export const DEFAULT_SEND_TIMEOUT_MS = 30_000

/** Where the stall is recorded for the request's access-log line (the request context). */
export interface StallMark {
  sendTimedOut: boolean
}

interface Watched {
  readonly socket: Socket
  readonly res: ServerResponse
  readonly mark: StallMark
  progress: number
  since: number
  bagIndex: number
}

/** The handle's libuv write queue, where Node exposes it (TCP and TLS handles do). */
interface QueuedHandle {
  readonly writeQueueSize?: number
}

const queuedOf = (socket: Socket): number =>
  (socket as unknown as { readonly _handle?: QueuedHandle | null })._handle?.writeQueueSize ?? 0

/**
 * Whether anything is pending: `writableLength` counts a write until its callback, which runs
 * once libuv wrote all of it, so the handle's queue is empty whenever it is 0.
 */
const pendingOf = (socket: Socket): number => socket.writableLength

const progressOf = (socket: Socket): number => socket.bytesWritten - queuedOf(socket)

export class SendWatch {
  private readonly sweep: Sweep<Watched>
  private readonly watched = new WeakSet<Socket>()

  /** `idleMs()` is read at each check; 0 turns the watch off. */
  constructor(idleMs: () => number) {
    this.sweep = new Sweep(idleMs, this.check)
  }

  /**
   * Watches `res`'s connection if it has output pending and is not watched yet. If the client
   * then takes no byte for the limit, `mark.sendTimedOut` is set and the response destroyed.
   * Cheap when nothing is pending (the usual case): one property read.
   */
  watch(res: ServerResponse, mark: StallMark): void {
    const socket = res.socket
    if (socket === null || pendingOf(socket) === 0) return
    if (socket.destroyed || this.watched.has(socket) || this.sweep.limit() <= 0) return
    this.watched.add(socket)
    this.sweep.add({ socket, res, mark, progress: progressOf(socket), since: performance.now(), bagIndex: -1 })
  }

  private readonly check = (w: Watched, now: number, idle: number): Verdict => {
    const socket = w.socket
    if (idle <= 0 || socket.destroyed || pendingOf(socket) === 0) {
      this.watched.delete(socket)
      return "drop"
    }
    const progress = progressOf(socket)
    if (progress > w.progress) {
      w.progress = progress
      w.since = now
    }
    if (now - w.since < idle) return "keep"
    this.watched.delete(socket)
    w.mark.sendTimedOut = true
    // The connection, not just the response: the client may be pipelining more requests behind it.
    w.res.destroy()
    socket.destroy()
    return "drop"
  }
}
