/**
 * Token buckets kept in Redis, so several gateway replicas share one limit without a rate
 * limit service: the `redis` backend of `remoteRateLimit` (an effect-agentgateway extension).
 *
 * One Lua script decides a whole request atomically: it refills every bucket the request
 * touches (same rule as `localRateLimit`: a bucket starts full and every whole `interval` since
 * its last refill adds `amount`, capped at `capacity`), and either takes `cost` from all of them
 * or, if any has fewer than `max(cost, 1)` tokens, takes nothing and reports the empty one.
 * Time is the Redis server's `TIME`, so replicas with skewed clocks still agree. A bucket is a
 * hash `{a: available, r: next refill (ms)}` that expires once it would be full again, so idle
 * descriptors cost no memory. `take` mode (used to charge a cost known only after the response)
 * subtracts without checking and may leave a bucket in debt, which later refills pay off.
 *
 * The script is sent by `EVALSHA`; on `NOSCRIPT` (a restarted or flushed server) it is sent
 * once with `EVAL`, which loads it again.
 *
 * Bounded: every command has `commandTimeoutMs`; commands are never queued while disconnected
 * (`enableOfflineQueue: false`), so with Redis down a request fails at once and the caller's
 * failure mode decides. Only the first connection is waited for, at most `commandTimeoutMs`.
 * Reconnects back off up to `RECONNECT_MAX_MS`. `ioredis` is loaded with the first Redis-backed
 * policy, so a gateway without one never loads it.
 *
 * @since 0.1.0
 */
import { createHash } from "node:crypto"
import type { Redis } from "ioredis"

/** Longest reconnect back-off. */
export const RECONNECT_MAX_MS = 1000

/** Descriptor text longer than this is hashed into the key, so keys stay bounded. */
export const MAX_PLAIN_KEY_CHARS = 256

export const KEY_PREFIX = "agentgateway:ratelimit:"

export const SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local take = ARGV[1] == 'take'
local n = #KEYS
local avail, refill, caps = {}, {}, {}
local empty = 0
for i = 1, n do
  local b = 1 + (i - 1) * 4
  local cap, amount, interval, cost = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local s = redis.call('HMGET', KEYS[i], 'a', 'r')
  local a, r = tonumber(s[1]), tonumber(s[2])
  if a == nil or r == nil then
    a, r = cap, now + interval
  elseif now >= r then
    local k = math.floor((now - r) / interval) + 1
    r = r + k * interval
    a = math.min(cap, a + k * amount)
  end
  if a > cap then a = cap end
  avail[i], refill[i], caps[i] = a, r, cap
  if a < math.max(cost, 1) and (empty == 0 or r > refill[empty]) then empty = i end
end
local allowed = take or empty == 0
if allowed then
  for i = 1, n do avail[i] = avail[i] - tonumber(ARGV[1 + (i - 1) * 4 + 4]) end
end
local pick = empty
if allowed then
  pick = 1
  for i = 2, n do
    if avail[i] < avail[pick] or (avail[i] == avail[pick] and refill[i] > refill[pick]) then pick = i end
  end
end
for i = 1, n do
  local b = 1 + (i - 1) * 4
  local amount, interval = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local missing = caps[i] - avail[i]
  local ttl = refill[i] - now
  if missing > 0 then ttl = ttl + (math.ceil(missing / amount) - 1) * interval end
  redis.call('HSET', KEYS[i], 'a', avail[i], 'r', refill[i])
  redis.call('PEXPIRE', KEYS[i], math.max(ttl, 1))
end
return {allowed and 1 or 0, pick - 1, avail[pick], refill[pick] - now, caps[pick]}
`

const SCRIPT_SHA = createHash("sha1").update(SCRIPT).digest("hex")

export interface Bucket {
  /** From `key(domain, entries)`. */
  readonly key: string
  readonly capacity: number
  readonly amount: number
  readonly intervalMs: number
  readonly cost: number
}

export interface Decision {
  readonly allowed: boolean
  /** Index (into the buckets passed) of the most constrained bucket. */
  readonly index: number
  /** Its tokens left (never below 0). */
  readonly remaining: number
  /** Milliseconds until its next refill. */
  readonly resetMs: number
  readonly capacity: number
}

/** The Redis key of a descriptor: readable when short, hashed when long. */
export const key = (domain: string, entries: ReadonlyArray<readonly [string, string]>): string => {
  const text = JSON.stringify(entries)
  return text.length <= MAX_PLAIN_KEY_CHARS
    ? `${KEY_PREFIX}${domain}|${text}`
    : `${KEY_PREFIX}${domain}|sha256:${createHash("sha256").update(text).digest("hex")}`
}

export class RedisUnavailable extends Error {}

export interface Settings {
  readonly url: string
  readonly commandTimeoutMs: number
  /** Called on connection errors (ioredis emits them on every failed reconnect). */
  readonly onError: (error: Error) => void
}

const isNoScript = (error: unknown): boolean => error instanceof Error && error.message.startsWith("NOSCRIPT")

const toInt = (v: unknown): number => (typeof v === "number" ? v : Number(v))

export class RedisRateLimiter {
  private readonly client: Redis
  private readonly timeoutMs: number
  private ready = false

  constructor(client: Redis, timeoutMs: number) {
    this.client = client
    this.timeoutMs = timeoutMs
    client.on("ready", () => {
      this.ready = true
    })
  }

  /** Resolves once connected, or rejects after the timeout; only the first connect is waited for. */
  private whenReady(): Promise<void> {
    if (this.client.status === "ready") return Promise.resolve()
    if (this.ready || this.client.status === "end") return Promise.reject(new RedisUnavailable(`redis ${this.client.status}`))
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.client.off("ready", onReady)
        reject(new RedisUnavailable("redis connect timed out"))
      }, this.timeoutMs)
      const onReady = () => {
        clearTimeout(timer)
        resolve()
      }
      this.client.once("ready", onReady)
    })
  }

  private async run(buckets: ReadonlyArray<Bucket>, mode: "check" | "take"): Promise<unknown> {
    await this.whenReady()
    const args: Array<string | number> = [mode]
    for (const b of buckets) args.push(b.capacity, b.amount, b.intervalMs, b.cost)
    const keys = buckets.map((b) => b.key)
    try {
      return await this.client.evalsha(SCRIPT_SHA, keys.length, ...keys, ...args)
    } catch (error) {
      if (!isNoScript(error)) throw error
      return await this.client.eval(SCRIPT, keys.length, ...keys, ...args)
    }
  }

  /** Takes `cost` from every bucket, or nothing when one lacks it (`take`: always takes). */
  async decide(buckets: ReadonlyArray<Bucket>, mode: "check" | "take"): Promise<Decision> {
    const reply = await this.run(buckets, mode)
    if (!Array.isArray(reply) || reply.length !== 5) throw new Error("unexpected reply from the rate limit script")
    return {
      allowed: toInt(reply[0]) === 1,
      index: toInt(reply[1]),
      remaining: Math.max(0, toInt(reply[2])),
      resetMs: Math.max(0, toInt(reply[3])),
      capacity: toInt(reply[4])
    }
  }

  close(): Promise<void> {
    this.client.disconnect(false)
    return Promise.resolve()
  }
}

export const connect = async (settings: Settings): Promise<RedisRateLimiter> => {
  const { Redis } = await import("ioredis")
  const client = new Redis(settings.url, {
    commandTimeout: settings.commandTimeoutMs,
    connectTimeout: settings.commandTimeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (times: number) => Math.min(times * 50, RECONNECT_MAX_MS),
    lazyConnect: false
  })
  client.on("error", settings.onError)
  return new RedisRateLimiter(client, settings.commandTimeoutMs)
}
