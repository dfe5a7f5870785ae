/** xorshift32: a tiny deterministic generator for seeded randomised tests (a failure reproduces). */
export const prng = (seed: number): () => number => {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 4294967296
  }
}
