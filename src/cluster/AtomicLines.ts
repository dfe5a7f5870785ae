/**
 * Every worker writes its access log to the stdout it inherited, one pipe for all. POSIX makes a
 * pipe write of at most PIPE_BUF bytes atomic; the access log writes batches of up to 64 KiB, and
 * two workers' large writes could interleave mid-line. So a worker splits each batch at line ends
 * into writes of at most PIPE_BUF bytes (a single line longer than that is written whole).
 *
 * @since 0.1.0
 */

/** POSIX's minimum and Linux's value: pipe writes up to this size are not interleaved. */
export const PIPE_BUF = 4096

const NEWLINE = 0x0a

/** Chunks of `bytes`, each ending at a line end, each at most `max` bytes unless one line is longer. */
export const split = (bytes: Uint8Array, max: number = PIPE_BUF): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  let start = 0
  while (start < bytes.length) {
    if (bytes.length - start <= max) {
      out.push(bytes.subarray(start))
      break
    }
    const limit = start + max
    let cut = bytes.lastIndexOf(NEWLINE, limit - 1) + 1
    if (cut <= start) {
      // One line longer than max: written whole, up to its end.
      const end = bytes.indexOf(NEWLINE, limit)
      cut = end === -1 ? bytes.length : end + 1
    }
    out.push(bytes.subarray(start, cut))
    start = cut
  }
  return out
}

/** An access-log sink for a worker: stdout, in atomic chunks. */
export const stdoutSink = {
  write(text: string): void {
    for (const chunk of split(Buffer.from(text, "utf8"))) process.stdout.write(chunk)
  }
}
