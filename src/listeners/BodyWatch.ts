/**
 * Request bodies that stop arriving (security.md #9, slow body), whether a policy reads them
 * into memory (`pipeline/RequestBody.ts`) or they stream to the upstream. The listener has no
 * request timeout, since streams may be long; without this a client that declared a body and
 * then sent nothing more held the connection, a fiber and an upstream request for as long as
 * the upstream waited.
 *
 * Every request with a body is watched until it has arrived. It counts as stalled only while
 * the gateway is waiting for it (the stream flows and nothing is buffered, or it was abandoned
 * after an early answer) and the socket has read no byte for `idleMs`: a body nobody reads yet
 * (policies still running) or one the gateway holds back because the upstream is slow is never
 * the client's fault. One timer per listener port (`Sweep.ts`), running only while some body is
 * watched, checks every `idleMs / 4` (at most 1 s).
 *
 * @since 0.1.0
 */
import type { IncomingMessage } from "node:http"
import type { Socket } from "node:net"
import { Sweep, type Verdict } from "./Sweep.ts"

/** Default longest pause in a body the gateway is reading (REQUEST_BODY_IDLE_TIMEOUT): 408 after it. */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000

export interface Watched {
  readonly req: IncomingMessage
  /** Kept: Node clears `req.socket` once the response is done, while the body may still be coming. */
  readonly socket: Socket
  bytes: number
  since: number
  readonly onStall: () => void
  /** The entry's place in the sweep (`shared/Bag.ts`). */
  bagIndex: number
}

/** The body has not all arrived and its connection is open. */
const stillComing = (req: IncomingMessage, socket: Socket): boolean => !req.complete && !socket.destroyed

/**
 * Whether the gateway is waiting for the client's bytes: the body flows with nothing buffered,
 * or nobody will read it any more (the upstream exchange ended early and undici destroyed it,
 * which leaves Node's connection open for the rest).
 */
const waitingForClient = (req: IncomingMessage): boolean => req.destroyed || (req.readableFlowing === true && req.readableLength === 0)

export class BodyWatch {
  private readonly sweep: Sweep<Watched>

  /** `idleMs()` is read at each check (a reload applies to bodies already watched); 0 turns the watch off. */
  constructor(idleMs: () => number) {
    this.sweep = new Sweep(idleMs, check)
  }

  /**
   * Watches `req`'s body until it has arrived; `onStall` runs once if it stalls first. Returns
   * the entry for `done`, or undefined when there is nothing to watch.
   */
  watch(req: IncomingMessage, onStall: () => void): Watched | undefined {
    const socket = req.socket
    if (this.sweep.limit() <= 0 || !stillComing(req, socket)) return undefined
    const entry: Watched = { req, socket, bytes: socket.bytesRead, since: performance.now(), onStall, bagIndex: -1 }
    this.sweep.add(entry)
    return entry
  }

  /**
   * The exchange is over: forget the entry now if its body has arrived, rather than at the next
   * check (holding a second of finished requests kept them alive past scavenges: +40–60 MiB peak
   * under the 64 KiB POST load). A body still coming stays watched.
   */
  done(entry: Watched): void {
    if (!stillComing(entry.req, entry.socket)) this.sweep.delete(entry)
  }
}

const check = (w: Watched, now: number, idle: number): Verdict => {
  const req = w.req
  if (idle <= 0 || !stillComing(req, w.socket)) return "drop"
  const bytes = w.socket.bytesRead
  if (bytes !== w.bytes || !waitingForClient(req)) {
    w.bytes = bytes
    w.since = now
  } else if (now - w.since >= idle) {
    w.onStall()
    return "drop"
  }
  return "keep"
}
