/**
 * Federated names (agentgateway `mcp/handler.rs`): tools and prompts are `<target>_<name>`,
 * resource URIs and templates `<target>+<uri>` when the backend multiplexes. Target names
 * cannot contain either delimiter (checked at config load), so splitting on the first one is
 * unambiguous: `mcp_echo_http` is tool `echo_http` of target `mcp`.
 *
 * @since 0.1.0
 */

export const NAME_DELIMITER = "_"
export const URI_DELIMITER = "+"

export interface Naming {
  /** Whether names carry a target prefix. */
  readonly prefixNames: boolean
  /** Whether URIs carry a target prefix (only when multiplexing). */
  readonly prefixUris: boolean
  readonly targets: ReadonlyArray<string>
}

export const make = (targets: ReadonlyArray<string>, prefixMode: "conditional" | "always" | "never"): Naming => {
  const multiplexing = targets.length !== 1
  return {
    prefixNames: prefixMode === "always" || (prefixMode === "conditional" && multiplexing),
    prefixUris: multiplexing && prefixMode !== "never",
    targets
  }
}

export const exposeName = (naming: Naming, target: string, name: string): string =>
  naming.prefixNames ? `${target}${NAME_DELIMITER}${name}` : name

/** `{target, name}` of an exposed name; undefined when it names no target. */
export const resolveName = (naming: Naming, exposed: string): { readonly target: string; readonly name: string } | undefined => {
  if (!naming.prefixNames) {
    // Single target, or `never` (resolved by the caller from the targets' lists).
    return naming.targets.length === 1 ? { target: naming.targets[0]!, name: exposed } : undefined
  }
  const i = exposed.indexOf(NAME_DELIMITER)
  if (i <= 0) return undefined
  const target = exposed.slice(0, i)
  return naming.targets.includes(target) ? { target, name: exposed.slice(i + 1) } : undefined
}

/** RFC 3986 §3.1 scheme. */
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:/

export const exposeUri = (naming: Naming, target: string, uri: string): string => {
  if (!naming.prefixUris || !SCHEME.test(uri)) return uri
  // MCP Apps: `ui://` stays recognisable to hosts that special-case it.
  if (uri.startsWith("ui://")) return `ui://${target}${URI_DELIMITER}${uri.slice(5)}`
  return `${target}${URI_DELIMITER}${uri}`
}

export const resolveUri = (naming: Naming, exposed: string): { readonly target: string; readonly uri: string } | undefined => {
  if (!naming.prefixUris) return naming.targets.length === 1 ? { target: naming.targets[0]!, uri: exposed } : undefined
  if (exposed.startsWith("ui://")) {
    const rest = exposed.slice(5)
    const i = rest.indexOf(URI_DELIMITER)
    if (i <= 0) return undefined
    const target = rest.slice(0, i)
    return naming.targets.includes(target) ? { target, uri: `ui://${rest.slice(i + 1)}` } : undefined
  }
  const i = exposed.indexOf(URI_DELIMITER)
  if (i <= 0) return undefined
  const target = exposed.slice(0, i)
  return naming.targets.includes(target) ? { target, uri: exposed.slice(i + 1) } : undefined
}
