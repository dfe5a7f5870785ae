/**
 * MCP sessions across a config reload. A reload builds the next snapshot before it closes the
 * running one, so when an MCP backend's snapshot ends it can tell whether a newer build of the
 * same backend (same name) is serving: if that one seals ids with the same key, is stateful and
 * reaches the same targets the same way, it resumes the old sessions from their sealed ids
 * exactly as another replica would, and the old snapshot hands them over (its connections
 * close, the upstream sessions stay) instead of ending them. Otherwise (shutdown, the backend
 * removed or changed, a new key) the sessions end as before and their ids are refused here.
 *
 * One `Handover` per gateway (its snapshots follow each other), provided by `Gateway` to the
 * snapshot build; without one (direct builds, `--validate-only`) a process-wide default serves.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Ir from "../ir/Ir.ts"

/** What a successor must share for a session sealed by a backend build to resume on it. */
export interface Lineage {
  /** The snapshot the build belongs to (its Scope): builds of one snapshot are not each other's successors. */
  readonly snapshot: object
  /** The sealing key. */
  readonly key: Buffer
  readonly stateful: boolean
  /** Target names and transports, by name: a changed host, path or kind is another upstream session space. */
  readonly targets: string
}

export const lineage = (snapshot: object, key: Buffer, ir: Ir.McpBackend): Lineage => ({
  snapshot,
  key,
  stateful: ir.stateful,
  targets: JSON.stringify(
    [...ir.targets].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((t) => [t.name, t.transport])
  )
})

export class Handover {
  /** The newest build of each backend name. */
  private readonly latest = new Map<string, Lineage>()

  /** Records a build of backend `name` (a later snapshot's build replaces an earlier one's). */
  enter(name: string, self: Lineage): void {
    this.latest.set(name, self)
  }

  /**
   * The build `self` ends: whether a newer build of `name` resumes its sessions. With none
   * (shutdown, a failed or removed build), `self` is forgotten.
   */
  leave(name: string, self: Lineage): boolean {
    const next = this.latest.get(name)
    if (next === undefined) return false
    if (next.snapshot === self.snapshot) {
      this.latest.delete(name)
      return false
    }
    return next.stateful && self.stateful && next.key.equals(self.key) && next.targets === self.targets
  }
}

export const CurrentHandover = Context.Reference<Handover>("agw/mcp/Handover", { defaultValue: () => new Handover() })
