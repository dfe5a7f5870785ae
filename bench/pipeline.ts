/**
 * In-process cost of a route's policy chain: bench/policies' six policies (timeout, CORS, local
 * rate limit, a 3-clause CEL authorization rule, request header modifier, retry) built from
 * config as a snapshot builds them, around a stub upstream, run the way the listener runs a
 * request (`Effect.runCallbackWith` with the request in the context). No sockets, so the
 * figures are steady (two runs agreed within 0.15 µs) where a loaded run moves by ten.
 *
 *   npm run bench:pipeline
 *
 * Each chain is timed with one request at a time (the stub answers synchronously) and with
 * `IN_FLIGHT` requests at once (the stub answers once all of them have started, as an upstream
 * does under 32 connections: their fibers and continuations are live together, so scavenges copy
 * them). The baseline of the same run is the stub alone; the report gives each chain's added µs
 * over it. The process first does what a serving gateway does to its heap
 * (`releaseStartupMemory`: the 2 × YOUNG_SEMI_SPACE_MIB young generation), so GC costs are the
 * gateway's. Compare the loaded figure of bench/policies (6 policies over 0): what the two do
 * not share is the environment (caches shared with the load generator and the upstream, the
 * sockets), not our instructions.
 *
 * Environment: BENCH_PIPELINE_REQUESTS (default 200000 per timing), BENCH_PIPELINE_IN_FLIGHT
 * (default 32), BENCH_PIPELINE_RUNS (best of, default 7).
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import type { IncomingMessage } from "node:http"
import { getHeapSpaceStatistics } from "node:v8"
import { ConfigError } from "../src/config/ConfigError.ts"
import type { BuildEnv, Handler, Middleware } from "../src/pipeline/Policy.ts"
import { ProxyResponse } from "../src/pipeline/ProxyResponse.ts"
import { ProxyRequest, RequestContext } from "../src/pipeline/RequestContext.ts"
import * as Authorization from "../src/policies/Authorization.ts"
import * as Cors from "../src/policies/Cors.ts"
import * as HeaderModifier from "../src/policies/HeaderModifier.ts"
import * as LocalRateLimit from "../src/policies/LocalRateLimit.ts"
import * as Retry from "../src/policies/Retry.ts"
import * as Timeout from "../src/policies/Timeout.ts"
import * as Headers from "../src/shared/headers.ts"
import { releaseStartupMemory, YOUNG_SEMI_SPACE_MIB } from "../src/shared/StartupMemory.ts"
import { REQUEST_HEADERS, SIX_POLICIES } from "./six-policies.ts"

const REQUESTS = Number(process.env["BENCH_PIPELINE_REQUESTS"] ?? 200_000)
const IN_FLIGHT = Number(process.env["BENCH_PIPELINE_IN_FLIGHT"] ?? 32)
const RUNS = Number(process.env["BENCH_PIPELINE_RUNS"] ?? 7)

/** No policy here calls a backend. */
const env: BuildEnv = {
  maxBufferSize: 2 * 1024 * 1024,
  backendCall: (_spec, path) => Effect.fail(new ConfigError({ issues: [{ path, message: "no backend calls in bench/pipeline" }] })),
  resolveBackend: (_spec, path) => Effect.fail(new ConfigError({ issues: [{ path, message: "no backend calls in bench/pipeline" }] }))
}

interface Step {
  readonly name: string
  readonly make: Effect.Effect<Middleware, ConfigError, Scope.Scope>
}

const six = SIX_POLICIES
/** bench/policies' /p6 route (`six-policies.ts`), outermost first (the order PolicyOrder gives them). */
const STEPS: ReadonlyArray<Step> = [
  { name: "timeout", make: Timeout.policy.make(Schema.decodeUnknownSync(Timeout.Config)(six.timeout), env, "timeout") },
  { name: "cors", make: Cors.policy.make(Schema.decodeUnknownSync(Cors.Config)(six.cors), env, "cors") },
  { name: "localRateLimit", make: LocalRateLimit.policy.make(Schema.decodeUnknownSync(LocalRateLimit.Config)(six.localRateLimit), env, "localRateLimit") },
  { name: "authorization", make: Authorization.policy.make(Schema.decodeUnknownSync(Authorization.Config)(six.authorization), env, "authorization") },
  {
    name: "requestHeaderModifier",
    make: HeaderModifier.request.make(Schema.decodeUnknownSync(HeaderModifier.Config)(six.requestHeaderModifier), env, "requestHeaderModifier")
  },
  { name: "retry", make: Retry.policy.make(Schema.decodeUnknownSync(Retry.Config)(six.retry), env, "retry") }
]

/** Answers at once, or (`later`) once `release` runs: the upstream of one request or of many in flight. */
const stub = (later: boolean): { readonly handler: Handler; readonly release: () => void } => {
  const waiting: Array<() => void> = []
  const answer = () => new ProxyResponse(200, Headers.empty(), "upstream")
  if (!later) return { handler: Effect.sync(answer), release: () => undefined }
  return {
    handler: Effect.callback<ProxyResponse>((resume) => {
      waiting.push(() => resume(Effect.succeed(answer())))
    }),
    release: () => {
      for (const w of waiting.splice(0)) w()
    }
  }
}

const scope = Effect.runSync(Scope.make())
const chain = (names: ReadonlyArray<string>, upstream: Handler): Handler => {
  let handler = upstream
  for (const step of [...STEPS].reverse()) {
    if (!names.includes(step.name)) continue
    handler = Effect.runSync(Scope.provide(step.make, scope))(handler)
  }
  return handler
}

/** The load's request: bench/policies' headers (Origin, x-env). */
const request = (): ProxyRequest => {
  const headers = Headers.empty()
  headers["host"] = "127.0.0.1:8080"
  headers["user-agent"] = "autocannon"
  for (const [name, value] of Object.entries(REQUEST_HEADERS)) headers[name] = value
  return new ProxyRequest({} as IncomingMessage, "GET", "/p6", "", "127.0.0.1", "127.0.0.1:8080", "http", "HTTP/1.1", headers, "127.0.0.1", 40000, 0)
}

/** Best-of-RUNS µs per request of `names` around the stub, `inFlight` requests at a time. */
const time = (names: ReadonlyArray<string>, inFlight: number): number => {
  const upstream = stub(inFlight > 1)
  const handler = chain(names, upstream.handler)
  const base = Context.empty()
  let best = Infinity
  for (let run = 0; run < RUNS; run++) {
    let done = 0
    let failed = 0
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < REQUESTS; i += inFlight) {
      for (let j = 0; j < inFlight; j++) {
        Effect.runCallbackWith(Context.add(base, RequestContext, request()))(handler, {
          onExit: (exit) => {
            done++
            if (exit._tag === "Failure") failed++
          }
        })
      }
      upstream.release()
    }
    const us = Number(process.hrtime.bigint() - t0) / 1000 / REQUESTS
    if (failed > 0 || done < REQUESTS) throw new Error(`${names.join("+") || "stub"}: ${failed} failed, ${done} of ${REQUESTS} done`)
    best = Math.min(best, us)
  }
  return best
}

const main = (): void => {
  releaseStartupMemory()
  const young = getHeapSpaceStatistics().find((s) => s.space_name === "new_space")?.space_size ?? 0
  process.stdout.write(
    `Policy chain in-process: Node ${process.version}, young generation capped at 2 × ${YOUNG_SEMI_SPACE_MIB} MiB (now ${(young / 2 ** 20).toFixed(1)} MiB), ` +
      `${REQUESTS} requests per timing, best of ${RUNS}\n\n`
  )
  const all = STEPS.map((s) => s.name)
  // Warm-up: every chain once, so the first timed one is not also the one that pays for the JIT.
  for (const names of [[], ...all.map((n) => [n]), all]) for (const inFlight of [1, IN_FLIGHT]) time(names, inFlight)
  const rows: Array<[string, number, number]> = []
  const stubOne = time([], 1)
  const stubMany = time([], IN_FLIGHT)
  rows.push(["stub upstream alone (baseline)", stubOne, stubMany])
  for (const name of all) rows.push([`+ ${name}`, time([name], 1), time([name], IN_FLIGHT)])
  rows.push(["all six", time(all, 1), time(all, IN_FLIGHT)])
  const header = `${"chain".padEnd(32)} ${"1 at a time".padStart(12)} ${"added".padStart(8)} ${`${IN_FLIGHT} in flight`.padStart(13)} ${"added".padStart(8)}\n`
  process.stdout.write(header + "-".repeat(header.length - 1) + "\n")
  for (const [name, one, many] of rows) {
    process.stdout.write(
      `${name.padEnd(32)} ${`${one.toFixed(2)} µs`.padStart(12)} ${`+${(one - stubOne).toFixed(2)}`.padStart(8)} ${`${many.toFixed(2)} µs`.padStart(13)} ${`+${(many - stubMany).toFixed(2)}`.padStart(8)}\n`
    )
  }
  process.stdout.write(`\nµs per request, the request context's creation and the fiber included; "added" is over the stub alone in this run.\n`)
  Effect.runSync(Scope.close(scope, Exit.void))
}

main()
