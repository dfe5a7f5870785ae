import { assert, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import * as Schema from "effect/Schema"
import { createServer, type Server } from "node:http"
import { readFileSync } from "node:fs"
import * as YAML from "yaml"
import type { ConfigError } from "../../src/config/ConfigError.ts"
import { McpTarget } from "../../src/config/LocalConfig.ts"
import * as OpenApi from "../../src/mcp/upstream/OpenApi.ts"

const AT = "binds[0].listeners[0].routes[0].backends[0].mcp.targets[0].openapi"
const PETSTORE = "test/fixtures/mcp/petstore-openapi.json"

/** Schemas are built with null-prototype objects; compare them as the JSON clients receive. */
const plain = (value: unknown): unknown => JSON.parse(JSON.stringify(value))

const doc = (extra: Record<string, unknown>) => ({ openapi: "3.0.3", info: { title: "t", version: "1" }, ...extra })

const spec = (document: unknown): OpenApi.OpenApiSpec => {
  const parsed = OpenApi.parse(document, `${AT}.schema`)
  if (Result.isFailure(parsed)) throw new Error(`unexpected: ${parsed.failure.message}`)
  return parsed.success
}

const parseError = (document: unknown): ConfigError => {
  const parsed = OpenApi.parse(document, `${AT}.schema`)
  if (Result.isSuccess(parsed)) throw new Error("expected the document to be rejected")
  return parsed.failure
}

const tool = (s: OpenApi.OpenApiSpec, name: string): OpenApi.Tool => {
  const found = OpenApi.tools(s).find((t) => t.name === name)
  if (found === undefined) throw new Error(`no tool ${name}`)
  return found
}

const call = (s: OpenApi.OpenApiSpec, name: string, args: unknown): OpenApi.OpenApiRequest => {
  const r = OpenApi.request(s, name, args)
  if (Result.isFailure(r)) throw new Error(`unexpected: ${r.failure.message}`)
  return r.success
}

const callError = (s: OpenApi.OpenApiSpec, name: string, args: unknown): OpenApi.ToolCallError => {
  const r = OpenApi.request(s, name, args)
  if (Result.isSuccess(r)) throw new Error("expected the call to be rejected")
  return r.failure
}

const op = (extra: Record<string, unknown>) => ({ operationId: "op", responses: {}, ...extra })
const single = (method: string, path: string, operation: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  spec(doc({ paths: { [path]: { [method]: op(operation) } }, ...extra }))

const bytes = (text: string) => new TextEncoder().encode(text)
const text = (body: Uint8Array | undefined) => (body === undefined ? undefined : new TextDecoder().decode(body))

describe("OpenApi: the petstore example (upstream examples/mcp-openapi)", () => {
  const petstore = spec(JSON.parse(readFileSync(PETSTORE, "utf8")))

  it.effect("load reads it from {file}", () =>
    Effect.gen(function*() {
      const loaded = yield* OpenApi.load({ file: PETSTORE }, AT)
      assert.deepStrictEqual(plain(OpenApi.tools(loaded)), plain(OpenApi.tools(petstore)))
      assert.strictEqual(loaded.prefix, "/api/v3")
    }))

  it("the example config's openapi target decodes with the config schema", () => {
    const config = YAML.parseDocument(readFileSync("test/fixtures/mcp/petstore-config.yaml", "utf8"))
    const node = config.getIn(["binds", 0, "listeners", 0, "routes", 0, "backends", 0, "mcp", "targets", 0])
    const target: unknown = YAML.isNode(node) ? node.toJSON() : node
    const decoded = Schema.decodeUnknownSync(McpTarget)(target, { onExcessProperty: "error" })
    assert.deepStrictEqual(plain(decoded.openapi), { schema: { file: "./examples/mcp-openapi/openapi.json" }, host: "localhost:8080" })
  })

  it("one tool per operation, in document order, prefix from the single relative server", () => {
    assert.strictEqual(petstore.prefix, "/api/v3")
    assert.deepStrictEqual(OpenApi.tools(petstore).map((t) => t.name), [
      "updatePet", "addPet", "findPetsByStatus", "findPetsByTags", "getPetById", "updatePetWithForm", "deletePet",
      "uploadFile", "getInventory", "placeOrder", "getOrderById", "deleteOrder", "createUser", "createUsersWithListInput",
      "loginUser", "logoutUser", "getUserByName", "updateUser", "deleteUser"
    ])
  })

  it("getPetById: description, title and a required path group", () => {
    assert.deepStrictEqual(plain(tool(petstore, "getPetById")), {
      name: "getPetById",
      title: "Find pet by ID.",
      description: "Returns a single pet.",
      inputSchema: {
        type: "object",
        properties: {
          path: {
            type: "object",
            properties: { petId: { type: "integer", format: "int64", description: "ID of pet to return" } },
            required: ["petId"]
          }
        },
        required: ["path"]
      }
    })
  })

  it("addPet: the JSON body schema with every $ref inlined, required", () => {
    const schema = plain(tool(petstore, "addPet").inputSchema)
    assert.deepStrictEqual(schema, {
      type: "object",
      properties: {
        body: {
          required: ["name", "photoUrls"],
          type: "object",
          properties: {
            id: { type: "integer", format: "int64", example: 10 },
            name: { type: "string", example: "doggie" },
            category: {
              type: "object",
              properties: { id: { type: "integer", format: "int64", example: 1 }, name: { type: "string", example: "Dogs" } },
              xml: { name: "category" }
            },
            photoUrls: { type: "array", xml: { wrapped: true }, items: { type: "string", xml: { name: "photoUrl" } } },
            tags: {
              type: "array",
              xml: { wrapped: true },
              items: { type: "object", properties: { id: { type: "integer", format: "int64" }, name: { type: "string" } }, xml: { name: "tag" } }
            },
            status: { type: "string", description: "pet status in the store", enum: ["available", "pending", "sold"] }
          },
          xml: { name: "pet" }
        }
      },
      required: ["body"]
    })
    assert.notInclude(JSON.stringify(OpenApi.tools(petstore)), "$ref")
  })

  it("uploadFile: octet-stream body as base64, optional; optional query group not required", () => {
    assert.deepStrictEqual(plain(tool(petstore, "uploadFile").inputSchema), {
      type: "object",
      properties: {
        body: { type: "string", format: "byte" },
        path: { type: "object", properties: { petId: { type: "integer", format: "int64", description: "ID of pet to update" } }, required: ["petId"] },
        query: { type: "object", properties: { additionalMetadata: { type: "string", description: "Additional Metadata" } }, required: [] }
      },
      required: ["path"]
    })
  })

  it("deletePet: an optional header group next to the required path group", () => {
    assert.deepStrictEqual(plain(tool(petstore, "deletePet").inputSchema), {
      type: "object",
      properties: {
        path: { type: "object", properties: { petId: { type: "integer", format: "int64", description: "Pet id to delete" } }, required: ["petId"] },
        header: { type: "object", properties: { api_key: { type: "string", description: "" } }, required: [] }
      },
      required: ["path"]
    })
  })

  it("requests carry the server prefix, encoded query and declared headers", () => {
    assert.deepStrictEqual(plain(call(petstore, "findPetsByStatus", { query: { status: "available" } })), {
      method: "GET",
      path: "/api/v3/pet/findByStatus?status=available",
      headers: { accept: "application/json" }
    })
    const del = call(petstore, "deletePet", { path: { petId: 7 }, header: { API_KEY: "k1" } })
    assert.strictEqual(del.method, "DELETE")
    assert.strictEqual(del.path, "/api/v3/pet/7")
    assert.deepStrictEqual(plain(del.headers), { accept: "application/json", api_key: "k1" })
    const add = call(petstore, "addPet", { body: { name: "rex", photoUrls: [] } })
    assert.strictEqual(add.method, "POST")
    assert.strictEqual(add.path, "/api/v3/pet")
    assert.strictEqual(add.headers["content-type"], "application/json")
    assert.strictEqual(text(add.body), "{\"name\":\"rex\",\"photoUrls\":[]}")
  })
})

describe("OpenApi: tools", () => {
  it("description is description, else summary, else the name; title is the summary cut to 64 characters", () => {
    const long = "S".repeat(70)
    const s = spec(doc({
      paths: {
        "/a": { get: op({ operationId: "a", description: "desc", summary: "sum" }) },
        "/b": { get: op({ operationId: "b", summary: long }) },
        "/c": { get: op({ operationId: "c" }) }
      }
    }))
    assert.deepStrictEqual([tool(s, "a").description, tool(s, "a").title], ["desc", "sum"])
    assert.deepStrictEqual([tool(s, "b").description, tool(s, "b").title], [long, "S".repeat(64)])
    assert.deepStrictEqual([tool(s, "c").description, "title" in tool(s, "c")], ["c", false])
    assert.deepStrictEqual(plain(tool(s, "c").inputSchema), { type: "object", properties: {}, required: [] })
  })

  it("every method of a path item becomes a tool", () => {
    const methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
    const s = spec(doc({ paths: { "/x": Object.fromEntries(methods.map((m) => [m, op({ operationId: `${m}X` })])) } }))
    assert.deepStrictEqual(OpenApi.tools(s).map((t) => t.name), methods.map((m) => `${m}X`))
    assert.strictEqual(call(s, "patchX", {}).method, "PATCH")
  })

  it("path-level parameters merge with operation ones: the operation wins, header names case-insensitively", () => {
    const s = spec(doc({
      paths: {
        "/items/{id}": {
          parameters: [
            { name: "id", in: "path", required: true, schema: { type: "string" }, description: "path level" },
            { name: "X-Trace", in: "header", schema: { type: "string" }, description: "path level" },
            { name: "limit", in: "query", schema: { type: "integer" } },
            { name: "session", in: "cookie", schema: { type: "string" } }
          ],
          get: op({
            operationId: "getItem",
            parameters: [
              { name: "id", in: "path", required: true, schema: { type: "integer" }, description: "operation level" },
              { name: "x-trace", in: "header", required: true, schema: { type: "string" }, description: "operation level" },
              { name: "id", in: "query", schema: { type: "boolean" } },
              { name: "theme", in: "cookie", schema: { type: "string" } }
            ]
          })
        }
      }
    }))
    assert.deepStrictEqual(plain(tool(s, "getItem").inputSchema), {
      type: "object",
      properties: {
        path: { type: "object", properties: { id: { type: "integer", description: "operation level" } }, required: ["id"] },
        query: { type: "object", properties: { limit: { type: "integer" }, id: { type: "boolean" } }, required: [] },
        header: { type: "object", properties: { "x-trace": { type: "string", description: "operation level" } }, required: ["x-trace"] }
      },
      required: ["path", "header"]
    })
  })

  it("$refs to parameters, request bodies, schemas, arrays, combinators and path items are inlined", () => {
    const s = spec(doc({
      paths: {
        "/things/{id}": { $ref: "#/components/pathItems/Thing" }
      },
      components: {
        pathItems: {
          Thing: {
            put: op({
              operationId: "putThing",
              parameters: [{ $ref: "#/components/parameters/Id" }],
              requestBody: { $ref: "#/components/requestBodies/ThingBody" }
            })
          }
        },
        parameters: { Id: { $ref: "#/components/parameters/IdTarget" }, IdTarget: { name: "id", in: "path", required: true, schema: { $ref: "#/components/schemas/Id" } } },
        requestBodies: { ThingBody: { required: true, content: { "application/json; charset=utf-8": { schema: { $ref: "#/components/schemas/Thing" } } } } },
        schemas: {
          Id: { type: "string", format: "uuid" },
          Tag: { type: "string" },
          Thing: {
            type: "object",
            properties: {
              id: { $ref: "#/components/schemas/Id" },
              tags: { type: "array", items: { $ref: "#/components/schemas/Tag" } },
              either: { oneOf: [{ $ref: "#/components/schemas/Id" }, { type: "integer" }] },
              "a/b": { $ref: "#/components/schemas/Slashed~1Name" },
              described: { $ref: "#/components/schemas/Tag", description: "a sibling refines the target" }
            }
          },
          "Slashed/Name": { type: "boolean" }
        }
      }
    }))
    assert.deepStrictEqual(plain(tool(s, "putThing").inputSchema), {
      type: "object",
      properties: {
        body: {
          type: "object",
          properties: {
            id: { type: "string", format: "uuid" },
            tags: { type: "array", items: { type: "string" } },
            either: { oneOf: [{ type: "string", format: "uuid" }, { type: "integer" }] },
            "a/b": { type: "boolean" },
            described: { type: "string", description: "a sibling refines the target" }
          }
        },
        path: { type: "object", properties: { id: { type: "string", format: "uuid" } }, required: ["id"] }
      },
      required: ["body", "path"]
    })
  })

  it("a body with only form or XML content is not an argument; a JSON body without schema accepts anything", () => {
    const form = single("post", "/f", { requestBody: { required: true, content: { "application/x-www-form-urlencoded": { schema: { type: "object" } } } } })
    assert.deepStrictEqual(plain(tool(form, "op").inputSchema), { type: "object", properties: {}, required: [] })
    assert.strictEqual(call(form, "op", { body: { a: 1 } }).body, undefined)
    const any = single("post", "/j", { requestBody: { content: { "application/json": {} } } })
    assert.deepStrictEqual(plain(tool(any, "op").inputSchema), { type: "object", properties: { body: {} }, required: [] })
  })

  it("JSON is preferred over octet-stream when both are offered", () => {
    const s = single("post", "/u", { requestBody: { content: { "application/octet-stream": {}, "application/json": { schema: { type: "object" } } } } })
    assert.deepStrictEqual(plain(tool(s, "op").inputSchema), { type: "object", properties: { body: { type: "object" } }, required: [] })
  })
})

describe("OpenApi: server prefix", () => {
  const prefixOf = (servers: unknown) => spec(doc({ servers, paths: { "/p": { get: op({}) } } }))
  it("0 servers ⇒ empty, 1 ⇒ the URL's path, relative kept", () => {
    assert.strictEqual(prefixOf(undefined).prefix, "")
    assert.strictEqual(prefixOf([]).prefix, "")
    assert.strictEqual(prefixOf([{ url: "https://api.example.com/v2" }]).prefix, "/v2")
    assert.strictEqual(prefixOf([{ url: "https://api.example.com" }]).prefix, "")
    assert.strictEqual(prefixOf([{ url: "https://api.example.com/v2/" }]).prefix, "/v2")
    assert.strictEqual(prefixOf([{ url: "/api/v1" }]).prefix, "/api/v1")
    assert.strictEqual(prefixOf([{ url: "v1" }]).prefix, "/v1")
    assert.strictEqual(prefixOf([{ url: "{scheme}://api.example.com/{base}", variables: { scheme: { default: "https" }, base: { default: "v3" } } }]).prefix, "/v3")
  })

  it("requests join prefix and path with one slash", () => {
    assert.strictEqual(call(prefixOf([{ url: "https://api.example.com/v2/" }]), "op", {}).path, "/v2/p")
    assert.strictEqual(call(prefixOf(undefined), "op", {}).path, "/p")
    const noSlash = spec(doc({ servers: [{ url: "/api/v3" }], paths: { pet: { get: op({}) } } }))
    assert.strictEqual(call(noSlash, "op", {}).path, "/api/v3/pet")
  })

  it("more than one server is a config error", () => {
    const e = parseError(doc({ servers: [{ url: "/a" }, { url: "/b" }], paths: {} }))
    assert.deepStrictEqual(e.issues, [{
      path: `${AT}.schema`,
      message: "invalid OpenAPI document: servers: multiple servers are not supported (found 2); keep one"
    }])
  })
})

describe("OpenApi: invalid documents", () => {
  const message = (document: unknown) => parseError(document).issues[0]!.message

  it("a missing operationId names its location", () => {
    const e = parseError(doc({ paths: { "/pets/{id}": { get: { responses: {} } } } }))
    assert.deepStrictEqual(e.issues, [{
      path: `${AT}.schema`,
      message: "invalid OpenAPI document: paths[\"/pets/{id}\"].get.operationId: operationId is required (it names the tool)"
    }])
  })

  it("unresolvable, external and malformed $refs", () => {
    assert.strictEqual(
      message(doc({ paths: { "/x": { post: op({ requestBody: { content: { "application/json": { schema: { $ref: "#/components/schemas/Nope" } } } } }) } } })),
      "invalid OpenAPI document: paths[\"/x\"].post.requestBody.content[\"application/json\"].schema: unresolvable $ref \"#/components/schemas/Nope\""
    )
    assert.strictEqual(
      message(doc({ paths: { "/x": { get: op({ parameters: [{ $ref: "other.yaml#/components/parameters/P" }] }) } } })),
      "invalid OpenAPI document: paths[\"/x\"].get.parameters[0]: unsupported $ref \"other.yaml#/components/parameters/P\": only local references (#/…) are supported"
    )
    assert.strictEqual(
      message(doc({ paths: { "/x": { get: op({ parameters: [{ $ref: "#components" }] }) } } })),
      "invalid OpenAPI document: paths[\"/x\"].get.parameters[0]: invalid $ref \"#components\": expected a JSON pointer \"#/…\""
    )
  })

  it("a circular schema is rejected with the cycle", () => {
    const e = message(doc({
      paths: { "/n": { post: op({ requestBody: { content: { "application/json": { schema: { $ref: "#/components/schemas/Node" } } } } }) } },
      components: { schemas: { Node: { type: "object", properties: { next: { $ref: "#/components/schemas/Node" } } } } }
    }))
    assert.strictEqual(
      e,
      "invalid OpenAPI document: paths[\"/n\"].post.requestBody.content[\"application/json\"].schema.properties.next: circular $ref \"#/components/schemas/Node\" (via #/components/schemas/Node)"
    )
  })

  it("circular parameter references and over-long reference chains are rejected", () => {
    assert.include(
      message(doc({ paths: { "/x": { get: op({ parameters: [{ $ref: "#/components/parameters/A" }] }) } }, components: { parameters: { A: { $ref: "#/components/parameters/A" } } } })),
      "circular $ref \"#/components/parameters/A\""
    )
    const schemas: Record<string, unknown> = { S70: { type: "string" } }
    for (let i = 0; i < 70; i++) schemas[`S${i}`] = { type: "object", properties: { p: { $ref: `#/components/schemas/S${i + 1}` } } }
    assert.include(
      message(doc({ paths: { "/x": { post: op({ requestBody: { content: { "application/json": { schema: { $ref: "#/components/schemas/S0" } } } } }) } }, components: { schemas } })),
      "$ref chain deeper than 64"
    )
  })

  it("references that fan out past the expansion budget are rejected", () => {
    const schemas: Record<string, unknown> = { L21: { type: "string" } }
    for (let i = 0; i < 21; i++) {
      const next = { $ref: `#/components/schemas/L${i + 1}` }
      schemas[`L${i}`] = { type: "object", properties: { a: next, b: next } }
    }
    assert.include(
      message(doc({ paths: { "/x": { post: op({ requestBody: { content: { "application/json": { schema: { $ref: "#/components/schemas/L0" } } } } }) } }, components: { schemas } })),
      "inlined schemas expand to more than 1000000 JSON nodes"
    )
  })

  it("not a document, Swagger 2, a bad version, bad parameters, duplicate operationIds", () => {
    assert.strictEqual(message([1, 2]), "invalid OpenAPI document: expected an OpenAPI document (an object)")
    assert.strictEqual(message({ swagger: "2.0", info: {}, paths: {} }), "invalid OpenAPI document: openapi: Swagger 2.0 documents are not supported; convert to OpenAPI 3")
    assert.strictEqual(message({ openapi: "4.0", info: {} }), "invalid OpenAPI document: openapi: expected an OpenAPI 3.x version string")
    assert.strictEqual(message({ openapi: "3.1.0" }), "invalid OpenAPI document: info: expected the info object (an object)")
    assert.strictEqual(
      message(doc({ paths: { "/x": { get: op({ parameters: [{ name: "q", in: "body" }] }) } } })),
      "invalid OpenAPI document: paths[\"/x\"].get.parameters[0].in: expected one of path, query, header, cookie"
    )
    assert.strictEqual(
      message(doc({ paths: { "/a": { get: op({ operationId: "same" }) }, "/b": { get: op({ operationId: "same" }) } } })),
      "invalid OpenAPI document: paths[\"/b\"].get.operationId: duplicate operationId \"same\""
    )
  })
})

describe("OpenApi: load", () => {
  const failure = (effect: Effect.Effect<OpenApi.OpenApiSpec, ConfigError>) =>
    Effect.flip(effect).pipe(Effect.map((e) => e.issues))

  it.effect("inline JSON and YAML strings", () =>
    Effect.gen(function*() {
      const json = yield* OpenApi.load(JSON.stringify(doc({ paths: { "/j": { get: op({ operationId: "j" }) } } })), AT)
      assert.deepStrictEqual(OpenApi.tools(json).map((t) => t.name), ["j"])
      const yaml = yield* OpenApi.load(
        "openapi: 3.0.0\ninfo: {title: t, version: '1'}\nservers:\n- url: https://h.example/base\npaths:\n  /y:\n    get:\n      operationId: y\n      summary: Why\n",
        AT
      )
      assert.strictEqual(yaml.prefix, "/base")
      assert.deepStrictEqual(plain(OpenApi.tools(yaml)), [{ name: "y", title: "Why", description: "Why", inputSchema: { type: "object", properties: {}, required: [] } }])
    }))

  it.effect("bad inline text, a path given as inline text, a missing file", () =>
    Effect.gen(function*() {
      const bad = yield* failure(OpenApi.load("openapi: [unclosed", AT))
      assert.strictEqual(bad[0]!.path, `${AT}.schema`)
      assert.match(bad[0]!.message, /^invalid JSON\/YAML: /)
      assert.deepStrictEqual(yield* failure(OpenApi.load("./openapi.json", AT)), [{
        path: `${AT}.schema`,
        message: "invalid OpenAPI document: expected an OpenAPI document, got a string (an inline schema is the document itself; use {file: …} for a path)"
      }])
      const missing = yield* failure(OpenApi.load({ file: "test/fixtures/mcp/nope.json" }, AT))
      assert.strictEqual(missing[0]!.path, `${AT}.schema.file`)
      assert.match(missing[0]!.message, /^cannot read test\/fixtures\/mcp\/nope\.json: ENOENT/)
      const tooBig = yield* failure(OpenApi.load({ file: PETSTORE }, AT, { maxBytes: 1000 }))
      assert.deepStrictEqual(tooBig, [{ path: `${AT}.schema.file`, message: `cannot read ${PETSTORE}: document is larger than 1000 bytes` }])
    }))

  const serve = (handler: Parameters<typeof createServer>[1]) =>
    Effect.acquireRelease(
      Effect.callback<Server>((resume) => {
        const server = createServer(handler)
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
      }),
      (server) =>
        Effect.callback<void>((resume) => {
          server.closeAllConnections()
          server.close(() => resume(Effect.void))
        })
    ).pipe(Effect.map((server) => {
      const address = server.address()
      return `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`
    }))

  it.live("{url}: fetched with undici; errors for status, size, timeout and scheme", () =>
    Effect.scoped(Effect.gen(function*() {
      const document = readFileSync(PETSTORE, "utf8")
      const base = yield* serve((req, res) => {
        if (req.url === "/openapi.json") res.writeHead(200, { "content-type": "application/json" }).end(document)
        else if (req.url === "/chunked") {
          res.writeHead(200)
          res.write(document.slice(0, 600))
          res.end(document.slice(600))
        } else if (req.url === "/hang") res.writeHead(200).write("{")
        else res.writeHead(404).end("no")
      })
      const fetched = yield* OpenApi.load({ url: `${base}/openapi.json` }, AT)
      assert.strictEqual(fetched.prefix, "/api/v3")
      assert.strictEqual(OpenApi.tools(fetched).length, 19)

      assert.deepStrictEqual(yield* failure(OpenApi.load({ url: `${base}/missing` }, AT)), [{
        path: `${AT}.schema.url`,
        message: `cannot fetch ${base}/missing: status 404`
      }])
      assert.deepStrictEqual(yield* failure(OpenApi.load({ url: `${base}/openapi.json` }, AT, { maxBytes: 1000 })), [{
        path: `${AT}.schema.url`,
        message: `cannot fetch ${base}/openapi.json: document is larger than 1000 bytes`
      }])
      assert.deepStrictEqual(yield* failure(OpenApi.load({ url: `${base}/chunked` }, AT, { maxBytes: 1000 })), [{
        path: `${AT}.schema.url`,
        message: `cannot fetch ${base}/chunked: document is larger than 1000 bytes`
      }])
      assert.deepStrictEqual(yield* failure(OpenApi.load({ url: `${base}/hang` }, AT, { timeout: "200 millis" })), [{
        path: `${AT}.schema.url`,
        message: `cannot fetch ${base}/hang: timed out after 200ms`
      }])
      assert.deepStrictEqual(yield* failure(OpenApi.load({ url: "file:///etc/passwd" }, AT)), [{
        path: `${AT}.schema.url`,
        message: "invalid schema URL \"file:///etc/passwd\" (expected http:// or https://)"
      }])
    })))
})

describe("OpenApi: request", () => {
  const users = spec(doc({
    paths: {
      "/users/{user_id}": {
        get: op({
          operationId: "get_user",
          parameters: [
            { name: "user_id", in: "path", required: true, schema: { type: "string" } },
            { name: "verbose", in: "query", schema: { type: "string" } },
            { name: "X-Request-ID", in: "header", schema: { type: "string" } },
            { name: "Content-Type", in: "header", schema: { type: "string" } },
            { name: "Host", in: "header", schema: { type: "string" } },
            { name: "Accept", in: "header", schema: { type: "string" } },
            { name: "Connection", in: "header", schema: { type: "string" } }
          ]
        })
      },
      "/users": {
        post: op({
          operationId: "create_user",
          parameters: [
            { name: "source", in: "query", required: true, schema: { type: "string" } },
            { name: "X-API-Key", in: "header", required: true, schema: { type: "string" } }
          ],
          requestBody: { required: true, content: { "application/json": { schema: { type: "object" } } } }
        })
      },
      "/upload": {
        post: op({ operationId: "upload", requestBody: { required: true, content: { "application/octet-stream": { schema: { type: "string", format: "binary" } } } } })
      }
    }
  }))

  it("path parameters are percent-encoded and never climb the path", () => {
    const cases: Array<[unknown, string]> = [
      ["123", "/users/123"],
      [456, "/users/456"],
      [true, "/users/true"],
      ["user name", "/users/user%20name"],
      ["user\u00e9", "/users/user%C3%A9"],
      ["../admin", "/users/..%2Fadmin"],
      ["user-1/o/er-1001", "/users/user-1%2Fo%2Fer-1001"],
      ["123?admin=true", "/users/123%3Fadmin%3Dtrue"],
      ["user#section", "/users/user%23section"],
      ["user&admin=true", "/users/user%26admin%3Dtrue"],
      ["..", "/users/%2E%2E"],
      [".", "/users/%2E"]
    ]
    for (const [id, path] of cases) assert.strictEqual(call(users, "get_user", { path: { user_id: id } }).path, path, String(id))
  })

  it("query scalars are k=v percent-encoded, arrays repeat the key, objects and null are skipped", () => {
    const q = (query: unknown) => call(users, "get_user", { path: { user_id: "u" }, query }).path
    assert.strictEqual(q({ verbose: "" }), "/users/u?verbose=")
    assert.strictEqual(q({ verbose: true, n: 3 }), "/users/u?verbose=true&n=3")
    assert.strictEqual(q({ verbose: "hello world" }), "/users/u?verbose=hello%20world")
    assert.strictEqual(q({ verbose: ["a", "b", 1] }), "/users/u?verbose=a&verbose=b&verbose=1")
    assert.strictEqual(q({ verbose: "x&evil=1&admin=true?#" }), "/users/u?verbose=x%26evil%3D1%26admin%3Dtrue%3F%23")
    assert.strictEqual(q({ "k&k": "v" }), "/users/u?k%26k=v")
    assert.strictEqual(q({ obj: { a: 1 }, nil: null, verbose: "1" }), "/users/u?verbose=1")
    assert.strictEqual(q({}), "/users/u")
  })

  it("only declared headers are sent, never framing or host; accept is always application/json", () => {
    const r = call(users, "get_user", {
      path: { user_id: "u" },
      header: {
        "x-request-id": "req-1",
        "X-Malicious-Header": "ignored",
        "Content-Type": "text/plain",
        host: "evil.com",
        "content-length": "999",
        "transfer-encoding": "chunked",
        accept: "text/html",
        connection: "close"
      }
    })
    assert.deepStrictEqual(plain(r.headers), { accept: "application/json", "x-request-id": "req-1" })
    assert.strictEqual(r.body, undefined)
    assert.deepStrictEqual(
      plain(call(users, "get_user", { path: { user_id: "u" }, header: { "X-Request-ID": "a\r\nx-injected: 1" } }).headers),
      { accept: "application/json" }
    )
    assert.deepStrictEqual(plain(call(users, "get_user", { path: { user_id: "u" }, header: { "X-Request-ID": 12345 } }).headers), {
      accept: "application/json",
      "x-request-id": "12345"
    })
  })

  it("a JSON body is serialised with content-type application/json", () => {
    const r = call(users, "create_user", { body: { name: "New", email: "n@example.com" }, query: { source: "t" }, header: { "X-API-Key": "k" } })
    assert.deepStrictEqual([r.method, r.path], ["POST", "/users?source=t"])
    assert.deepStrictEqual(plain(r.headers), { accept: "application/json", "x-api-key": "k", "content-type": "application/json" })
    assert.strictEqual(text(r.body), "{\"name\":\"New\",\"email\":\"n@example.com\"}")
  })

  it("an octet-stream body is the decoded base64 argument", () => {
    const r = call(users, "upload", { body: "AAEC/w==" })
    assert.strictEqual(r.headers["content-type"], "application/octet-stream")
    assert.deepStrictEqual([...r.body!], [0, 1, 2, 255])
    assert.deepStrictEqual([...call(users, "upload", { body: "AAEC_w" }).body!], [0, 1, 2, 255])
    assert.strictEqual(callError(users, "upload", { body: "not base64!" }).message, "'body' must be a base64 string")
    assert.strictEqual(callError(users, "upload", { body: { a: 1 } }).message, "'body' must be a base64 string")
  })

  it("missing required parameters and malformed arguments are tool-argument errors", () => {
    const errors: Array<[string, unknown, string]> = [
      ["get_user", {}, "missing required path parameter 'user_id'"],
      ["get_user", { path: { user_id: null } }, "missing required path parameter 'user_id'"],
      ["get_user", { path: { user_id: { a: 1 } } }, "path parameter 'user_id' must be a string, number or boolean"],
      ["get_user", { path: "x" }, "'path' must be an object"],
      ["get_user", { path: { user_id: "u" }, query: [1] }, "'query' must be an object"],
      ["get_user", [1], "arguments must be an object"],
      ["create_user", { query: { source: "s" }, header: { "x-api-key": "k" } }, "missing required body"],
      ["create_user", { body: {}, header: { "x-api-key": "k" } }, "missing required query parameter 'source'"],
      ["create_user", { body: {}, query: { source: "s" } }, "missing required header 'X-API-Key'"],
      ["upload", undefined, "missing required body"]
    ]
    for (const [name, args, message] of errors) {
      const e = callError(users, name, args)
      assert.deepStrictEqual([e.reason, e.message], ["InvalidArguments", message])
    }
    const unknown = callError(users, "nope", {})
    assert.deepStrictEqual([unknown.reason, unknown.message], ["UnknownTool", "tool nope not found"])
    assert.deepStrictEqual(plain(OpenApi.toolError(unknown)), { content: [{ type: "text", text: "tool nope not found" }], isError: true })
  })
})

describe("OpenApi: result", () => {
  const ok = (status: number, contentType: string | undefined, body: string) => OpenApi.result("get_user", status, contentType, bytes(body))

  it("a JSON answer nested deeper than 64 levels comes back as text, never parsed", () => {
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`
    const answer = ok(200, "application/json", deep)
    assert.deepStrictEqual(answer.structuredContent, { code: 200, message: deep })
  })

  it("a JSON object is returned as is, null as null, other JSON wrapped as {data}", () => {
    const object = { id: "123", name: "Test User" }
    assert.deepStrictEqual(ok(200, "application/json", JSON.stringify(object)), {
      content: [{ type: "text", text: "{\"id\":\"123\",\"name\":\"Test User\"}" }],
      structuredContent: object
    })
    assert.deepStrictEqual(ok(200, "application/json", "null"), { content: [{ type: "text", text: "null" }], structuredContent: null })
    assert.deepStrictEqual(ok(200, "application/json", "[1,2]"), { content: [{ type: "text", text: "{\"data\":[1,2]}" }], structuredContent: { data: [1, 2] } })
    assert.deepStrictEqual(ok(200, "application/problem+json", "42"), { content: [{ type: "text", text: "{\"data\":42}" }], structuredContent: { data: 42 } })
    assert.deepStrictEqual(ok(200, undefined, "\"plain\""), { content: [{ type: "text", text: "{\"data\":\"plain\"}" }], structuredContent: { data: "plain" } })
    assert.deepStrictEqual(ok(201, "application/json; charset=utf-8", "true").structuredContent, { data: true })
  })

  it("non-JSON bodies become {code, message}; 4xx is not a tool error", () => {
    assert.deepStrictEqual(ok(200, "text/plain", "hello"), {
      content: [{ type: "text", text: "{\"code\":200,\"message\":\"hello\"}" }],
      structuredContent: { code: 200, message: "hello" }
    })
    assert.deepStrictEqual(ok(200, "text/plain", "42").structuredContent, { code: 200, message: "42" })
    assert.deepStrictEqual(ok(200, "application/json", "{broken").structuredContent, { code: 200, message: "{broken" })
    assert.deepStrictEqual(ok(204, undefined, "").structuredContent, { code: 204, message: "" })
    const notFound = ok(404, "application/json", "{\"error\":\"User not found\"}")
    assert.deepStrictEqual(notFound, { content: [{ type: "text", text: "{\"error\":\"User not found\"}" }], structuredContent: { error: "User not found" } })
  })

  it("5xx is a tool error quoting a bounded body", () => {
    assert.deepStrictEqual(ok(500, "text/plain", "boom"), {
      content: [{ type: "text", text: "Upstream API call for tool 'get_user' failed with status 500 Internal Server Error: boom" }],
      isError: true
    })
    assert.strictEqual(ok(599, undefined, "x").content[0]!.text, "Upstream API call for tool 'get_user' failed with status 599: x")
    const long = ok(503, "text/plain", "y".repeat(OpenApi.maxErrorBodyChars + 10)).content[0]!.text
    assert.strictEqual(long, `Upstream API call for tool 'get_user' failed with status 503 Service Unavailable: ${"y".repeat(OpenApi.maxErrorBodyChars)}… (truncated)`)
  })
})
