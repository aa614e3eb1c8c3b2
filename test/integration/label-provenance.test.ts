import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { controlPlaneSpiffeId } from "../../controlplane/ca/authority.ts";
import { selectorMatches } from "../../core/policy/index.ts";
import { verifySvid } from "../../core/svid/verify.ts";
import { IdentityClient } from "../../sidecar/identity/identity-client.ts";
import { RotationManager } from "../../sidecar/identity/rotation.ts";
import { startTestControlPlane, type Closer, type TestControlPlane } from "../support/control-plane.ts";
import { x509 } from "../../core/svid/x509.ts";

/**
 * A join-token holder's sidecar reports what it likes about its node (`image`, `vuln.*`, `proc.*`,
 * `cloud.*`). Those facts must not outrank the operator, and a policy must be able to ask who vouched
 * for a label: every label carries its provenance class (operator, orchestrator, node, scanner) in
 * the certificate, and a peer's labels include `provenance.sigil.dev/<key>` so selectors can require
 * it. Real control plane, real issuance over gRPC/TLS, the certificate read as a peer reads it.
 */

let plane: TestControlPlane;
const closers: Closer[] = [];

async function api<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const { cp } = plane;
  const res = await fetch(`http://127.0.0.1:${cp.httpPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${cp.httpAuth.token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as T };
}

/** A sidecar that reports a clean vulnerability scan and an image of its choosing. */
async function lyingSidecar(name: string): Promise<RotationManager> {
  const { body } = await api<{ token: string }>("POST", "/api/tokens", {
    name,
    labels: { app: name },
    ttlSeconds: 600,
  });
  const client = new IdentityClient({
    address: plane.grpcTarget,
    caPem: plane.caPem,
    serverSpiffeId: controlPlaneSpiffeId(plane.cp.trustDomain),
  });
  closers.push(() => client.close());
  const rotation = new RotationManager({
    client,
    trustDomain: plane.cp.trustDomain,
    bootstrapProof: () => Promise.resolve({ joinToken: body.token }),
    facts: () =>
      Promise.resolve({
        metadata: {
          cloudRegion: "eu-west-1",
          cloudZone: "eu-west-1a",
          image: "registry.test/trusted@sha256:00",
          vulnerabilities: { critical: 0, high: 0, medium: 0, low: 0 },
        },
      }),
  });
  closers.push(() => rotation.stop());
  await rotation.start();
  return rotation;
}

/** The peer's view of a sidecar's current certificate, as an enforcing sidecar verifies it. */
function peerView(rotation: RotationManager) {
  const creds = rotation.current();
  const chain = creds.certChainPem
    .match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!
    .map((pem) => Buffer.from(x509.PemConverter.decode(pem)[0] as ArrayBuffer));
  return verifySvid(chain, { bundle: creds.bundle, purpose: "client" });
}

beforeAll(async () => {
  plane = await startTestControlPlane("sg-prov-", {});
}, 30_000);

afterAll(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await plane?.close();
});

describe("label provenance", () => {
  it("a node-reported label carries the node class, visible to selectors", async () => {
    const rotation = await lyingSidecar("reporter");
    const view = peerView(rotation);
    expect(view.identity.labels["vuln.critical"]).toBe("0");
    expect(view.identity.labels["provenance.sigil.dev/vuln.critical"]).toBe("node");
    expect(view.identity.labels["provenance.sigil.dev/app"]).toBe("operator");
    expect(view.attestedLabels.find((l) => l.key === "vuln.critical")?.provenance).toBe("metadata-file");

    // "vuln.critical=0 from the scanner" is not met by a sidecar's own report.
    const fromScanner = {
      matchLabels: { "vuln.critical": "0", "provenance.sigil.dev/vuln.critical": "scanner" },
    };
    expect(selectorMatches(fromScanner, view.identity.labels)).toBe(false);
    expect(selectorMatches({ matchLabels: { "vuln.critical": "0" } }, view.identity.labels)).toBe(true);
  });

  it("an operator label overrides what the sidecar reports for the same key, in the next certificate", async () => {
    const rotation = await lyingSidecar("overridden");
    const spiffeId = rotation.current().spiffeId;
    const set = await api<{ staticLabels: unknown }>("POST", "/api/identity/workloads/labels", {
      spiffeId,
      labels: { "vuln.critical": "7", image: "registry.test/real@sha256:ff" },
    });
    expect(set.status).toBe(200);
    await rotation.renewNow();
    const view = peerView(rotation);
    expect(view.identity.labels["vuln.critical"]).toBe("7");
    expect(view.identity.labels.image).toBe("registry.test/real@sha256:ff");
    expect(view.identity.labels["provenance.sigil.dev/vuln.critical"]).toBe("operator");
  });

  it("a scanner's findings are recorded with the scanner class and outrank the node's report", async () => {
    const rotation = await lyingSidecar("scanned");
    const spiffeId = rotation.current().spiffeId;
    const scan = await api<unknown>("POST", "/api/identity/workloads/scan", {
      spiffeId,
      labels: { "vuln.critical": "2", "vuln.high": "4" },
    });
    expect(scan.status).toBe(200);
    await rotation.renewNow();
    const labels = peerView(rotation).identity.labels;
    expect(labels["vuln.critical"]).toBe("2");
    expect(labels["provenance.sigil.dev/vuln.critical"]).toBe("scanner");
    expect(
      selectorMatches({ matchLabels: { "provenance.sigil.dev/vuln.critical": "scanner" } }, labels),
    ).toBe(true);
  });

  it("a scanner may only report vuln.* and image, and no one may set a provenance key", async () => {
    const rotation = await lyingSidecar("bounded");
    const spiffeId = rotation.current().spiffeId;
    const scan = await api<{ error: string }>("POST", "/api/identity/workloads/scan", {
      spiffeId,
      labels: { app: "admin" },
    });
    expect(scan.status).toBe(400);
    expect(scan.body.error).toMatch(/app/);
    const forged = await api<{ error: string }>("POST", "/api/identity/workloads/labels", {
      spiffeId,
      labels: { "provenance.sigil.dev/vuln.critical": "scanner" },
    });
    expect(forged.status).toBe(400);
    expect(forged.body.error).toMatch(/reserved/);
  });
});
