/**
 * The messages of Envoy's rate limit service, `envoy.service.ratelimit.v3.RateLimitService/
 * ShouldRateLimit`, trimmed to the fields the gateway reads or writes and encoded by hand on
 * `@bufbuild/protobuf`'s wire primitives (no generated code, no descriptor registry). Field
 * numbers are those of `envoy/service/ratelimit/v3/rls.proto`,
 * `envoy/extensions/common/ratelimit/v3/ratelimit.proto` and `envoy/config/core/v3/base.proto`;
 * unknown fields are skipped on decode, so a newer service's extra fields are harmless.
 *
 * ```proto
 * message RateLimitRequest { string domain = 1; repeated RateLimitDescriptor descriptors = 2; uint32 hits_addend = 3; }
 * message RateLimitDescriptor {
 *   message Entry { string key = 1; string value = 2; }
 *   message RateLimitOverride { uint32 requests_per_unit = 1; RateLimitUnit unit = 2; }
 *   repeated Entry entries = 1; RateLimitOverride limit = 2; google.protobuf.UInt64Value hits_addend = 3;
 * }
 * message RateLimitResponse {
 *   Code overall_code = 1; repeated DescriptorStatus statuses = 2;
 *   repeated HeaderValue response_headers_to_add = 3; repeated HeaderValue request_headers_to_add = 4;
 * }
 * message DescriptorStatus { Code code = 1; RateLimit current_limit = 2; uint32 limit_remaining = 3; google.protobuf.Duration duration_until_reset = 4; }
 * message RateLimit { uint32 requests_per_unit = 1; Unit unit = 2; string name = 3; }
 * message HeaderValue { string key = 1; string value = 2; bytes raw_value = 3; }
 * ```
 *
 * @since 0.1.0
 */
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire"

export const METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

/** `RateLimitResponse.Code`. */
export const Code = { UNKNOWN: 0, OK: 1, OVER_LIMIT: 2 } as const

/** `envoy.type.v3.RateLimitUnit` (also `RateLimitResponse.RateLimit.Unit`). */
export const Unit = { UNKNOWN: 0, SECOND: 1, MINUTE: 2, HOUR: 3, DAY: 4, MONTH: 5, YEAR: 6, WEEK: 7 } as const

/** Seconds of each unit, for the reset header when the service gives no `duration_until_reset`. */
export const UNIT_SECONDS: Readonly<Record<number, number>> = {
  1: 1,
  2: 60,
  3: 3600,
  4: 86_400,
  5: 30 * 86_400,
  6: 365 * 86_400,
  7: 7 * 86_400
}

export interface Entry {
  readonly key: string
  readonly value: string
}

export interface LimitOverride {
  readonly requestsPerUnit: number
  readonly unit: number
}

export interface Descriptor {
  readonly entries: ReadonlyArray<Entry>
  readonly limit?: LimitOverride | undefined
  /** Per-descriptor hits (a `UInt64Value`: set, even to 0, means "this many"). */
  readonly hitsAddend?: number | undefined
}

export interface RateLimitRequest {
  readonly domain: string
  readonly descriptors: ReadonlyArray<Descriptor>
  /** Request-wide hits; 0 means 1 to the service. */
  readonly hitsAddend: number
}

export interface CurrentLimit {
  readonly requestsPerUnit: number
  readonly unit: number
  readonly name: string
}

export interface DescriptorStatus {
  readonly code: number
  readonly currentLimit: CurrentLimit | undefined
  readonly limitRemaining: number
  /** Milliseconds; undefined when the service did not say. */
  readonly durationUntilResetMs: number | undefined
}

export interface HeaderValue {
  readonly key: string
  readonly value: string
}

export interface RateLimitResponse {
  readonly overallCode: number
  readonly statuses: ReadonlyArray<DescriptorStatus>
  readonly responseHeadersToAdd: ReadonlyArray<HeaderValue>
  readonly requestHeadersToAdd: ReadonlyArray<HeaderValue>
}

// ---------------------------------------------------------------------------------------------
// Encode
// ---------------------------------------------------------------------------------------------

const writeDescriptor = (w: BinaryWriter, d: Descriptor): void => {
  for (const e of d.entries) {
    w.tag(1, WireType.LengthDelimited).fork()
    if (e.key !== "") w.tag(1, WireType.LengthDelimited).string(e.key)
    if (e.value !== "") w.tag(2, WireType.LengthDelimited).string(e.value)
    w.join()
  }
  if (d.limit !== undefined) {
    w.tag(2, WireType.LengthDelimited).fork()
    if (d.limit.requestsPerUnit !== 0) w.tag(1, WireType.Varint).uint32(d.limit.requestsPerUnit)
    if (d.limit.unit !== 0) w.tag(2, WireType.Varint).int32(d.limit.unit)
    w.join()
  }
  if (d.hitsAddend !== undefined) {
    w.tag(3, WireType.LengthDelimited).fork()
    if (d.hitsAddend !== 0) w.tag(1, WireType.Varint).uint64(d.hitsAddend)
    w.join()
  }
}

export const encodeRequest = (request: RateLimitRequest): Uint8Array => {
  const w = new BinaryWriter()
  if (request.domain !== "") w.tag(1, WireType.LengthDelimited).string(request.domain)
  for (const d of request.descriptors) {
    w.tag(2, WireType.LengthDelimited).fork()
    writeDescriptor(w, d)
    w.join()
  }
  if (request.hitsAddend !== 0) w.tag(3, WireType.Varint).uint32(request.hitsAddend)
  return w.finish()
}

const writeHeaders = (w: BinaryWriter, field: number, headers: ReadonlyArray<HeaderValue>): void => {
  for (const h of headers) {
    w.tag(field, WireType.LengthDelimited).fork()
    w.tag(1, WireType.LengthDelimited).string(h.key)
    w.tag(2, WireType.LengthDelimited).string(h.value)
    w.join()
  }
}

/** The service side (tests, and anyone embedding a service next to the gateway). */
export const encodeResponse = (response: RateLimitResponse): Uint8Array => {
  const w = new BinaryWriter()
  if (response.overallCode !== 0) w.tag(1, WireType.Varint).int32(response.overallCode)
  for (const s of response.statuses) {
    w.tag(2, WireType.LengthDelimited).fork()
    if (s.code !== 0) w.tag(1, WireType.Varint).int32(s.code)
    if (s.currentLimit !== undefined) {
      w.tag(2, WireType.LengthDelimited).fork()
      w.tag(1, WireType.Varint).uint32(s.currentLimit.requestsPerUnit)
      w.tag(2, WireType.Varint).int32(s.currentLimit.unit)
      if (s.currentLimit.name !== "") w.tag(3, WireType.LengthDelimited).string(s.currentLimit.name)
      w.join()
    }
    if (s.limitRemaining !== 0) w.tag(3, WireType.Varint).uint32(s.limitRemaining)
    if (s.durationUntilResetMs !== undefined) {
      const seconds = Math.floor(s.durationUntilResetMs / 1000)
      const nanos = Math.round((s.durationUntilResetMs - seconds * 1000) * 1_000_000)
      w.tag(4, WireType.LengthDelimited).fork()
      if (seconds !== 0) w.tag(1, WireType.Varint).int64(seconds)
      if (nanos !== 0) w.tag(2, WireType.Varint).int32(nanos)
      w.join()
    }
    w.join()
  }
  writeHeaders(w, 3, response.responseHeadersToAdd)
  writeHeaders(w, 4, response.requestHeadersToAdd)
  return w.finish()
}

// ---------------------------------------------------------------------------------------------
// Decode
// ---------------------------------------------------------------------------------------------

/** Reads the fields of one (sub)message of `length` bytes, calling `field` for each. */
const readMessage = (
  r: BinaryReader,
  length: number,
  field: (no: number, type: WireType) => boolean
): void => {
  const end = r.pos + length
  while (r.pos < end) {
    const [no, type] = r.tag()
    if (!field(no, type)) r.skip(type, no)
  }
}

const readCurrentLimit = (r: BinaryReader): CurrentLimit => {
  let requestsPerUnit = 0
  let unit = 0
  let name = ""
  readMessage(r, r.uint32(), (no, type) => {
    if (no === 1 && type === WireType.Varint) requestsPerUnit = r.uint32()
    else if (no === 2 && type === WireType.Varint) unit = r.int32()
    else if (no === 3 && type === WireType.LengthDelimited) name = r.string()
    else return false
    return true
  })
  return { requestsPerUnit, unit, name }
}

const readDurationMs = (r: BinaryReader): number => {
  let seconds = 0
  let nanos = 0
  readMessage(r, r.uint32(), (no, type) => {
    if (no === 1 && type === WireType.Varint) seconds = Number(r.int64())
    else if (no === 2 && type === WireType.Varint) nanos = r.int32()
    else return false
    return true
  })
  return seconds * 1000 + nanos / 1_000_000
}

const readStatus = (r: BinaryReader): DescriptorStatus => {
  let code = 0
  let currentLimit: CurrentLimit | undefined
  let limitRemaining = 0
  let durationUntilResetMs: number | undefined
  readMessage(r, r.uint32(), (no, type) => {
    if (no === 1 && type === WireType.Varint) code = r.int32()
    else if (no === 2 && type === WireType.LengthDelimited) currentLimit = readCurrentLimit(r)
    else if (no === 3 && type === WireType.Varint) limitRemaining = r.uint32()
    else if (no === 4 && type === WireType.LengthDelimited) durationUntilResetMs = readDurationMs(r)
    else return false
    return true
  })
  return { code, currentLimit, limitRemaining, durationUntilResetMs }
}

const utf8 = new TextDecoder()

const readHeader = (r: BinaryReader): HeaderValue => {
  let key = ""
  let value = ""
  let raw: Uint8Array | undefined
  readMessage(r, r.uint32(), (no, type) => {
    if (no === 1 && type === WireType.LengthDelimited) key = r.string()
    else if (no === 2 && type === WireType.LengthDelimited) value = r.string()
    else if (no === 3 && type === WireType.LengthDelimited) raw = r.bytes()
    else return false
    return true
  })
  // Envoy prefers `raw_value` when set (base.proto: "value" is for UTF-8 only).
  return { key, value: raw !== undefined && raw.length > 0 ? utf8.decode(raw) : value }
}

/** Throws on malformed bytes (the caller turns that into a service failure). */
export const decodeResponse = (bytes: Uint8Array): RateLimitResponse => {
  const r = new BinaryReader(bytes)
  let overallCode = 0
  const statuses: Array<DescriptorStatus> = []
  const responseHeadersToAdd: Array<HeaderValue> = []
  const requestHeadersToAdd: Array<HeaderValue> = []
  readMessage(r, bytes.length, (no, type) => {
    if (no === 1 && type === WireType.Varint) overallCode = r.int32()
    else if (no === 2 && type === WireType.LengthDelimited) statuses.push(readStatus(r))
    else if (no === 3 && type === WireType.LengthDelimited) responseHeadersToAdd.push(readHeader(r))
    else if (no === 4 && type === WireType.LengthDelimited) requestHeadersToAdd.push(readHeader(r))
    else return false
    return true
  })
  return { overallCode, statuses, responseHeadersToAdd, requestHeadersToAdd }
}

const readEntry = (r: BinaryReader): Entry => {
  let key = ""
  let value = ""
  readMessage(r, r.uint32(), (no, type) => {
    if (no === 1 && type === WireType.LengthDelimited) key = r.string()
    else if (no === 2 && type === WireType.LengthDelimited) value = r.string()
    else return false
    return true
  })
  return { key, value }
}

const readDescriptor = (r: BinaryReader): Descriptor => {
  const entries: Array<Entry> = []
  let limit: LimitOverride | undefined
  let hitsAddend: number | undefined
  readMessage(r, r.uint32(), (no, type) => {
    if (no === 1 && type === WireType.LengthDelimited) entries.push(readEntry(r))
    else if (no === 2 && type === WireType.LengthDelimited) {
      let requestsPerUnit = 0
      let unit = 0
      readMessage(r, r.uint32(), (n, t) => {
        if (n === 1 && t === WireType.Varint) requestsPerUnit = r.uint32()
        else if (n === 2 && t === WireType.Varint) unit = r.int32()
        else return false
        return true
      })
      limit = { requestsPerUnit, unit }
    } else if (no === 3 && type === WireType.LengthDelimited) {
      let value = 0
      readMessage(r, r.uint32(), (n, t) => {
        if (n === 1 && t === WireType.Varint) value = Number(r.uint64())
        else return false
        return true
      })
      hitsAddend = value
    } else return false
    return true
  })
  return { entries, limit, hitsAddend }
}

/** The service side of `encodeRequest`. */
export const decodeRequest = (bytes: Uint8Array): RateLimitRequest => {
  const r = new BinaryReader(bytes)
  let domain = ""
  const descriptors: Array<Descriptor> = []
  let hitsAddend = 0
  readMessage(r, bytes.length, (no, type) => {
    if (no === 1 && type === WireType.LengthDelimited) domain = r.string()
    else if (no === 2 && type === WireType.LengthDelimited) descriptors.push(readDescriptor(r))
    else if (no === 3 && type === WireType.Varint) hitsAddend = r.uint32()
    else return false
    return true
  })
  return { domain, descriptors, hitsAddend }
}
