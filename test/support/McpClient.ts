/**
 * The official MCP SDK client connected to a gateway URL over Streamable HTTP.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"

export const connectClient = async (url: string, capabilities: Record<string, unknown> = {}) => {
  const client = new Client({ name: "test", version: "1.0.0" }, { capabilities })
  const transport = new StreamableHTTPClientTransport(new URL(url))
  await client.connect(transport)
  return { client, transport }
}
