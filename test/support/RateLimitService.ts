/**
 * A small Envoy rate limit service (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`)
 * on `@grpc/grpc-js`, for end-to-end tests. It decodes and encodes with protobufjs from the
 * proto text below (field numbers as in Envoy's rls.proto / ratelimit.proto / base.proto), not
 * with the gateway's own codec, so a codec bug on either side shows up as a wire mismatch.
 *
 * Limits are fixed windows per descriptor (the reference `envoyproxy/ratelimit` model): a rule
 * matches a descriptor whose entries include all of its `match` pairs (a `value` of `undefined`
 * matches any value) and counts per distinct descriptor.
 */
import * as grpc from "@grpc/grpc-js"
import protobuf from "protobufjs"

const PROTO = `
syntax = "proto3";
package envoy.service.ratelimit.v3;
message UInt64Value { uint64 value = 1; }
message Duration { int64 seconds = 1; int32 nanos = 2; }
message HeaderValue { string key = 1; string value = 2; bytes raw_value = 3; }
message RateLimitDescriptor {
  message Entry { string key = 1; string value = 2; }
  message RateLimitOverride { uint32 requests_per_unit = 1; int32 unit = 2; }
  repeated Entry entries = 1;
  RateLimitOverride limit = 2;
  UInt64Value hits_addend = 3;
}
message RateLimitRequest { string domain = 1; repeated RateLimitDescriptor descriptors = 2; uint32 hits_addend = 3; }
message RateLimitResponse {
  enum Code { UNKNOWN = 0; OK = 1; OVER_LIMIT = 2; }
  message RateLimit { string name = 3; uint32 requests_per_unit = 1; int32 unit = 2; }
  message DescriptorStatus { Code code = 1; RateLimit current_limit = 2; uint32 limit_remaining = 3; Duration duration_until_reset = 4; }
  Code overall_code = 1;
  repeated DescriptorStatus statuses = 2;
  repeated HeaderValue response_headers_to_add = 3;
  repeated HeaderValue request_headers_to_add = 4;
  bytes raw_body = 5;
}
`

const root = protobuf.parse(PROTO, { keepCase: true }).root
const RequestType = root.lookupType("envoy.service.ratelimit.v3.RateLimitRequest")
const ResponseType = root.lookupType("envoy.service.ratelimit.v3.RateLimitResponse")

export const METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

export const UNIT_SECONDS: Record<string, number> = { second: 1, minute: 60, hour: 3600, day: 86_400 }
const UNIT_ENUM: Record<string, number> = { second: 1, minute: 2, hour: 3, day: 4 }

/** A decoded request, as the peer saw it on the wire. */
export interface SeenRequest {
  readonly domain: string
  readonly hitsAddend: number
  readonly descriptors: ReadonlyArray<{
    readonly entries: ReadonlyArray<{ readonly key: string; readonly value: string }>
    readonly hitsAddend: number | undefined
    readonly limit: { readonly requestsPerUnit: number; readonly unit: number } | undefined
  }>
  readonly metadata: Record<string, string>
}

export interface Rule {
  readonly match: ReadonlyArray<{ readonly key: string; readonly value?: string }>
  readonly requestsPerUnit: number
  readonly unit: "second" | "minute" | "hour" | "day"
}

export interface Answer {
  readonly responseHeaders?: ReadonlyArray<readonly [string, string]>
  readonly requestHeaders?: ReadonlyArray<readonly [string, string]>
}

export interface RateLimitService {
  readonly port: number
  readonly address: string
  readonly requests: Array<SeenRequest>
  /** Replace the rules, reset counters. */
  setRules(rules: ReadonlyArray<Rule>): void
  /** Extra headers sent with every answer. */
  setAnswer(answer: Answer): void
  /** Answer every call with this gRPC status instead (undefined: normal). */
  failWith(code: grpc.status | undefined): void
  close(): Promise<void>
}

interface Decoded {
  domain?: string
  hits_addend?: number
  descriptors?: Array<{
    entries?: Array<{ key?: string; value?: string }>
    hits_addend?: { value?: number | { toNumber(): number } }
    limit?: { requests_per_unit?: number; unit?: number }
  }>
}

const num = (v: number | { toNumber(): number } | undefined): number => (v === undefined ? 0 : typeof v === "number" ? v : v.toNumber())

export const startRateLimitService = (
  initial: ReadonlyArray<Rule> = [],
  credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure()
): Promise<RateLimitService> => {
  const requests: Array<SeenRequest> = []
  let rules = initial
  let answer: Answer = {}
  let failure: grpc.status | undefined
  const counters = new Map<string, { count: number; windowEnd: number }>()
  const server = new grpc.Server()
  const identity = (b: Buffer) => b

  server.register<Buffer, Buffer>(
    METHOD,
    (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      const decoded: Decoded = RequestType.toObject(RequestType.decode(call.request), { longs: Number, defaults: false })
      const metadata: Record<string, string> = {}
      for (const [k, v] of Object.entries(call.metadata.getMap())) metadata[k] = String(v)
      const seen: SeenRequest = {
        domain: decoded.domain ?? "",
        hitsAddend: decoded.hits_addend ?? 0,
        descriptors: (decoded.descriptors ?? []).map((d) => ({
          entries: (d.entries ?? []).map((e) => ({ key: e.key ?? "", value: e.value ?? "" })),
          hitsAddend: d.hits_addend === undefined ? undefined : num(d.hits_addend.value),
          limit: d.limit === undefined ? undefined : { requestsPerUnit: d.limit.requests_per_unit ?? 0, unit: d.limit.unit ?? 0 }
        })),
        metadata
      }
      requests.push(seen)
      if (failure !== undefined) {
        callback({ code: failure, details: "scripted failure" })
        return
      }
      const now = Date.now()
      let over = false
      const statuses = seen.descriptors.map((d) => {
        const rule = rules.find((r) => r.match.every((m) => d.entries.some((e) => e.key === m.key && (m.value === undefined || e.value === m.value))))
        if (rule === undefined) return { code: 1 }
        const hits = d.hitsAddend ?? (seen.hitsAddend === 0 ? 1 : seen.hitsAddend)
        const key = `${seen.domain}|${JSON.stringify(d.entries)}`
        let c = counters.get(key)
        if (c === undefined || now >= c.windowEnd) {
          c = { count: 0, windowEnd: now + UNIT_SECONDS[rule.unit]! * 1000 }
          counters.set(key, c)
        }
        const overThis = c.count + hits > rule.requestsPerUnit
        if (!overThis) c.count += hits
        if (overThis) over = true
        const resetMs = c.windowEnd - now
        return {
          code: overThis ? 2 : 1,
          current_limit: { requests_per_unit: rule.requestsPerUnit, unit: UNIT_ENUM[rule.unit] },
          limit_remaining: Math.max(0, rule.requestsPerUnit - c.count),
          duration_until_reset: { seconds: Math.floor(resetMs / 1000), nanos: (resetMs % 1000) * 1_000_000 }
        }
      })
      const response = ResponseType.fromObject({
        overall_code: over ? 2 : 1,
        statuses,
        response_headers_to_add: (answer.responseHeaders ?? []).map(([key, value]) => ({ key, value })),
        request_headers_to_add: (answer.requestHeaders ?? []).map(([key, value]) => ({ key, value }))
      })
      callback(null, Buffer.from(ResponseType.encode(response).finish()))
    },
    identity,
    identity,
    "unary"
  )

  return new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (error, port) => {
      if (error) return reject(error)
      resolve({
        port,
        address: `127.0.0.1:${port}`,
        requests,
        setRules: (r) => {
          rules = r
          counters.clear()
        },
        setAnswer: (a) => {
          answer = a
        },
        failWith: (code) => {
          failure = code
        },
        close: () => new Promise((r) => server.tryShutdown(() => r()))
      })
    })
  )
}
