/**
 * The part of autocannon 9's programmatic API the benchmarks use (the package ships no types).
 */
declare module "autocannon" {
  import type { EventEmitter } from "node:events"

  namespace autocannon {
    interface Options {
      readonly url: string
      readonly connections?: number
      /** Seconds. */
      readonly duration?: number
      readonly pipelining?: number
      /** Seconds. */
      readonly timeout?: number
      readonly method?: string
      readonly body?: string | Buffer
      readonly headers?: Record<string, string>
      readonly title?: string
      readonly bailout?: number
      readonly excludeErrorStats?: boolean
      readonly expectBody?: string
      readonly skipAggregateResult?: boolean
    }

    interface Histogram {
      readonly average: number
      readonly mean: number
      readonly stddev: number
      readonly min: number
      readonly max: number
      readonly total?: number
      readonly p50: number
      readonly p90: number
      readonly p97_5: number
      readonly p99: number
    }

    interface Result {
      readonly title?: string
      readonly url: string
      readonly connections: number
      /** Seconds. */
      readonly duration: number
      readonly errors: number
      readonly timeouts: number
      readonly mismatches: number
      readonly non2xx: number
      readonly resets: number
      readonly "1xx": number
      readonly "2xx": number
      readonly "3xx": number
      readonly "4xx": number
      readonly "5xx": number
      readonly statusCodeStats: Record<string, { readonly count: number }>
      /** Milliseconds (whole milliseconds: autocannon's histogram is 1 ms coarse). */
      readonly latency: Histogram
      /** Requests per second over the samples; `total` is the number of completed requests. */
      readonly requests: Histogram & { readonly total: number; readonly sent: number }
      readonly throughput: Histogram
    }

    interface Instance extends EventEmitter {
      stop(): void
      /** Every response: the client, its status code, bytes read, response time in ms (fractional). */
      on(event: "response", listener: (client: unknown, statusCode: number, bytes: number, responseTime: number) => void): this
      on(event: "reqError", listener: (error: Error) => void): this
      on(event: "done", listener: (result: Result) => void): this
    }
  }

  function autocannon(options: autocannon.Options, callback: (error: Error | null, result: autocannon.Result) => void): autocannon.Instance

  export = autocannon
}
