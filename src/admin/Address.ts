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
