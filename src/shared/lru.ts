/**
 * A bounded least-recently-used map: verified credentials (JWTs, bcrypt checks) are kept so
 * the expensive verification runs once per credential, never unbounded in memory. A `Map`
 * keeps insertion order, so re-inserting on a hit makes the first key the least recent.
 *
 * @since 0.1.0
 */
export class BoundedLru<K, V> {
  readonly #entries = new Map<K, V>()
  readonly capacity: number

  constructor(capacity: number) {
    this.capacity = capacity
  }

  get size(): number {
    return this.#entries.size
  }

  get(key: K): V | undefined {
    const value = this.#entries.get(key)
    if (value === undefined) return undefined
    this.#entries.delete(key)
    this.#entries.set(key, value)
    return value
  }

  set(key: K, value: V): void {
    this.#entries.delete(key)
    this.#entries.set(key, value)
    if (this.#entries.size > this.capacity) {
      const oldest = this.#entries.keys().next()
      if (oldest.done !== true) this.#entries.delete(oldest.value)
    }
  }

  delete(key: K): void {
    this.#entries.delete(key)
  }

  clear(): void {
    this.#entries.clear()
  }
}
