/**
 * Sends raw bytes to a port and collects the response, for inputs `fetch` refuses to send
 * (duplicate Host, HTTP/1.0 with Transfer-Encoding, malformed targets).
 */
import * as net from "node:net"

export interface RawResponse {
  readonly status: number
  readonly head: string
  readonly body: string
  readonly raw: string
}

/**
 * `request` is the bytes to send, or a function that sends them in parts (`write`), pausing as
 * it likes; the response is collected meanwhile.
 */
export const rawRequest = (
  port: number,
  request: string | ((write: (data: string) => void) => Promise<void>),
  timeoutMs = 3000
): Promise<RawResponse> =>
  new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1")
    let data = ""
    const done = () => {
      clearTimeout(timer)
      socket.destroy()
      const end = data.indexOf("\r\n\r\n")
      const head = end === -1 ? data : data.slice(0, end)
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? "0")
      const rawBody = end === -1 ? "" : data.slice(end + 4)
      resolve({ status, head, body: /\r\ntransfer-encoding: *chunked/i.test(head) ? dechunk(rawBody) : rawBody, raw: data })
    }
    const timer = setTimeout(done, timeoutMs)
    socket.setEncoding("latin1")
    socket.on("data", (chunk: string) => {
      data += chunk
      // One response with a content-length is complete once its body arrived.
      const end = data.indexOf("\r\n\r\n")
      const length = /\r\ncontent-length: *(\d+)/i.exec(data.slice(0, end === -1 ? data.length : end))
      if (end !== -1 && length !== null && data.length - end - 4 >= Number(length[1])) done()
      else if (end !== -1 && /\r\ntransfer-encoding: *chunked/i.test(data.slice(0, end)) && data.endsWith("\r\n0\r\n\r\n")) done()
    })
    socket.on("end", done)
    socket.on("error", (error) => (data === "" ? reject(error) : done()))
    if (typeof request === "string") socket.write(request)
    else request((part) => void socket.write(part)).catch(reject)
  })

const dechunk = (body: string): string => {
  let out = ""
  let rest = body
  for (;;) {
    const eol = rest.indexOf("\r\n")
    if (eol === -1) return out
    const size = parseInt(rest.slice(0, eol), 16)
    if (!(size > 0)) return out
    out += rest.slice(eol + 2, eol + 2 + size)
    rest = rest.slice(eol + 2 + size + 2)
  }
}
