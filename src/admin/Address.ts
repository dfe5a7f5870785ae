/**
 * Operational addresses as agentgateway writes them: `ip:port`, `[v6]:port`,
 * `localhost:port`, or `off`.
 *
 * @since 0.1.0
 */

export type Address = { readonly _tag: "Off" } | { readonly _tag: "Tcp"; readonly host: string; readonly port: number }

export const parse = (input: string): Address | { readonly error: string } => {
  if (input === "off") return { _tag: "Off" }
  if (input.startsWith("unix:")) return { error: `unix socket addresses are not supported yet: "${input}"` }
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(input)
  if (m === null || Number(m[3]) > 65535) return { error: `invalid address "${input}" (expected ip:port, localhost:port or off)` }
  return { _tag: "Tcp", host: m[1] ?? m[2]!, port: Number(m[3]) }
}

/** Whether an IP (as Node reports peers and bound addresses) is a loopback address. */
export const isLoopback = (ip: string): boolean => {
  const v4 = ip.startsWith("::ffff:") ? ip.slice(7) : ip
  return v4.startsWith("127.") || v4 === "::1" || v4 === "0:0:0:0:0:0:0:1"
}

/** Whether a configured host names loopback (so the bind must come out loopback). */
const namesLoopback = (host: string): boolean => host.toLowerCase() === "localhost" || isLoopback(host)

/**
 * The admin API changes the process (log level, shutdown) and shows its config: it binds a
 * non-loopback address only when `adminAddr` names one explicitly. A loopback name that resolved
 * elsewhere (a hosts file mapping `localhost` to an interface address) is refused rather than
 * exposed. Returns the refusal, or undefined.
 */
export const checkAdminBind = (configuredHost: string, boundAddress: string): string | undefined =>
  namesLoopback(configuredHost) && !isLoopback(boundAddress)
    ? `admin address "${configuredHost}" resolved to the non-loopback ${boundAddress}; name the address explicitly to expose the admin API`
    : undefined
