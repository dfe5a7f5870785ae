import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type Running, startGateway } from "../support/Harness.ts"

describe("smoke", () => {
  let gw: Running
  let port: number
  beforeAll(async () => {
    port = await freePort()
    gw = await startGateway(
      `
binds:
- port: $PORT
  listeners:
  - routes:
    - policies:
        directResponse: {status: 200, body: "hi"}
`,
      { vars: { PORT: port } }
    )
  })
  afterAll(() => gw.stop())

  it("serves a direct response", async () => {
    const res = await fetch(gw.url(port, "/x"))
    expect(res.status).toBe(200)
    expect(await res.text()).toBe("hi")
  })
})
