/**
 * OpenAPI targets: upstream's `examples/mcp-openapi` config (test/fixtures/mcp), its file path
 * and ports pointed at the fixture and a small local Petstore, driven with the SDK client; plus
 * the MCP metric and access-log fields those calls produce.
 */
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { validate } from "../../src/Gateway.ts"
import { freePort, type Running, startGateway } from "../support/Harness.ts"
import { connectClient } from "../support/McpClient.ts"

const fixtures = path.resolve(import.meta.dirname, "../fixtures/mcp")

interface Seen {
  readonly method: string
  readonly url: string
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

/** getPetById (id 500 fails with a 500), addPet (echoes the pet with an id), findPetsByStatus (an array), getInventory (3 MiB). */
const startPetstore = async (): Promise<{ port: number; seen: Array<Seen>; close: () => Promise<void> }> => {
  const seen: Array<Seen> = []
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8")
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body })
      const url = new URL(req.url ?? "/", "http://petstore")
      const json = (status: number, value: unknown) => {
        res.writeHead(status, { "content-type": "application/json" })
        res.end(JSON.stringify(value))
      }
      const pet = /^\/api\/v3\/pet\/(\d+)$/.exec(url.pathname)
      if (req.method === "GET" && pet !== null) {
        if (pet[1] === "500") {
          res.writeHead(500, { "content-type": "text/plain" })
          res.end("database down")
          return
        }
        return json(200, { id: Number(pet[1]), name: "rex", status: "available" })
      }
      if (req.method === "POST" && url.pathname === "/api/v3/pet") return json(200, { ...JSON.parse(body), id: 7 })
      // Over OpenApi.maxResponseBytes (2 MiB), streamed without a content-length.
      if (req.method === "GET" && url.pathname === "/api/v3/store/inventory") {
        res.writeHead(200, { "content-type": "application/json" })
        const chunk = "x".repeat(64 * 1024)
        for (let i = 0; i < 48; i++) res.write(chunk)
        res.end()
        return
      }
      if (req.method === "GET" && url.pathname === "/api/v3/pet/findByStatus") return json(200, [{ id: 1, status: url.searchParams.get("status") }])
      json(404, { message: "not found" })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  return { port, seen, close: () => new Promise((resolve) => server.close(() => resolve())) }
}

/** The upstream example, unchanged but for where its document and API are. */
const exampleConfig = (): string => {
  const text = fs.readFileSync(path.join(fixtures, "petstore-config.yaml"), "utf8")
  const replaced = text
    .replace("file: ./examples/mcp-openapi/openapi.json", `file: ${path.join(fixtures, "petstore-openapi.json")}`)
    .replace("host: localhost:8080", "host: 127.0.0.1:$UP")
    .replace("- port: 3000", "- port: $PORT")
  expect(replaced).not.toBe(text)
  return replaced
}

describe("MCP OpenAPI targets (examples/mcp-openapi)", () => {
  let petstore: Awaited<ReturnType<typeof startPetstore>>
  let gw: Running
  let port: number
  beforeAll(async () => {
    petstore = await startPetstore()
    port = await freePort()
    gw = await startGateway(exampleConfig(), { vars: { PORT: port, UP: petstore.port } })
  })
  afterAll(async () => {
    await gw.stop()
    await petstore.close()
  })

  it("answers initialize locally and lists one tool per operation", async () => {
    const { client } = await connectClient(gw.url(port, "/mcp"))
    expect(client.getServerCapabilities()).toEqual({ tools: {} })
    const tools = (await client.listTools()).tools
    expect(tools.map((t) => t.name)).toContain("getPetById")
    expect(tools).toHaveLength(19)
    const get = tools.find((t) => t.name === "getPetById")!
    expect(get.inputSchema.required).toEqual(["path"])
    expect((await client.listPrompts()).prompts).toEqual([])
    expect((await client.listResources()).resources).toEqual([])
    await client.close()
  })

  it("answers a GET stream with 405: no OpenAPI target sends server messages", async () => {
    const { client, transport } = await connectClient(gw.url(port, "/mcp"))
    const res = await fetch(gw.url(port, "/mcp"), { headers: { accept: "text/event-stream", "mcp-session-id": transport.sessionId! } })
    expect(res.status).toBe(405)
    expect(await res.text()).toBe("GET event stream is not supported by any upstream")
    await client.close()
  })

  it("calls getPetById as GET <servers prefix>/pet/{petId}", async () => {
    const { client } = await connectClient(gw.url(port, "/mcp"))
    const before = petstore.seen.length
    const result = await client.callTool({ name: "getPetById", arguments: { path: { petId: 42 } } })
    expect(result.structuredContent).toEqual({ id: 42, name: "rex", status: "available" })
    expect(result.content).toEqual([{ type: "text", text: JSON.stringify({ id: 42, name: "rex", status: "available" }) }])
    expect(result.isError).toBeUndefined()
    const req = petstore.seen[before]!
    expect(req.method).toBe("GET")
    expect(req.url).toBe("/api/v3/pet/42")
    expect(req.headers["accept"]).toBe("application/json")
    expect(req.headers["host"]).toBe(`127.0.0.1:${petstore.port}`)
    expect(req.headers["mcp-session-id"]).toBeUndefined()
    await client.close()
  })

  it("sends a JSON body for addPet and wraps array results as {data}", async () => {
    const { client } = await connectClient(gw.url(port, "/mcp"))
    const before = petstore.seen.length
    const added = await client.callTool({ name: "addPet", arguments: { body: { name: "tom", photoUrls: [] } } })
    expect(added.structuredContent).toEqual({ name: "tom", photoUrls: [], id: 7 })
    const req = petstore.seen[before]!
    expect(req.method).toBe("POST")
    expect(req.url).toBe("/api/v3/pet")
    expect(req.headers["content-type"]).toBe("application/json")
    expect(JSON.parse(req.body)).toEqual({ name: "tom", photoUrls: [] })
    const found = await client.callTool({ name: "findPetsByStatus", arguments: { query: { status: "sold" } } })
    expect(found.structuredContent).toEqual({ data: [{ id: 1, status: "sold" }] })
    expect(petstore.seen.at(-1)!.url).toBe("/api/v3/pet/findByStatus?status=sold")
    await client.close()
  })

  it("turns a 5xx into a tool error and bad arguments into a tool error without a request", async () => {
    const { client } = await connectClient(gw.url(port, "/mcp"))
    const failed = await client.callTool({ name: "getPetById", arguments: { path: { petId: 500 } } })
    expect(failed.isError).toBe(true)
    expect(failed.content).toEqual([
      { type: "text", text: "Upstream API call for tool 'getPetById' failed with status 500 Internal Server Error: database down" }
    ])
    const before = petstore.seen.length
    const invalid = await client.callTool({ name: "getPetById", arguments: {} })
    expect(invalid.isError).toBe(true)
    expect(petstore.seen.length).toBe(before)
    await client.close()
  })

  it("refuses a response over 2 MiB as HTTP 500 with a JSON-RPC internal error", async () => {
    const { client } = await connectClient(gw.url(port, "/mcp"))
    const error = await client.callTool({ name: "getInventory", arguments: {} }).then(() => undefined, (e: unknown) => e)
    expect(error).toMatchObject({ code: 500 })
    expect(String(error)).toContain(`"error":{"code":-32603,"message":"failed to send message: openapi: response body larger than 2097152 bytes"}`)
    // The gateway and the target still serve the next call.
    expect((await client.callTool({ name: "getPetById", arguments: { path: { petId: 1 } } })).isError).toBeUndefined()
    await client.close()
  })
})

describe("OpenAPI target config", () => {
  const firstIssue = async (target: string) => {
    const text = `
binds:
- port: 3999
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - name: api
            openapi: ${target}
`
    const exit = await Effect.runPromiseExit(validate({ _tag: "Inline", text }, () => undefined))
    if (Exit.isSuccess(exit)) return "valid"
    const error = Cause.squash(exit.cause)
    const issues = typeof error === "object" && error !== null && "issues" in error && Array.isArray(error.issues) ? error.issues : []
    const issue: unknown = issues[0]
    return typeof issue === "object" && issue !== null && "path" in issue && "message" in issue ? `${String(issue.path)}: ${String(issue.message)}` : String(error)
  }
  const at = "binds[0].listeners[0].routes[0].backends[0].mcp.targets[0].openapi"

  it("loads the document when the config is built and names the field of a bad one", async () => {
    expect(await firstIssue(`{schema: {file: ${path.join(fixtures, "petstore-openapi.json")}}, host: "127.0.0.1:1"}`)).toBe("valid")
    expect(await firstIssue(`{schema: {file: /nonexistent/api.json}, host: "127.0.0.1:1"}`)).toMatch(
      new RegExp(`^${at.replace(/[[\].]/g, "\\$&")}\\.schema\\.file: cannot read /nonexistent/api\\.json`)
    )
    const noOperationId = JSON.stringify(JSON.stringify({ openapi: "3.0.0", info: { title: "t", version: "1" }, paths: { "/a": { get: { responses: {} } } } }))
    expect(await firstIssue(`{schema: ${noOperationId}, host: "127.0.0.1:1"}`)).toMatch(new RegExp(`^${at.replace(/[[\].]/g, "\\$&")}\\.schema: .*operationId`))
    expect(await firstIssue(`{schema: "{}", backend: other}`)).toBe(`${at}: backend "other" is not defined in backends`)
  })
})
