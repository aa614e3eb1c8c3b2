import pino from "pino";
import { once } from "node:events";
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerIdentityRoutes } from "../../controlplane/identity/http-routes.ts";
import { X509Certificate } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { WorkloadRegistry } from "../../controlplane/identity/registry.ts";
import { parseBundle } from "../../core/svid/bundle.ts";
import { canonicalSerial } from "../../core/svid/revocation.ts";
import type { RevocationList } from "../../core/svid/revocation.ts";
import { RotationManager } from "../../sidecar/identity/rotation.ts";
import type { WorkloadCredentials } from "../../sidecar/identity/rotation.ts";
import { createCsr, generateWorkloadKey } from "../../sidecar/identity/workload-key.ts";
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
  registerIdentityRoutes(router, { plane: h.plane, log: pino({ level: "silent" }) });
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

/** Credentials for a workload attested with `joinToken`, as its sidecar would obtain them. */
async function attestOnce(joinToken: string): Promise<WorkloadCredentials> {
  const identity = new RotationManager({
    client: h.newClient(),
    trustDomain: "sigil.local",
    bootstrapProof: async () => ({ joinToken }),
  });
  try {
    return await identity.start();
  } finally {
    identity.stop();
  }
}

describe("revoking one certificate by serial", () => {
  it("refuses its renewal, lets the workload attest again, keeps the entry across a restart and drops it at the certificate's expiry", async () => {
    const tokens = [0, 1].map(() =>
      h.plane.tokens.create({ name: "billing", labels: { app: "billing" }, ttlSeconds: 600 }),
    );
    const [first, second] = await Promise.all(tokens);
    const leaked = await attestOnce(first?.token as string);
    const leaf = new X509Certificate(leaked.certChain[0] as Buffer);
    // As an operator copies it from `openssl x509 -serial` or a browser: upper case, with colons.
    const pasted = (leaf.serialNumber.match(/../g) ?? []).join(":");

    const revoked = await call("POST", "/api/identity/certificates/revoke", {
      serial: pasted,
      reason: "key leaked",
    });
    expect(revoked.status).toBe(200);
    const serial = canonicalSerial(leaf.serialNumber);
    expect(revoked.json).toMatchObject({
      serial,
      spiffeId: "spiffe://sigil.local/workload/billing",
      reason: "key leaked",
      expiresAt: leaked.notAfter.toISOString(),
    });
    expect(await call("GET", "/api/identity/certificates/revoked")).toMatchObject({
      status: 200,
      json: { certificates: [{ serial, reason: "key leaked" }] },
    });
    expect(await call("POST", "/api/identity/certificates/revoke", { serial })).toMatchObject({
      status: 409,
      json: { error: expect.stringMatching(new RegExp(`certificate ${serial} was already revoked at`)) },
    });
    expect(await call("POST", "/api/identity/certificates/revoke", { serial: "not-a-serial" })).toMatchObject(
      {
        status: 400,
        json: { error: 'serial "not-a-serial" is not hexadecimal' },
      },
    );

    // Renewal with the revoked certificate is refused as unauthenticated, so the sidecar attests again.
    const renewal = h.newClient().signSvid({
      csr: await createCsr(await generateWorkloadKey()),
      attestation: {
        proof: "renewal",
        renewal: { certChain: [...leaked.certChain], csrSignature: Buffer.alloc(64) },
        process: null,
        metadata: null,
      },
      jwtAudiences: [],
      ttlSeconds: 0,
    });
    await expect(renewal).rejects.toMatchObject({
      code: grpc.status.UNAUTHENTICATED,
      message: expect.stringMatching(
        new RegExp(`certificate ${serial} of \\S+billing was revoked at .*key leaked`),
      ),
    });
    const fresh = await attestOnce(second?.token as string);
    expect(fresh.spiffeId).toBe(leaked.spiffeId);
    expect(canonicalSerial(new X509Certificate(fresh.certChain[0] as Buffer).serialNumber)).not.toBe(serial);
    expect(h.plane.registry.get(leaked.spiffeId)?.revoked).toBeNull();

    // Kept on disk: a control plane opened on the same data directory still refuses it.
    const reopened = await WorkloadRegistry.open(h.dataDir, "sigil.local");
    expect(reopened.revocationIndex().revoking({ spiffeId: leaked.spiffeId, serial })?.reason).toBe(
      "key leaked",
    );

    // Once the certificate has expired the entry protects nothing and is dropped, and the shorter
    // list is pushed.
    const pushed = new Promise<RevocationList>((resolve) => h.plane.registry.once("revocations", resolve));
    expect(await h.plane.registry.pruneRevocations(new Date(leaked.notAfter.getTime() - 1000))).toBe(false);
    expect(await h.plane.registry.pruneRevocations(new Date(leaked.notAfter.getTime() + 1000))).toBe(true);
    expect((await pushed).certificates).toEqual([]);
    const afterPrune = await WorkloadRegistry.open(h.dataDir, "sigil.local");
    expect(afterPrune.revocationList().certificates).toEqual([]);
  });
});
