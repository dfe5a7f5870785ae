/**
 * Federation (agentgateway `mcp/handler.rs`): what each client method does across the
 * session's targets. Lists fan out (each target's pages read in full, from the per-session
 * cache when fresh), are filtered by the authorizer and renamed; calls are routed to one target
 * by name or URI; ping and setLevel fan out; initialize is merged. Single-target backends pass
 * results through verbatim (a list page by page, when neither renamed nor filtered).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type { ProxyRequest } from "../pipeline/RequestContext.ts"
import * as Headers from "../shared/headers.ts"
import { VERSION } from "../Version.ts"
import type { SseBody } from "./EventStream.ts"
import { allowAll, type Authorizer, type ItemKind, type McpLogFields } from "./Hooks.ts"
import * as McpSchema from "./McpSchema.ts"
import * as Naming from "./Naming.ts"
import type { Session } from "./Session.ts"
import { type CallContext, clientMessage, logFailure, type Upstream, UpstreamError } from "./Upstream.ts"

/**
 * Pages of one target's list the gateway reads (by `nextCursor`) when it merges lists or
 * resolves an unprefixed name (`prefixMode: never`); items past the last page read are not listed.
 */
export const MAX_LIST_PAGES = 64

export interface Options {
  readonly failOpen: boolean
  readonly stateful: boolean
  readonly authorize: Authorizer
}

export interface Call {
  readonly request: ProxyRequest
  readonly context: CallContext
  readonly stream: SseBody
}

/** A JSON-RPC response and the HTTP status it gets when no frame was streamed before it. */
export interface Outcome {
  readonly response: McpSchema.Response
  readonly status: number
}

const ok = (id: McpSchema.Id, result: unknown): Outcome => ({ response: McpSchema.resultResponse(id, result), status: 200 })
const fail = (id: McpSchema.Id, status: number, code: number, message: string): Outcome => ({
  response: McpSchema.errorResponse(id, code, message),
  status
})
const upstreamFailure = (id: McpSchema.Id, e: UpstreamError): Effect.Effect<Outcome> =>
  Effect.as(logFailure(e), fail(id, 500, McpSchema.ErrorCode.InternalError, clientMessage(e)))

const INSTRUCTIONS_PREAMBLE =
  "This server is a gateway to a set of mcp servers. It is responsible for routing requests to the correct server and aggregating the results."

/** The targets a session talks to, in config order (failOpen may have dropped some). */
const live = (session: Session): Array<Upstream> => session.naming.targets.flatMap((t) => session.upstreams.get(t) ?? [])

const forward = (session: Session, upstream: Upstream, method: string, params: Record<string, unknown> | undefined, call: Call) =>
  session.withStream([upstream.target], call.stream, upstream.request(method, params, call.context))

/** Fans a request out; failClosed: the first failure fails all, failOpen: failures are skipped unless all fail. */
const fanOut = <A>(
  session: Session,
  options: Options,
  call: Call,
  each: (u: Upstream) => Effect.Effect<A, UpstreamError>
): Effect.Effect<Array<{ readonly target: string; readonly value: A }>, UpstreamError> => {
  const upstreams = live(session)
  if (upstreams.length === 0) return Effect.fail(new UpstreamError({ target: "*", message: "no backends configured" }))
  const run = session.withStream(
    upstreams.map((u) => u.target),
    call.stream,
    Effect.forEach(upstreams, (u) => Effect.result(Effect.map(each(u), (value) => ({ target: u.target, value }))), { concurrency: "unbounded" })
  )
  return Effect.flatMap(run, (results) => {
    const good: Array<{ target: string; value: A }> = []
    let firstError: UpstreamError | undefined
    for (const r of results) {
      if (Result.isSuccess(r)) good.push(r.success)
      else firstError ??= r.failure
    }
    if (firstError !== undefined && (!options.failOpen || good.length === 0)) return Effect.fail(firstError)
    return Effect.succeed(good)
  })
}

/** An upstream response as a value, or its JSON-RPC error as an UpstreamError (skipped by failOpen merges). */
const resultOf = (target: string, response: McpSchema.Response): Effect.Effect<unknown, UpstreamError> =>
  response.error !== undefined
    ? Effect.fail(new UpstreamError({ target, message: response.error.message }))
    : Effect.succeed(response.result)

export const initialize = (
  session: Session,
  options: Options,
  request: McpSchema.Request,
  call: Call
): Effect.Effect<Outcome> => {
  const requested = McpSchema.field(request.params, "protocolVersion")
  return fanOut(session, options, call, (u) =>
    Effect.flatMap(u.request("initialize", request.params, call.context), (r) => resultOf(u.target, r))
  ).pipe(
    Effect.map((results): Outcome => {
      if (session.naming.targets.length === 1 && results.length === 1) return ok(request.id, results[0]!.value)
      const versions = results.map((r) => McpSchema.field(r.value, "protocolVersion")).filter((v): v is string => typeof v === "string")
      if (typeof requested === "string") versions.push(requested)
      const protocolVersion = versions.sort()[0] ?? McpSchema.LATEST_VERSION
      let instructions = INSTRUCTIONS_PREAMBLE
      for (const r of results) {
        const text = McpSchema.field(r.value, "instructions")
        if (typeof text === "string" && text !== "") instructions += `\n\n[${r.target}]\n${text}`
      }
      const merged: Record<string, unknown> = {}
      for (const r of results) {
        const caps = McpSchema.field(r.value, "capabilities")
        if (McpSchema.isRecord(caps)) for (const [k, v] of Object.entries(caps)) merged[k] ??= v
      }
      return ok(request.id, {
        protocolVersion,
        capabilities: {
          ...merged,
          tools: { listChanged: true },
          prompts: { listChanged: true },
          resources: { listChanged: true, subscribe: options.stateful }
        },
        serverInfo: { name: "agentgateway", version: VERSION },
        instructions
      })
    }),
    Effect.catch((e: UpstreamError) => upstreamFailure(request.id, e))
  )
}

interface ListSpec {
  readonly key: string
  readonly kind: ItemKind
  /** The field holding an item's routing name: `name` or `uri`/`uriTemplate`. */
  readonly nameField: string
}

const LISTS: Readonly<Record<string, ListSpec>> = {
  "tools/list": { key: "tools", kind: "tool", nameField: "name" },
  "prompts/list": { key: "prompts", kind: "prompt", nameField: "name" },
  "resources/list": { key: "resources", kind: "resource", nameField: "uri" },
  "resources/templates/list": { key: "resourceTemplates", kind: "resource", nameField: "uriTemplate" }
}

/**
 * One target's whole list: its pages read in order by `nextCursor` (at most MAX_LIST_PAGES;
 * an absent, empty or already seen cursor ends it), their items concatenated under `key`, the
 * first page's other fields kept and `nextCursor` dropped. Kept in the session cache, which
 * only ever holds whole lists, until a list_changed for the target invalidates it (a
 * list_changed during the read keeps the result out of the cache). A page that fails fails
 * the whole read: the caller treats the target as failed, never as a shorter list.
 */
const wholeList = (
  session: Session,
  u: Upstream,
  method: string,
  key: string,
  params: Record<string, unknown> | undefined,
  call: Call
): Effect.Effect<unknown, UpstreamError> =>
  Effect.suspend(() => {
    const hit = session.cached(u.target, method)
    if (hit !== undefined) return Effect.succeed(hit)
    const generation = session.generationOf(u.target, method)
    // The client's own (empty) cursor is not the target's: each page's cursor is the target's.
    const { cursor: _clientCursor, ...others } = params ?? {}
    const base = params === undefined ? undefined : others
    const items: Array<unknown> = []
    const seen = new Set<string>()
    const page = (cursor: string | undefined, read: number, first: Record<string, unknown>): Effect.Effect<unknown, UpstreamError> =>
      Effect.flatMap(u.request(method, cursor === undefined ? base : { ...base, cursor }, call.context), (r) =>
        Effect.flatMap(resultOf(u.target, r), (result) => {
          const head = read === 0 && McpSchema.isRecord(result) ? result : first
          const raw = McpSchema.field(result, key)
          if (Array.isArray(raw)) for (const item of raw) items.push(item)
          const next = McpSchema.field(result, "nextCursor")
          const more = typeof next === "string" && next !== "" && !seen.has(next)
          if (more && read + 1 < MAX_LIST_PAGES) {
            seen.add(next)
            return page(next, read + 1, head)
          }
          const { nextCursor: _, ...rest } = head
          const whole = { ...rest, [key]: items }
          const truncated = more ? Effect.logWarning(`MCP target ${u.target}: ${method} has more than ${MAX_LIST_PAGES} pages; the rest is not listed`) : Effect.void
          return Effect.as(Effect.andThen(truncated, Effect.sync(() => session.store(u.target, method, generation, whole))), whole)
        })
      )
    return page(undefined, 0, {})
  })

/**
 * A pure pass-through's page: the client's cursor goes upstream and the upstream's
 * `nextCursor` comes back. Only a first page without `nextCursor` is a whole list, so only
 * that one is cached (and answered from the cache).
 */
const pageOf = (session: Session, u: Upstream, method: string, params: Record<string, unknown> | undefined, call: Call) => {
  const paged = McpSchema.field(params, "cursor") !== undefined
  if (!paged) {
    const hit = session.cached(u.target, method)
    if (hit !== undefined) return Effect.succeed(hit)
  }
  const generation = session.generationOf(u.target, method)
  return Effect.flatMap(u.request(method, params, call.context), (r) =>
    Effect.tap(resultOf(u.target, r), (result) => Effect.sync(() => {
      if (!paged && McpSchema.field(result, "nextCursor") === undefined) session.store(u.target, method, generation, result)
    }))
  )
}

/**
 * A single target whose names are neither rewritten nor filtered is passed through page by
 * page; otherwise each target's whole list is merged and the result has no `nextCursor`, so a
 * client cursor there was never issued by the gateway and is refused (MCP: invalid params).
 */
const list = (session: Session, options: Options, request: McpSchema.Request, spec: ListSpec, call: Call): Effect.Effect<Outcome> => {
  const naming = session.naming
  if (naming.targets.length === 1 && !naming.prefixNames && options.authorize === allowAll) {
    return fanOut(session, options, call, (u) => pageOf(session, u, request.method, request.params, call)).pipe(
      Effect.map((results) => ok(request.id, results[0]?.value ?? { [spec.key]: [] })),
      Effect.catch((e: UpstreamError) => upstreamFailure(request.id, e))
    )
  }
  // The gateway never hands out a cursor for a merged list; an empty or null one means "first page".
  const cursor = McpSchema.field(request.params, "cursor")
  if (cursor !== undefined && cursor !== null && cursor !== "") {
    return Effect.succeed(fail(request.id, 400, McpSchema.ErrorCode.InvalidParams, "invalid cursor: a merged list has one page"))
  }
  return fanOut(session, options, call, (u) => wholeList(session, u, request.method, spec.key, request.params, call)).pipe(
    Effect.map((results) => {
      const items: Array<unknown> = []
      const seen = new Map<string, number>()
      for (const r of results) {
        const raw = McpSchema.field(r.value, spec.key)
        if (!Array.isArray(raw)) continue
        for (const item of raw) {
          const name = McpSchema.field(item, spec.nameField)
          if (typeof name !== "string" || !McpSchema.isRecord(item)) continue
          if (!options.authorize({ kind: spec.kind, target: r.target, name }, call.request)) continue
          const exposed = spec.kind === "resource" ? Naming.exposeUri(naming, r.target, name) : Naming.exposeName(naming, r.target, name)
          seen.set(exposed, (seen.get(exposed) ?? 0) + 1)
          items.push(exposed === name ? item : { ...item, [spec.nameField]: exposed })
        }
      }
      // `prefixMode: never`: a name two targets share is ambiguous, so neither is listed.
      const unique = items.filter((item) => (seen.get(String(McpSchema.field(item, spec.nameField))) ?? 0) === 1)
      // One target (filtered or renamed): its whole list's other fields stay.
      const single = naming.targets.length === 1 && results.length === 1 ? results[0]!.value : undefined
      const base = McpSchema.isRecord(single) ? single : {}
      return ok(request.id, { ...base, [spec.key]: unique })
    }),
    Effect.catch((e: UpstreamError) => upstreamFailure(request.id, e))
  )
}

const unknownItem = (id: McpSchema.Id, kind: ItemKind, name: string) =>
  fail(id, 400, McpSchema.ErrorCode.InvalidParams, `Unknown ${kind}: ${name}`)

/** Whether a target's whole list (`wholeList`, so cached) has `name`. A failing target does not list it. */
const listsName = (session: Session, u: Upstream, method: string, key: string, name: string, call: Call): Effect.Effect<boolean> =>
  Effect.map(Effect.result(wholeList(session, u, method, key, undefined, call)), (r) => {
    if (Result.isFailure(r)) return false
    const items = McpSchema.field(r.success, key)
    return Array.isArray(items) && items.some((i) => McpSchema.field(i, "name") === name)
  })

/** Resolves `prefixMode: never` names by reading each target's list (all its pages). */
const findByList = (session: Session, kind: "tool" | "prompt", name: string, call: Call) => {
  const method = kind === "tool" ? "tools/list" : "prompts/list"
  const key = kind === "tool" ? "tools" : "prompts"
  return Effect.map(
    Effect.forEach(live(session), (u) => Effect.map(listsName(session, u, method, key, name, call), (found) => (found ? [u.target] : []))),
    (hits) => {
      const flat = hits.flat()
      return flat.length === 1 ? flat[0] : undefined
    }
  )
}

const routeByName = (
  session: Session,
  options: Options,
  request: McpSchema.Request,
  kind: "tool" | "prompt",
  call: Call
): Effect.Effect<Outcome> => {
  const exposed = McpSchema.field(request.params, "name")
  if (typeof exposed !== "string") return Effect.succeed(fail(request.id, 400, McpSchema.ErrorCode.InvalidParams, "missing name"))
  const resolved = Naming.resolveName(session.naming, exposed)
  const target: Effect.Effect<{ target: string; name: string } | undefined> = resolved !== undefined
    ? Effect.succeed(resolved)
    : session.naming.prefixNames
    ? Effect.succeed(undefined)
    : Effect.map(findByList(session, kind, exposed, call), (t) => (t === undefined ? undefined : { target: t, name: exposed }))
  return Effect.flatMap(target, (r) => {
    if (call.request.mcp !== undefined) {
      call.request.mcp.target = r?.target
      if (kind === "tool") call.request.mcp.toolName = r?.name
      else call.request.mcp.promptName = r?.name
    }
    const upstream = r === undefined ? undefined : session.upstreams.get(r.target)
    if (r === undefined || upstream === undefined || !options.authorize({ kind, target: r.target, name: r.name }, call.request)) {
      return Effect.succeed(unknownItem(request.id, kind, exposed))
    }
    // Unprefixed names (one target) reach it as the client sent them: no copy.
    const params = r.name === exposed ? request.params : { ...request.params, name: r.name }
    return relay(session, upstream, request, params, call, (x) => x)
  })
}

/** Forwards to one target and re-stamps the client's id on the response. */
const relay = (
  session: Session,
  upstream: Upstream,
  request: McpSchema.Request,
  params: Record<string, unknown> | undefined,
  call: Call,
  rewrite: (result: unknown) => unknown
): Effect.Effect<Outcome> =>
  forward(session, upstream, request.method, params, call).pipe(
    Effect.map((r): Outcome => ({
      response: r.error !== undefined ? McpSchema.errorResponse(request.id, r.error.code, r.error.message, r.error.data) : McpSchema.resultResponse(request.id, rewrite(r.result)),
      status: 200
    })),
    Effect.catch((e: UpstreamError) => upstreamFailure(request.id, e))
  )

const routeByUri = (
  session: Session,
  options: Options,
  request: McpSchema.Request,
  uri: unknown,
  params: (upstreamUri: string) => Record<string, unknown>,
  call: Call
): Effect.Effect<Outcome> => {
  if (typeof uri !== "string") return Effect.succeed(fail(request.id, 400, McpSchema.ErrorCode.InvalidParams, "missing uri"))
  const r = Naming.resolveUri(session.naming, uri)
  const upstream = r === undefined ? undefined : session.upstreams.get(r.target)
  if (call.request.mcp !== undefined) {
    call.request.mcp.target = r?.target
    call.request.mcp.resourceUri = r?.uri
  }
  if (r === undefined || upstream === undefined || !options.authorize({ kind: "resource", target: r.target, name: r.uri }, call.request)) {
    return Effect.succeed(unknownItem(request.id, "resource", uri))
  }
  const naming = session.naming
  return relay(session, upstream, request, params(r.uri), call, (result) => {
    const contents = McpSchema.field(result, "contents")
    if (!naming.prefixUris || !Array.isArray(contents) || !McpSchema.isRecord(result)) return result
    return {
      ...result,
      contents: contents.map((c) => {
        const u = McpSchema.field(c, "uri")
        return typeof u === "string" && McpSchema.isRecord(c) ? { ...c, uri: Naming.exposeUri(naming, r.target, u) } : c
      })
    }
  })
}

/**
 * The log fields a routed request will get (`mcp.target`, the item's upstream name), known
 * before it runs: the legacy SSE frontend answers the POST (and logs it) before the call is
 * routed. `prefixMode: never` names are looked up in the cached (whole) lists only.
 */
export const describe = (session: Session, request: McpSchema.Request, fields: McpLogFields): void => {
  const naming = session.naming
  switch (request.method) {
    case "tools/call":
    case "prompts/get": {
      const exposed = McpSchema.field(request.params, "name")
      if (typeof exposed !== "string") return
      const tool = request.method === "tools/call"
      let r = Naming.resolveName(naming, exposed)
      if (r === undefined && !naming.prefixNames) {
        const method = tool ? "tools/list" : "prompts/list"
        const hits = naming.targets.filter((t) => {
          const items = McpSchema.field(session.cached(t, method), tool ? "tools" : "prompts")
          return Array.isArray(items) && items.some((i) => McpSchema.field(i, "name") === exposed)
        })
        if (hits.length === 1) r = { target: hits[0]!, name: exposed }
      }
      fields.target = r?.target
      if (tool) fields.toolName = r?.name
      else fields.promptName = r?.name
      return
    }
    case "resources/read":
    case "resources/subscribe":
    case "resources/unsubscribe": {
      const uri = McpSchema.field(request.params, "uri")
      const r = typeof uri === "string" ? Naming.resolveUri(naming, uri) : undefined
      fields.target = r?.target
      fields.resourceUri = r?.uri
    }
  }
}

/** Every method but initialize. */
export const handle = (session: Session, options: Options, request: McpSchema.Request, call: Call): Effect.Effect<Outcome> => {
  const method = request.method
  const spec = LISTS[method]
  if (spec !== undefined) return list(session, options, request, spec, call)
  switch (method) {
    case "tools/call":
      return routeByName(session, options, request, "tool", call)
    case "prompts/get":
      return routeByName(session, options, request, "prompt", call)
    case "resources/read":
    case "resources/subscribe":
    case "resources/unsubscribe":
      return routeByUri(session, options, request, McpSchema.field(request.params, "uri"), (uri) => ({ ...request.params, uri }), call)
    case "completion/complete": {
      const ref = McpSchema.field(request.params, "ref")
      if (McpSchema.field(ref, "type") === "ref/resource") {
        return routeByUri(session, options, request, McpSchema.field(ref, "uri"), (uri) => ({ ...request.params, ref: { ...(McpSchema.isRecord(ref) ? ref : {}), uri } }), call)
      }
      const name = McpSchema.field(ref, "name")
      const r = typeof name === "string" ? Naming.resolveName(session.naming, name) : undefined
      const upstream = r === undefined ? undefined : session.upstreams.get(r.target)
      if (r === undefined || upstream === undefined || !options.authorize({ kind: "prompt", target: r.target, name: r.name }, call.request)) {
        return Effect.succeed(unknownItem(request.id, "prompt", String(name)))
      }
      return relay(session, upstream, request, { ...request.params, ref: { ...(McpSchema.isRecord(ref) ? ref : {}), name: r.name } }, call, (x) => x)
    }
    case "ping":
    case "logging/setLevel":
      return fanOut(session, options, call, (u) => Effect.flatMap(u.request(method, request.params, call.context), (r) => resultOf(u.target, r))).pipe(
        Effect.map(() => ok(request.id, {})),
        Effect.catch((e: UpstreamError) => upstreamFailure(request.id, e))
      )
    default: {
      // Methods the gateway does not federate (tasks/*, extensions) reach a single target as they are.
      const only = session.naming.targets.length === 1 ? session.upstreams.get(session.naming.targets[0]!) : undefined
      if (only === undefined) return Effect.succeed(fail(request.id, 500, McpSchema.ErrorCode.InternalError, `method not supported when multiplexing: ${method}`))
      return relay(session, only, request, request.params, call, (x) => x)
    }
  }
}

/**
 * A client notification: fanned out to every target, except `notifications/cancelled`: its
 * `requestId` is the client's, so the request it names is abandoned instead (Session.cancelCall)
 * and each target that request reached is told in its own id space by its transport; naming
 * nothing in flight, it goes nowhere (a raw id could cancel another client request upstream).
 */
export const notify = (session: Session, message: McpSchema.Notification, context: CallContext): Effect.Effect<void> => {
  if (message.method === "notifications/cancelled") return Effect.sync(() => void session.cancelCall(McpSchema.field(message.params, "requestId")))
  return Effect.forEach(live(session), (u) => Effect.ignore(u.send(message, context)), { concurrency: "unbounded", discard: true })
}

/** The client's answer to a relayed server→client request: back to the target, with its own id. */
export const respond = (session: Session, message: McpSchema.Response, target: string, id: McpSchema.Id, context: CallContext): Effect.Effect<boolean> => {
  const upstream = session.upstreams.get(target)
  if (upstream === undefined) return Effect.succeed(false)
  return Effect.as(Effect.ignore(upstream.send({ ...message, id }, context)), true)
}

/** Downstream headers forwarded to HTTP targets: all but these (§2.5). */
export const NOT_FORWARDED: ReadonlySet<string> = new Set([
  "content-encoding",
  "content-length",
  "mcp-session-id",
  "host",
  "accept",
  "content-type",
  "mcp-protocol-version",
  "last-event-id",
  // The client's mirror of its body (SEP-2243): the gateway rewrites names and ids, so the
  // client's values would contradict what a target is sent.
  "mcp-method",
  "mcp-name"
])

/**
 * Credential headers a federating backend does not pass on from the client: a client's token
 * was issued for one resource, and the targets are several servers (the MCP spec's "token
 * passthrough" rule). `backendAuth` (`passthrough` for a JWT the gateway validated) sets a
 * target's own.
 */
export const CLIENT_CREDENTIALS: ReadonlyArray<string> = ["authorization", "proxy-authorization"]

const sameValue = (a: string | ReadonlyArray<string>, b: string | ReadonlyArray<string>): boolean =>
  (typeof a === "string" ? a : a.join(", ")) === (typeof b === "string" ? b : b.join(", "))

/**
 * The downstream headers every target's requests carry. With one target the gateway is
 * transparent (as upstream: the client may hold a token for that server, found through the
 * well-known passthrough). A federating backend passes `client`, the headers as the client sent
 * them: a credential header still holding the client's value is dropped, one that a
 * backend-phase policy set (the MCP backend's own `backendAuth` key, a header edit) is kept.
 */
export const forwardedHeaders = (headers: Headers.HeaderMap, client?: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>): Headers.HeaderMap => {
  const out = Headers.empty()
  // for…in, not Object.entries: this runs on every call, and entries allocates a pair per header.
  for (const k in headers) {
    if (NOT_FORWARDED.has(k) || k.startsWith("mcp-param-")) continue
    const v = headers[k]
    if (v !== undefined) out[k] = v
  }
  if (client !== undefined) {
    for (const name of CLIENT_CREDENTIALS) {
      const sent = client[name]
      const now = out[name]
      if (sent !== undefined && now !== undefined && sameValue(sent, now)) delete out[name]
    }
  }
  return out
}
