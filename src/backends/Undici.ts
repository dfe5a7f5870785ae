/**
 * undici's package entry, loaded on first use. It installs the `request` API and costs about
 * 11 MiB of resident memory over the bare `Pool` the proxy path imports
 * (`undici/lib/dispatcher/pool.js`), so a gateway that never talks to an MCP, OpenAPI, JWKS or
 * OTLP endpoint does not pay for it.
 *
 * @since 0.1.0
 */
import type * as UndiciModule from "undici"

let loading: Promise<typeof UndiciModule> | undefined

export const load = (): Promise<typeof UndiciModule> => (loading ??= import("undici"))

/** `undici.request`, loading the module on the first call. */
export const request = (
  url: string | URL,
  options: Parameters<typeof UndiciModule.request>[1]
): Promise<UndiciModule.Dispatcher.ResponseData<unknown>> => load().then((undici) => undici.request(url, options))

/**
 * `dispatcher.request(options)` on any pool, the shared `UpstreamPools` ones included: the
 * package entry installs `request` on undici's `Dispatcher` prototype, so it is loaded first.
 */
export const requestOn = (
  dispatcher: UndiciModule.Dispatcher,
  options: UndiciModule.Dispatcher.RequestOptions
): Promise<UndiciModule.Dispatcher.ResponseData<unknown>> => load().then(() => dispatcher.request(options))
