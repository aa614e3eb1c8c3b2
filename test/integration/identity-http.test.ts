import { once } from "node:events";
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerIdentityRoutes } from "../../controlplane/identity/http-routes.ts";
import { parseBundle } from "../../core/svid/bundle.ts";
import type { IdentityHarness } from "../support/identity-harness.ts";
import { startIdentityHarness } from "../support/identity-harness.ts";
import { guardedRouter } from "../support/api-auth.ts";

let h: IdentityHarness;
let http: Server;
let base: string;
let admin: Record<string, string>;
let closeAuth: (() => void) | undefined;

beforeAll(async () => {
  h = await startIdentityHarness();
  const api = await guardedRouter(h.dataDir);
  const router = api.router;
  admin = api.headers;
  closeAuth = () => api.auth.close();
  registerIdentityRoutes(router, { plane: h.plane });
  http = createServer((req, res) => void router.handle(req, res));
  http.listen(0, "127.0.0.1");
  await once(http, "listening");
  base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
});
afterAll(async () => {
  closeAuth?.();
  http?.close();
  await h?.close();
});

async function call(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { ...admin, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe("identity HTTP API", () => {
  it("creates join tokens and names what is wrong with a bad request", async () => {
    const ok = await call("POST", "/api/identity/tokens", {
      name: "vm-1",
      labels: { app: "batch" },
      ttlSeconds: 60,
    });
    expect(ok.status).toBe(201);
    expect(ok.json).toMatchObject({
      name: "vm-1",
      spiffeId: "spiffe://sigil.local/workload/vm-1",
      labels: { app: "batch" },
    });
    expect(ok.json.token).toMatch(/^sgjt_[A-Za-z0-9_-]{43}$/);
    expect(await call("POST", "/api/identity/tokens", { name: "Bad Name" })).toMatchObject({
      status: 400,
      json: { error: expect.stringMatching(/workload name "Bad Name"/) },
    });
    expect(await call("POST", "/api/identity/tokens", { name: "x", ttlSeconds: -5 })).toMatchObject({
      status: 400,
      json: { error: expect.stringMatching(/^ttlSeconds:/) },
    });
    expect(await call("POST", "/api/identity/tokens", { name: "x", labels: { "-k": "v" } })).toMatchObject({
      status: 400,
      json: { error: expect.stringMatching(/label key "-k"/) },
    });
    expect((await call("POST", "/api/identity/tokens", "{not json")).status).toBe(400);
  });

  it("refuses to revoke what is not a workload of the trust domain", async () => {
    expect(
      await call("POST", "/api/identity/workloads/revoke", { spiffeId: "spiffe://other.test/workload/x" }),
    ).toMatchObject({
      status: 400,
      json: { error: expect.stringMatching(/not a SPIFFE ID in trust domain sigil.local/) },
    });
    expect(
      await call("POST", "/api/identity/workloads/revoke", {
        spiffeId: "spiffe://sigil.local/workload/ghost",
      }),
    ).toMatchObject({
      status: 404,
      json: { error: "no workload spiffe://sigil.local/workload/ghost" },
    });
  });

  it("serves the SPIFFE bundle, CA state and revocation list", async () => {
    const bundle = await call("GET", "/api/identity/bundle");
    expect(parseBundle("sigil.local", bundle.json).x509Authorities).toHaveLength(1);
    const ca = await call("GET", "/api/identity/ca");
    expect(ca.json).toMatchObject({ trustDomain: "sigil.local", sequence: 1 });
    expect(await call("GET", "/api/identity/revocations")).toMatchObject({
      status: 200,
      json: { sequence: 0, entries: [] },
    });
  });
});
