/**
 * External authorization services for tests: a gRPC peer speaking Envoy's
 * `envoy.service.auth.v3.Authorization/Check` (a real `@grpc/grpc-js` server; the wire bytes
 * are kept so tests can check them independently of our decoder) and a plain HTTP peer. Both
 * count calls and answer with whatever the test's `answer` function returns.
 */
import * as grpc from "@grpc/grpc-js"
import * as http from "node:http"
import * as https from "node:https"
import * as Proto from "../../src/sidecar/ExtAuthzProto.ts"

export type GrpcAnswer = Proto.CheckResponse | { readonly grpcError: number; readonly details?: string }

export interface GrpcPeer {
  readonly port: number
  /** Raw `CheckRequest` bytes as received, in order. */
  readonly raw: Array<Uint8Array>
  readonly requests: Array<Proto.CheckRequest>
  /** Metadata of each call. */
  readonly metadata: Array<grpc.Metadata>
  answer: (request: Proto.CheckRequest) => GrpcAnswer
  readonly close: () => Promise<void>
}

export const allowResponse: Proto.CheckResponse = { code: 0 }

export const startGrpcPeer = (answer: GrpcPeer["answer"], credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure()): Promise<GrpcPeer> => {
  const server = new grpc.Server()
  const identity = (b: Buffer) => b
  const service: grpc.ServiceDefinition = {
    Check: {
      path: Proto.METHOD,
      requestStream: false,
      responseStream: false,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity
    }
  }
  const peer: Omit<GrpcPeer, "port" | "close"> = { raw: [], requests: [], metadata: [], answer }
  server.addService(service, {
    Check: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      const bytes = new Uint8Array(call.request)
      peer.raw.push(bytes)
      peer.metadata.push(call.metadata)
      const request = Proto.decodeCheckRequest(bytes)
      peer.requests.push(request)
      const out = peer.answer(request)
      if ("grpcError" in out) callback({ code: out.grpcError, details: out.details ?? "error" }, null)
      else callback(null, Buffer.from(Proto.encodeCheckResponse(out)))
    }
  })
  return new Promise((resolve, reject) => {
    server.bindAsync("127.0.0.1:0", credentials, (error, port) => {
      if (error !== null) return reject(error)
      resolve(Object.assign(peer, {
        port,
        close: () => new Promise<void>((r) => server.tryShutdown(() => r()))
      }))
    })
  })
}

export interface HttpCall {
  readonly method: string
  readonly url: string
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

export interface HttpAnswer {
  readonly status: number
  readonly headers?: Record<string, string>
  readonly body?: string
}

export interface HttpPeer {
  readonly port: number
  readonly calls: Array<HttpCall>
  answer: (call: HttpCall) => HttpAnswer
  readonly close: () => Promise<void>
}

/** An HTTP peer; with `tls` (certificate and key) it serves HTTPS. */
export const startHttpPeer = (answer: HttpPeer["answer"], tls?: https.ServerOptions): Promise<HttpPeer> => {
  const peer: Omit<HttpPeer, "port" | "close"> = { calls: [], answer }
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const call: HttpCall = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString("utf8") }
      peer.calls.push(call)
      const out = peer.answer(call)
      res.writeHead(out.status, out.headers ?? {})
      res.end(out.body ?? "")
    })
  }
  const server = tls === undefined ? http.createServer(handler) : https.createServer(tls, handler)
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      resolve(Object.assign(peer, {
        port,
        close: () => new Promise<void>((r) => {
          server.closeAllConnections()
          server.close(() => r())
        })
      }))
    })
  })
}

/**
 * A minimal protobuf walker written apart from `ExtAuthzProto`: field number → raw values of
 * one message level, so a test can check bytes against field numbers typed in by hand.
 */
export const rawFields = (bytes: Uint8Array): Map<number, Array<Uint8Array | bigint>> => {
  const out = new Map<number, Array<Uint8Array | bigint>>()
  let i = 0
  const varint = (): bigint => {
    let result = 0n
    let shift = 0n
    for (;;) {
      const b = bytes[i++]!
      result |= BigInt(b & 0x7f) << shift
      if ((b & 0x80) === 0) return result
      shift += 7n
    }
  }
  while (i < bytes.length) {
    const tag = Number(varint())
    const field = tag >>> 3
    const wire = tag & 7
    let value: Uint8Array | bigint
    if (wire === 0) value = varint()
    else if (wire === 2) {
      const len = Number(varint())
      value = bytes.subarray(i, i + len)
      i += len
    } else if (wire === 1) {
      value = bytes.subarray(i, i + 8)
      i += 8
    } else if (wire === 5) {
      value = bytes.subarray(i, i + 4)
      i += 4
    } else throw new Error(`unexpected wire type ${wire}`)
    const list = out.get(field) ?? []
    list.push(value)
    out.set(field, list)
  }
  return out
}

/** The one length-delimited value of `field`, walking `path` of field numbers. */
export const rawAt = (bytes: Uint8Array, path: ReadonlyArray<number>): Array<Uint8Array | bigint> => {
  let level: Array<Uint8Array | bigint> = [bytes]
  for (const field of path) {
    const next: Array<Uint8Array | bigint> = []
    for (const v of level) if (v instanceof Uint8Array) next.push(...(rawFields(v).get(field) ?? []))
    level = next
  }
  return level
}
