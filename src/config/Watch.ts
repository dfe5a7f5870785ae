/**
 * Watches the config file and triggers a reload on change. The directory is watched, not the
 * file, so editors that save by rename and ConfigMap symlink swaps are seen; bursts of events
 * are coalesced into one reload.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as path from "node:path"

/** Quiet period after the last file event before reloading. */
export const DEBOUNCE_MS = 200

export const watch = (file: string, onChange: Effect.Effect<void>) =>
  Effect.gen(function*() {
    const context = yield* Effect.context<never>()
    const absolute = path.resolve(file)
    const dir = path.dirname(absolute)
    const base = path.basename(absolute)
    let timer: NodeJS.Timeout | undefined
    let running = false
    let again = false
    const fire = () => {
      if (running) {
        again = true
        return
      }
      running = true
      Effect.runForkWith(context)(
        onChange.pipe(Effect.ensuring(Effect.sync(() => {
          running = false
          if (again) {
            again = false
            fire()
          }
        })))
      )
    }
    yield* Effect.acquireRelease(
      Effect.sync(() =>
        fs.watch(dir, { persistent: false }, (_event, name) => {
          if (name !== null && name !== base && !name.startsWith("..")) return
          if (timer !== undefined) clearTimeout(timer)
          timer = setTimeout(fire, DEBOUNCE_MS)
        })
      ),
      (watcher) =>
        Effect.sync(() => {
          if (timer !== undefined) clearTimeout(timer)
          watcher.close()
        })
    )
  })
