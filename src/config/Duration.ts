/**
 * Go-style duration strings as agentgateway writes them ("100ms", "10s", "1h30m").
 *
 * @since 0.1.0
 */

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000
}

/** Whether `input` is such a duration ("1s", "100ms", "1h30m", "1.5s"). */
export const isDuration = (input: string): boolean => /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h|d))+$/.test(input)

/** Milliseconds of a duration already validated by `Fields.DurationString`. */
export const parseMillis = (input: string): number => {
  let total = 0
  for (const m of input.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)/g)) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!
  }
  return total
}
