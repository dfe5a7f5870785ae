/**
 * Small OTLP trace receivers for tests: OTLP/HTTP (`POST /v1/traces`, protobuf) and OTLP/gRPC
 * (`TraceService/Export` through a raw grpc-js handler). Both decode what they receive with a
 * minimal protobuf reader, independent of the encoder the gateway uses.
 */
import * as grpc from "@grpc/grpc-js"
import * as http from "node:http"

export interface ReceivedSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string
  readonly traceState: string
  readonly name: string
  readonly kind: number
  readonly start: bigint
  readonly end: bigint
  readonly attributes: Record<string, string | number | boolean>
  readonly statusCode: number
  readonly resource: Record<string, string | number | boolean>
}

export interface Receiver {
  readonly port: number
  readonly spans: Array<ReceivedSpan>
  /** Export requests received (each a batch). */
  readonly requests: Array<{ readonly headers: Record<string, string> }>
  /** Resolves once `count` spans have arrived, or rejects after `timeoutMs`. */
  readonly waitFor: (count: number, timeoutMs?: number) => Promise<Array<ReceivedSpan>>
  readonly close: () => Promise<void>
}

// --- a minimal protobuf reader: field number → values (varint as bigint, bytes as Buffer) ---

type Field = bigint | Buffer

const readVarint = (buf: Buffer, pos: { i: number }): bigint => {
  let result = 0n
  let shift = 0n
  for (;;) {
    const b = buf[pos.i++]!
    result |= BigInt(b & 0x7f) << shift
    if ((b & 0x80) === 0) return result
    shift += 7n
  }
}

export const decodeMessage = (buf: Buffer): Map<number, Array<Field>> => {
  const out = new Map<number, Array<Field>>()
  const pos = { i: 0 }
  while (pos.i < buf.length) {
    const key = Number(readVarint(buf, pos))
    const field = key >>> 3
    const wire = key & 7
    let value: Field
    if (wire === 0) value = readVarint(buf, pos)
    else if (wire === 1) {
      value = buf.readBigUInt64LE(pos.i)
      pos.i += 8
    } else if (wire === 2) {
      const len = Number(readVarint(buf, pos))
      value = buf.subarray(pos.i, pos.i + len)
      pos.i += len
    } else if (wire === 5) {
      value = BigInt(buf.readUInt32LE(pos.i))
      pos.i += 4
    } else throw new Error(`unsupported wire type ${wire}`)
    const list = out.get(field)
    if (list === undefined) out.set(field, [value])
    else list.push(value)
  }
  return out
}

const bytes = (m: Map<number, Array<Field>>, n: number): Array<Buffer> => (m.get(n) ?? []).filter((v): v is Buffer => Buffer.isBuffer(v))
const first = (m: Map<number, Array<Field>>, n: number): Buffer | undefined => bytes(m, n)[0]
const num = (m: Map<number, Array<Field>>, n: number): bigint => {
  const v = (m.get(n) ?? [])[0]
  return typeof v === "bigint" ? v : 0n
}

const attributes = (list: Array<Buffer>): Record<string, string | number | boolean> => {
  const out: Record<string, string | number | boolean> = {}
  for (const kv of list) {
    const m = decodeMessage(kv)
    const key = first(m, 1)?.toString("utf8") ?? ""
    const value = decodeMessage(first(m, 2) ?? Buffer.alloc(0))
    const s = first(value, 1)
    if (s !== undefined) out[key] = s.toString("utf8")
    else if (value.has(2)) out[key] = num(value, 2) === 1n
    else if (value.has(3)) out[key] = Number(num(value, 3))
    else if (value.has(4)) out[key] = Buffer.from(new BigUint64Array([num(value, 4)]).buffer).readDoubleLE(0)
  }
  return out
}

/** `TracesData` / `ExportTraceServiceRequest` → spans. */
export const decodeTraces = (buf: Buffer): Array<ReceivedSpan> => {
  const spans: Array<ReceivedSpan> = []
  for (const rs of bytes(decodeMessage(buf), 1)) {
    const rsm = decodeMessage(rs)
    const resource = attributes(bytes(decodeMessage(first(rsm, 1) ?? Buffer.alloc(0)), 1))
    for (const ss of bytes(rsm, 2)) {
      for (const sp of bytes(decodeMessage(ss), 2)) {
        const m = decodeMessage(sp)
        const status = decodeMessage(first(m, 15) ?? Buffer.alloc(0))
        spans.push({
          traceId: first(m, 1)?.toString("hex") ?? "",
          spanId: first(m, 2)?.toString("hex") ?? "",
          traceState: first(m, 3)?.toString("utf8") ?? "",
          parentSpanId: first(m, 4)?.toString("hex") ?? "",
          name: first(m, 5)?.toString("utf8") ?? "",
          kind: Number(num(m, 6)),
          start: num(m, 7),
          end: num(m, 8),
          attributes: attributes(bytes(m, 9)),
          statusCode: Number(num(status, 3)),
          resource
        })
      }
    }
  }
  return spans
}

const receiver = (port: number, spans: Array<ReceivedSpan>, requests: Receiver["requests"], close: () => Promise<void>): Receiver => ({
  port,
  spans,
  requests,
  waitFor: async (count, timeoutMs = 8000) => {
    const deadline = Date.now() + timeoutMs
    while (spans.length < count) {
      if (Date.now() > deadline) throw new Error(`expected ${count} spans, received ${spans.length}`)
      await new Promise((r) => setTimeout(r, 25))
    }
    return spans
  },
  close
})

export const startHttpReceiver = (): Promise<Receiver> => {
  const spans: Array<ReceivedSpan> = []
  const requests: Receiver["requests"] = []
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/v1/traces" || req.headers["content-type"] !== "application/x-protobuf") {
        res.writeHead(404).end()
        return
      }
      const headers: Record<string, string> = {}
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers[k] = v
      requests.push({ headers })
      spans.push(...decodeTraces(Buffer.concat(chunks)))
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end()
    })
  })
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      resolve(receiver(port, spans, requests, () => new Promise((r) => server.close(() => r()))))
    })
  )
}

export const GRPC_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

export const startGrpcReceiver = (): Promise<Receiver> => {
  const spans: Array<ReceivedSpan> = []
  const requests: Receiver["requests"] = []
  const server = new grpc.Server()
  const identity = (b: Buffer) => b
  server.register<Buffer, Buffer>(
    GRPC_METHOD,
    (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      const headers: Record<string, string> = {}
      for (const [k, v] of Object.entries(call.metadata.getMap())) headers[k] = String(v)
      requests.push({ headers })
      spans.push(...decodeTraces(call.request))
      // An empty ExportTraceServiceResponse.
      callback(null, Buffer.alloc(0))
    },
    identity,
    identity,
    "unary"
  )
  return new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) => {
      if (error) return reject(error)
      resolve(receiver(port, spans, requests, () => new Promise((r) => server.tryShutdown(() => r()))))
    })
  )
}
