/**
 * The six policies bench/policies loads (its `/p6` route) and bench/pipeline times in-process:
 * one definition, so the two measure the same configuration. Values are the config as a user
 * writes it (the YAML route embeds them as JSON flow mappings; bench/pipeline decodes each with
 * its policy's own schema).
 */

/** The load's Origin (CORS answers it) and the header the authorization rule requires. */
export const ORIGIN = "http://bench.example"
export const REQUEST_HEADERS = { origin: ORIGIN, "x-env": "bench" } as const

/** Far more tokens per second than 32 connections can ask for: the bucket never empties. */
export const RATE_LIMIT_TOKENS = 1_000_000_000

export const SIX_POLICIES = {
  cors: { allowOrigins: ["*"], allowMethods: ["GET"], allowHeaders: ["content-type"], maxAge: "10m" },
  requestHeaderModifier: { set: { "x-bench": "1" } },
  localRateLimit: [{ maxTokens: RATE_LIMIT_TOKENS, tokensPerFill: RATE_LIMIT_TOKENS, fillInterval: "1s" }],
  authorization: { rules: [`request.method == "GET" && request.path.startsWith("/") && request.headers["x-env"] == "bench"`] },
  // Bounds the sanity check of the timeout (the upstream's /slow takes 3 s).
  timeout: { requestTimeout: "2s" },
  retry: { attempts: 1, codes: [503] }
} as const
