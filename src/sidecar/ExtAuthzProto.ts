/**
 * The messages of Envoy's external authorization service, `envoy.service.auth.v3.
 * Authorization/Check`, trimmed to the fields the gateway writes or reads and encoded by hand
 * on `@bufbuild/protobuf`'s wire primitives (no generated code, no descriptor registry). Field
 * numbers are those of `envoy/service/auth/v3/{external_auth,attribute_context}.proto`,
 * `envoy/config/core/v3/{address,base}.proto`, `envoy/type/v3/http_status.proto`,
 * `google/rpc/status.proto` and `google/protobuf/{struct,timestamp,wrappers}.proto`. Unknown
 * fields are skipped on decode, so a newer service's extra fields are harmless.
 *
 * ```proto
 * message CheckRequest { AttributeContext attributes = 1; }
 * message AttributeContext {
 *   Peer source = 1; Peer destination = 2; Request request = 4;
 *   map<string, string> context_extensions = 10; Metadata metadata_context = 11; TLSSession tls_session = 12;
 * }
 * message Peer { Address address = 1; string principal = 4; }
 * message Address { SocketAddress socket_address = 1; }
 * message SocketAddress { Protocol protocol = 1; string address = 2; uint32 port_value = 3; }
 * message Request { google.protobuf.Timestamp time = 1; HttpRequest http = 2; }
 * message HttpRequest {
 *   string id = 1; string method = 2; map<string, string> headers = 3; string path = 4; string host = 5;
 *   string scheme = 6; int64 size = 9; string protocol = 10; string body = 11; bytes raw_body = 12;
 * }
 * message TLSSession { string sni = 1; }
 * message Metadata { map<string, google.protobuf.Struct> filter_metadata = 1; }
 * message CheckResponse {
 *   google.rpc.Status status = 1;
 *   oneof http_response { DeniedHttpResponse denied_response = 2; OkHttpResponse ok_response = 3; }
 *   google.protobuf.Struct dynamic_metadata = 4;
 * }
 * message DeniedHttpResponse { HttpStatus status = 1; repeated HeaderValueOption headers = 2; string body = 3; }
 * message HttpStatus { StatusCode code = 1; }
 * message OkHttpResponse {
 *   repeated HeaderValueOption headers = 2; repeated string headers_to_remove = 5;
 *   repeated QueryParameter query_parameters_to_set = 6; repeated string query_parameters_to_remove = 7;
 *   repeated HeaderValueOption response_headers_to_add = 8;
 * }
 * message HeaderValueOption { HeaderValue header = 1; google.protobuf.BoolValue append = 2; HeaderAppendAction append_action = 3; }
 * message HeaderValue { string key = 1; string value = 2; bytes raw_value = 3; }
 * message QueryParameter { string key = 1; string value = 2; }
 * ```
 *
 * Both directions are here (the gateway encodes requests and decodes responses; the test peer
 * does the reverse), so encoder and decoder share one table of field numbers. The tests also
 * decode the gateway's bytes with independently written field numbers.
 *
 * @since 0.1.0
 */
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire"

export const METHOD = "/envoy.service.auth.v3.Authorization/Check"

/**
 * Deepest nesting of `google.protobuf.Struct`/`ListValue` decoded from a service; deeper
 * values are dropped, so a hostile answer cannot exhaust the stack.
 */
export const MAX_STRUCT_DEPTH = 32

/** `HeaderValueOption.HeaderAppendAction`. */
export const AppendAction = {
  APPEND_IF_EXISTS_OR_ADD: 0,
  ADD_IF_ABSENT: 1,
  OVERWRITE_IF_EXISTS_OR_ADD: 2,
  OVERWRITE_IF_EXISTS: 3
} as const

/** A JSON value, as `google.protobuf.Value` carries it. */
export type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [k: string]: Json }

export interface SocketAddress {
  readonly address: string
  readonly port: number
}

export interface Peer {
  readonly address?: SocketAddress | undefined
  readonly principal?: string | undefined
}

export interface HttpRequest {
  readonly id: string
  readonly method: string
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly path: string
  readonly host: string
  readonly scheme: string
  /** Body size as received, `-1` when only a part was read; `0` without a body. */
  readonly size: number
  readonly protocol: string
  readonly body: string
  readonly rawBody: Uint8Array
}

export interface CheckRequest {
  readonly source?: Peer | undefined
  readonly destination?: Peer | undefined
  /** Milliseconds since the epoch. */
  readonly timeMs?: number | undefined
  readonly http: HttpRequest
  readonly contextExtensions: ReadonlyArray<readonly [string, string]>
  /** `metadata_context.filter_metadata`; undefined: the field is not sent. */
  readonly metadata?: ReadonlyArray<readonly [string, { readonly [k: string]: Json }]> | undefined
  readonly sni?: string | undefined
}

export interface HeaderOption {
  readonly key: string
  /** `raw_value` when set, else `value` (as upstream reads it); latin-1, one char per byte. */
  readonly value: string
  /** The deprecated `append` wrapper; undefined when unset. */
  readonly append?: boolean | undefined
  readonly appendAction: number
}

export interface QueryParameter {
  readonly key: string
  readonly value: string
}

export interface DeniedResponse {
  /** The HTTP status, 0 when unset. */
  readonly status: number
  readonly headers: ReadonlyArray<HeaderOption>
  readonly body: string
}

export interface OkResponse {
  readonly headers: ReadonlyArray<HeaderOption>
  readonly headersToRemove: ReadonlyArray<string>
  readonly queryParametersToSet: ReadonlyArray<QueryParameter>
  readonly queryParametersToRemove: ReadonlyArray<string>
  readonly responseHeadersToAdd: ReadonlyArray<HeaderOption>
}

export interface CheckResponse {
  /** `status.code`: 0 (OK) allows, anything else denies. */
  readonly code: number
  readonly denied?: DeniedResponse | undefined
  readonly ok?: OkResponse | undefined
  readonly dynamicMetadata?: { readonly [k: string]: Json } | undefined
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

const LEN = WireType.LengthDelimited
const VARINT = WireType.Varint

const str = (w: BinaryWriter, field: number, value: string | undefined): void => {
  if (value !== undefined && value !== "") w.tag(field, LEN).string(value)
}

const bytes = (w: BinaryWriter, field: number, value: Uint8Array): void => {
  if (value.length > 0) w.tag(field, LEN).bytes(value)
}

const stringMap = (w: BinaryWriter, field: number, entries: ReadonlyArray<readonly [string, string]>): void => {
  for (const [k, v] of entries) {
    w.tag(field, LEN).fork()
    str(w, 1, k)
    str(w, 2, v)
    w.join()
  }
}

const writeValue = (w: BinaryWriter, value: Json): void => {
  if (value === null) w.tag(1, VARINT).int32(0)
  else if (typeof value === "number") w.tag(2, WireType.Bit64).double(value)
  else if (typeof value === "string") w.tag(3, LEN).string(value)
  else if (typeof value === "boolean") w.tag(4, VARINT).bool(value)
  else if (isList(value)) {
    w.tag(6, LEN).fork()
    for (const item of value) {
      w.tag(1, LEN).fork()
      writeValue(w, item)
      w.join()
    }
    w.join()
  } else {
    w.tag(5, LEN).fork()
    writeStructFields(w, value)
    w.join()
  }
}

const isList = (value: Json): value is ReadonlyArray<Json> => Array.isArray(value)

const writeStructFields = (w: BinaryWriter, struct: { readonly [k: string]: Json }): void => {
  for (const [k, v] of Object.entries(struct)) {
    w.tag(1, LEN).fork()
    str(w, 1, k)
    w.tag(2, LEN).fork()
    writeValue(w, v)
    w.join()
    w.join()
  }
}

const writePeer = (w: BinaryWriter, field: number, peer: Peer | undefined): void => {
  if (peer === undefined) return
  w.tag(field, LEN).fork()
  if (peer.address !== undefined) {
    w.tag(1, LEN).fork() // Address
    w.tag(1, LEN).fork() // SocketAddress (protocol TCP = 0 is the default, not written)
    str(w, 2, peer.address.address)
    if (peer.address.port !== 0) w.tag(3, VARINT).uint32(peer.address.port)
    w.join()
    w.join()
  }
  str(w, 4, peer.principal)
  w.join()
}

export const encodeCheckRequest = (request: CheckRequest): Uint8Array => {
  const w = new BinaryWriter()
  w.tag(1, LEN).fork() // attributes
  writePeer(w, 1, request.source)
  writePeer(w, 2, request.destination)
  w.tag(4, LEN).fork() // request
  if (request.timeMs !== undefined) {
    const seconds = Math.floor(request.timeMs / 1000)
    const nanos = Math.round((request.timeMs - seconds * 1000) * 1e6)
    w.tag(1, LEN).fork()
    if (seconds !== 0) w.tag(1, VARINT).int64(seconds)
    if (nanos !== 0) w.tag(2, VARINT).int32(nanos)
    w.join()
  }
  const http = request.http
  w.tag(2, LEN).fork()
  str(w, 1, http.id)
  str(w, 2, http.method)
  stringMap(w, 3, http.headers)
  str(w, 4, http.path)
  str(w, 5, http.host)
  str(w, 6, http.scheme)
  if (http.size !== 0) w.tag(9, VARINT).int64(http.size)
  str(w, 10, http.protocol)
  str(w, 11, http.body)
  bytes(w, 12, http.rawBody)
  w.join()
  w.join() // request
  stringMap(w, 10, request.contextExtensions)
  if (request.metadata !== undefined) {
    w.tag(11, LEN).fork()
    for (const [k, struct] of request.metadata) {
      w.tag(1, LEN).fork()
      str(w, 1, k)
      w.tag(2, LEN).fork()
      writeStructFields(w, struct)
      w.join()
      w.join()
    }
    w.join()
  }
  if (request.sni !== undefined) {
    w.tag(12, LEN).fork()
    str(w, 1, request.sni)
    w.join()
  }
  w.join() // attributes
  return w.finish()
}

const writeHeaderOption = (w: BinaryWriter, field: number, h: HeaderOption): void => {
  w.tag(field, LEN).fork()
  w.tag(1, LEN).fork()
  str(w, 1, h.key)
  bytes(w, 3, Buffer.from(h.value, "latin1"))
  w.join()
  if (h.append !== undefined) {
    w.tag(2, LEN).fork()
    if (h.append) w.tag(1, VARINT).bool(true)
    w.join()
  }
  if (h.appendAction !== 0) w.tag(3, VARINT).int32(h.appendAction)
  w.join()
}

export const encodeCheckResponse = (response: CheckResponse): Uint8Array => {
  const w = new BinaryWriter()
  w.tag(1, LEN).fork()
  if (response.code !== 0) w.tag(1, VARINT).int32(response.code)
  w.join()
  const denied = response.denied
  if (denied !== undefined) {
    w.tag(2, LEN).fork()
    if (denied.status !== 0) {
      w.tag(1, LEN).fork()
      w.tag(1, VARINT).int32(denied.status)
      w.join()
    }
    for (const h of denied.headers) writeHeaderOption(w, 2, h)
    str(w, 3, denied.body)
    w.join()
  }
  const ok = response.ok
  if (ok !== undefined) {
    w.tag(3, LEN).fork()
    for (const h of ok.headers) writeHeaderOption(w, 2, h)
    for (const name of ok.headersToRemove) w.tag(5, LEN).string(name)
    for (const q of ok.queryParametersToSet) {
      w.tag(6, LEN).fork()
      str(w, 1, q.key)
      str(w, 2, q.value)
      w.join()
    }
    for (const name of ok.queryParametersToRemove) w.tag(7, LEN).string(name)
    for (const h of ok.responseHeadersToAdd) writeHeaderOption(w, 8, h)
    w.join()
  }
  if (response.dynamicMetadata !== undefined) {
    w.tag(4, LEN).fork()
    writeStructFields(w, response.dynamicMetadata)
    w.join()
  }
  return w.finish()
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/** Calls `onField` for each field of the message in `bytes`, skipping what it does not consume. */
const fields = (bytes: Uint8Array, onField: (field: number, type: WireType, r: BinaryReader) => boolean): void => {
  const r = new BinaryReader(bytes)
  while (r.pos < r.len) {
    const [field, type] = r.tag()
    if (!onField(field, type, r)) r.skip(type, field)
  }
}

const latin1 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("latin1")

const readStringMapEntry = (bytes: Uint8Array): readonly [string, string] => {
  let key = ""
  let value = ""
  fields(bytes, (f, t, r) => {
    if (f === 1 && t === LEN) key = r.string()
    else if (f === 2 && t === LEN) value = r.string()
    else return false
    return true
  })
  return [key, value]
}

const readValue = (bytes: Uint8Array, depth: number): Json | undefined => {
  let out: Json | undefined = null
  fields(bytes, (f, t, r) => {
    if (f === 1 && t === VARINT) {
      r.int32()
      out = null
    } else if (f === 2 && t === WireType.Bit64) out = r.double()
    else if (f === 3 && t === LEN) out = r.string()
    else if (f === 4 && t === VARINT) out = r.bool()
    else if (f === 5 && t === LEN) {
      const inner = r.bytes()
      out = depth >= MAX_STRUCT_DEPTH ? undefined : readStruct(inner, depth + 1)
    } else if (f === 6 && t === LEN) {
      const inner = r.bytes()
      out = depth >= MAX_STRUCT_DEPTH ? undefined : readList(inner, depth + 1)
    } else return false
    return true
  })
  return out
}

const readList = (bytes: Uint8Array, depth: number): Array<Json> => {
  const out: Array<Json> = []
  fields(bytes, (f, t, r) => {
    if (f !== 1 || t !== LEN) return false
    const value = readValue(r.bytes(), depth)
    if (value !== undefined) out.push(value)
    return true
  })
  return out
}

/** `google.protobuf.Struct` as a null-prototype object (keys such as `__proto__` stay data). */
const readStruct = (bytes: Uint8Array, depth: number): { [k: string]: Json } => {
  const out: { [k: string]: Json } = Object.create(null)
  fields(bytes, (f, t, r) => {
    if (f !== 1 || t !== LEN) return false
    let key = ""
    let value: Json | undefined = null
    fields(r.bytes(), (ef, et, er) => {
      if (ef === 1 && et === LEN) key = er.string()
      else if (ef === 2 && et === LEN) value = readValue(er.bytes(), depth)
      else return false
      return true
    })
    if (value !== undefined) out[key] = value
    return true
  })
  return out
}

const readHeaderOption = (bytes: Uint8Array): HeaderOption | undefined => {
  let key = ""
  let value = ""
  let raw: Uint8Array | undefined
  let hasHeader = false
  let append: boolean | undefined
  let appendAction = 0
  fields(bytes, (f, t, r) => {
    if (f === 1 && t === LEN) {
      hasHeader = true
      fields(r.bytes(), (hf, ht, hr) => {
        if (hf === 1 && ht === LEN) key = hr.string()
        else if (hf === 2 && ht === LEN) value = hr.string()
        else if (hf === 3 && ht === LEN) raw = hr.bytes()
        else return false
        return true
      })
    } else if (f === 2 && t === LEN) {
      append = false
      fields(r.bytes(), (bf, bt, br) => {
        if (bf !== 1 || bt !== VARINT) return false
        append = br.bool()
        return true
      })
    } else if (f === 3 && t === VARINT) appendAction = r.int32()
    else return false
    return true
  })
  if (!hasHeader) return undefined
  // Upstream: a non-empty raw_value wins; else the value (as its UTF-8 bytes).
  const wire = raw !== undefined && raw.length > 0 ? latin1(raw) : latin1(Buffer.from(value, "utf8"))
  return { key, value: wire, append, appendAction }
}

const readDenied = (bytes: Uint8Array): DeniedResponse => {
  let status = 0
  const headers: Array<HeaderOption> = []
  let body = ""
  fields(bytes, (f, t, r) => {
    if (f === 1 && t === LEN) {
      fields(r.bytes(), (sf, st, sr) => {
        if (sf !== 1 || st !== VARINT) return false
        status = sr.int32()
        return true
      })
    } else if (f === 2 && t === LEN) {
      const h = readHeaderOption(r.bytes())
      if (h !== undefined) headers.push(h)
    } else if (f === 3 && t === LEN) body = r.string()
    else return false
    return true
  })
  return { status, headers, body }
}

const readOk = (bytes: Uint8Array): OkResponse => {
  const headers: Array<HeaderOption> = []
  const headersToRemove: Array<string> = []
  const queryParametersToSet: Array<QueryParameter> = []
  const queryParametersToRemove: Array<string> = []
  const responseHeadersToAdd: Array<HeaderOption> = []
  fields(bytes, (f, t, r) => {
    if (t !== LEN) return false
    if (f === 2 || f === 8) {
      const h = readHeaderOption(r.bytes())
      if (h !== undefined) (f === 2 ? headers : responseHeadersToAdd).push(h)
    } else if (f === 5) headersToRemove.push(r.string())
    else if (f === 6) {
      const [key, value] = readStringMapEntry(r.bytes())
      queryParametersToSet.push({ key, value })
    } else if (f === 7) queryParametersToRemove.push(r.string())
    else return false
    return true
  })
  return { headers, headersToRemove, queryParametersToSet, queryParametersToRemove, responseHeadersToAdd }
}

/** Throws on malformed bytes (the caller treats that as a failed call). */
export const decodeCheckResponse = (bytes: Uint8Array): CheckResponse => {
  let code = 0
  let denied: DeniedResponse | undefined
  let ok: OkResponse | undefined
  let dynamicMetadata: { [k: string]: Json } | undefined
  fields(bytes, (f, t, r) => {
    if (f === 1 && t === LEN) {
      fields(r.bytes(), (sf, st, sr) => {
        if (sf !== 1 || st !== VARINT) return false
        code = sr.int32()
        return true
      })
    } else if (f === 2 && t === LEN) {
      denied = readDenied(r.bytes())
      ok = undefined
    } else if (f === 3 && t === LEN) {
      ok = readOk(r.bytes())
      denied = undefined
    } else if (f === 4 && t === LEN) dynamicMetadata = readStruct(r.bytes(), 1)
    else return false
    return true
  })
  return { code, denied, ok, dynamicMetadata }
}

const readPeer = (bytes: Uint8Array): Peer => {
  let address: SocketAddress | undefined
  let principal: string | undefined
  fields(bytes, (f, t, r) => {
    if (f === 1 && t === LEN) {
      fields(r.bytes(), (af, at, ar) => {
        if (af !== 1 || at !== LEN) return false
        let host = ""
        let port = 0
        fields(ar.bytes(), (sf, st, sr) => {
          if (sf === 2 && st === LEN) host = sr.string()
          else if (sf === 3 && st === VARINT) port = sr.uint32()
          else return false
          return true
        })
        address = { address: host, port }
        return true
      })
    } else if (f === 4 && t === LEN) principal = r.string()
    else return false
    return true
  })
  return { address, principal }
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

const readHttp = (bytes: Uint8Array): HttpRequest => {
  const headers: Array<readonly [string, string]> = []
  const out: Mutable<HttpRequest> = {
    id: "",
    method: "",
    headers,
    path: "",
    host: "",
    scheme: "",
    size: 0,
    protocol: "",
    body: "",
    rawBody: new Uint8Array(0)
  }
  fields(bytes, (f, t, r) => {
    if (f === 9 && t === VARINT) {
      out.size = Number(r.int64())
      return true
    }
    if (t !== LEN) return false
    if (f === 1) out.id = r.string()
    else if (f === 2) out.method = r.string()
    else if (f === 3) headers.push(readStringMapEntry(r.bytes()))
    else if (f === 4) out.path = r.string()
    else if (f === 5) out.host = r.string()
    else if (f === 6) out.scheme = r.string()
    else if (f === 10) out.protocol = r.string()
    else if (f === 11) out.body = r.string()
    else if (f === 12) out.rawBody = r.bytes()
    else return false
    return true
  })
  return out
}

/** The server side (test peers): throws on malformed bytes. */
export const decodeCheckRequest = (bytes: Uint8Array): CheckRequest => {
  let source: Peer | undefined
  let destination: Peer | undefined
  let timeMs: number | undefined
  let http: HttpRequest | undefined
  const contextExtensions: Array<readonly [string, string]> = []
  let metadata: Array<readonly [string, { readonly [k: string]: Json }]> | undefined
  let sni: string | undefined
  fields(bytes, (f, t, r) => {
    if (f !== 1 || t !== LEN) return false
    fields(r.bytes(), (af, at, ar) => {
      if (at !== LEN) return false
      if (af === 1) source = readPeer(ar.bytes())
      else if (af === 2) destination = readPeer(ar.bytes())
      else if (af === 4) {
        fields(ar.bytes(), (rf, rt, rr) => {
          if (rt !== LEN) return false
          if (rf === 1) {
            let seconds = 0
            let nanos = 0
            fields(rr.bytes(), (tf, tt, tr) => {
              if (tt !== VARINT) return false
              if (tf === 1) seconds = Number(tr.int64())
              else if (tf === 2) nanos = tr.int32()
              else return false
              return true
            })
            timeMs = seconds * 1000 + nanos / 1e6
          } else if (rf === 2) http = readHttp(rr.bytes())
          else return false
          return true
        })
      } else if (af === 10) contextExtensions.push(readStringMapEntry(ar.bytes()))
      else if (af === 11) {
        const list: Array<readonly [string, { readonly [k: string]: Json }]> = []
        fields(ar.bytes(), (mf, mt, mr) => {
          if (mf !== 1 || mt !== LEN) return false
          let key = ""
          let struct: { [k: string]: Json } = Object.create(null)
          fields(mr.bytes(), (ef, et, er) => {
            if (ef === 1 && et === LEN) key = er.string()
            else if (ef === 2 && et === LEN) struct = readStruct(er.bytes(), 1)
            else return false
            return true
          })
          list.push([key, struct])
          return true
        })
        metadata = list
      } else if (af === 12) {
        fields(ar.bytes(), (sf, st, sr) => {
          if (sf !== 1 || st !== LEN) return false
          sni = sr.string()
          return true
        })
      } else return false
      return true
    })
    return true
  })
  return {
    source,
    destination,
    timeMs,
    http: http ?? readHttp(new Uint8Array(0)),
    contextExtensions,
    metadata,
    sni
  }
}
