/**
 * Pod labels as identity labels, from the attested source only: a real control plane whose
 * Kubernetes attestor reads pods from a stand-in API server (HTTPS with its own CA, bearer token,
 * GET/list/watch with resourceVersion and 410 Gone), and a `sigil sidecar` agent that attests with
 * a service-account token signed by the test's cluster key. The pod's labels reach the certificate
 * with orchestrator provenance, a token of a deleted pod whose name was reused is refused, a label
 * change seen by the watch (also across a 410 relist) is renewed into the workload's certificate,
 * the last pod's deletion revokes it, and an unreachable API server is a named refusal.
 */
import type { webcrypto } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { SignJWT, exportJWK, generateKeyPair } from "jose";
import type { JWK } from "jose";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { controlPlaneSpiffeId } from "../../controlplane/ca/authority.ts";
import { PROVENANCE_CLASS } from "../../core/label-provenance.ts";
import { canonicalSerial } from "../../core/svid/revocation.ts";
import type { AttestedLabel } from "../../core/labels.ts";
import { startAgent } from "../../sidecar/agent/agent.ts";
import type { Agent } from "../../sidecar/agent/agent.ts";
import { parseAgentOptions } from "../../sidecar/agent/options.ts";
import { IdentityClient } from "../../sidecar/identity/identity-client.ts";
import { createCsr, generateWorkloadKey } from "../../sidecar/identity/workload-key.ts";
import { loopbackAgentInput, startTestControlPlane } from "../support/control-plane.ts";
import type { TestControlPlane } from "../support/control-plane.ts";
import { refusal } from "../support/identity-harness.ts";
import { startStandInApiServer } from "../support/kube-apiserver.ts";
import type { StandInApiServer } from "../support/kube-apiserver.ts";

const ISSUER = "https://kubernetes.default.svc.cluster.local";
const WEB_ID = "spiffe://sigil.local/ns/shop/sa/web";
/** A pushed change to a renewed certificate, on a loaded machine: takes well under this. */
const BOUND_MS = 10_000;

let kube: StandInApiServer;
let controlPlane: TestControlPlane;
let clusterKey: webcrypto.CryptoKey;
let dir: string;
let client: IdentityClient;
let agent: Agent | undefined;

beforeAll(async () => {
  kube = await startStandInApiServer();
  dir = await mkdtemp(join(tmpdir(), "sigil-psat-"));
  const pair = await generateKeyPair("ES256");
  clusterKey = pair.privateKey as webcrypto.CryptoKey;
  const jwk: JWK = { ...(await exportJWK(pair.publicKey)), kid: "cluster", alg: "ES256", use: "sig" };
  controlPlane = await startTestControlPlane("sigil-psat-cp-", {}, pino({ level: "silent" }), {
    kubernetes: {
      issuer: ISSUER,
      audiences: ["sigil"],
      jwks: { keys: [jwk] },
      apiServer: {
        url: kube.url,
        caFile: kube.caFile,
        tokenFile: kube.tokenFile,
        syncTimeoutMs: 3_000,
        backoff: { initialMs: 50, maxMs: 500 },
      },
    },
  });
  client = new IdentityClient({
    address: controlPlane.grpcTarget,
    caPem: controlPlane.caPem,
    serverSpiffeId: controlPlaneSpiffeId(controlPlane.cp.trustDomain),
  });
}, 30_000);

afterAll(async () => {
  client?.close();
  await agent?.close();
  await controlPlane?.close();
  await kube?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function serviceAccountToken(ns: string, sa: string, pod: string, podUid: string): Promise<string> {
  return new SignJWT({
    "kubernetes.io": {
      namespace: ns,
      serviceaccount: { name: sa, uid: "sa-uid" },
      pod: { name: pod, uid: podUid },
    },
  })
    .setProtectedHeader({ alg: "ES256", kid: "cluster" })
    .setIssuer(ISSUER)
    .setAudience("sigil")
    .setSubject(`system:serviceaccount:${ns}:${sa}`)
    .setIssuedAt()
    .setExpirationTime("10m")
    .sign(clusterKey);
}

async function attest(token: string) {
  return client.signSvid({
    csr: await createCsr(await generateWorkloadKey()),
    attestation: {
      proof: "kubernetes",
      kubernetes: { serviceAccountToken: token },
      process: null,
      metadata: null,
    },
    jwtAudiences: [],
    ttlSeconds: 0,
  });
}

function byKey(labels: readonly AttestedLabel[]): Record<string, AttestedLabel> {
  return Object.fromEntries(labels.map((l) => [l.key, l]));
}

/** Polls (bounded) until the agent's certificate carries `key=value`. */
async function certificateHas(key: string, value: string): Promise<AttestedLabel[]> {
  const deadline = Date.now() + BOUND_MS;
  for (;;) {
    const labels = [...(agent?.rotation.current().labels ?? [])];
    if (byKey(labels)[key]?.value === value) return labels;
    if (Date.now() > deadline)
      throw new Error(`certificate labels still ${JSON.stringify(labels)} after ${BOUND_MS} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("Kubernetes attestation with pod labels from the API server", () => {
  it("puts the pod's labels into the certificate with orchestrator provenance, never reserved keys", async () => {
    const pod = kube.createPod("shop", "web-1", "web", {
      app: "web",
      tier: "front",
      "k8s.sa": "admin",
      "provenance.sigil.dev/app": "operator",
    });
    const tokenFile = join(dir, "web-1.token");
    await writeFile(tokenFile, await serviceAccountToken("shop", "web", "web-1", pod.metadata?.uid ?? ""));
    agent = await startAgent(
      parseAgentOptions({
        ...loopbackAgentInput(controlPlane, "unused", "web"),
        joinToken: undefined,
        serviceAccountTokenFile: tokenFile,
      }),
      { logger: pino({ level: "silent" }), startTimeoutMs: 20_000 },
    );
    expect(agent.spiffeId).toBe(WEB_ID);
    const labels = byKey(agent.rotation.current().labels);
    expect(labels.app).toEqual({ key: "app", value: "web", provenance: "k8s-api" });
    expect(PROVENANCE_CLASS[labels.tier?.provenance ?? "proc"]).toBe("orchestrator");
    // The token's claims stay the token's; a pod label cannot forge them or a provenance statement.
    expect(labels["k8s.sa"]).toEqual({ key: "k8s.sa", value: "web", provenance: "k8s-sat" });
    expect(labels["provenance.sigil.dev/app"]).toBeUndefined();
  });

  it("renews the workload when the watch sees its pod's labels change; the operator's label wins", async () => {
    kube.setLabels("shop", "web-1", { app: "web", tier: "back" });
    await certificateHas("tier", "back");
    await controlPlane.cp.identity.registry.setStaticLabels(WEB_ID, { app: "storefront" });
    kube.setLabels("shop", "web-1", { app: "web", tier: "edge" });
    const labels = byKey(await certificateHas("tier", "edge"));
    expect(labels.app).toEqual({ key: "app", value: "storefront", provenance: "static" });
  });

  it("lists again after 410 Gone and still delivers the change made meanwhile", async () => {
    const listsBefore = kube.lists.get("shop") ?? 0;
    kube.compact();
    kube.setLabels("shop", "web-1", { app: "web", tier: "after-compaction" });
    await certificateHas("tier", "after-compaction");
    expect(kube.lists.get("shop")).toBeGreaterThan(listsBefore);
  });

  it("refuses the token of a deleted pod whose name was reused, and a pod that does not exist", async () => {
    const old = kube.createPod("shop", "api-1", "api", { app: "api" });
    const token = await serviceAccountToken("shop", "api", "api-1", old.metadata?.uid ?? "");
    kube.deletePod("shop", "api-1");
    const missing = await refusal(attest(token));
    expect(missing.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(missing.message).toMatch(/pod shop\/api-1 does not exist/);
    const reused = kube.createPod("shop", "api-1", "api", { app: "api" });
    const refused = await refusal(attest(token));
    expect(refused.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(refused.message).toContain(
      `has uid ${reused.metadata?.uid}, the token was issued to uid ${old.metadata?.uid}`,
    );
    const otherAccount = await refusal(
      attest(await serviceAccountToken("shop", "web", "api-1", reused.metadata?.uid ?? "")),
    );
    expect(otherAccount.message).toMatch(/runs as service account api, the token names web/);
  });

  it("revokes the certificate once no pod runs as the service account any more", async () => {
    const serial = controlPlane.cp.identity.registry.get(WEB_ID)?.serial;
    kube.deletePod("shop", "web-1");
    const deadline = Date.now() + BOUND_MS;
    const revoked = () =>
      (controlPlane.cp.identity.registry.revocationList().certificates ?? []).some(
        (c) => c.serial === canonicalSerial(serial ?? ""),
      );
    while (!revoked()) {
      if (Date.now() > deadline) throw new Error(`certificate ${serial} not revoked within ${BOUND_MS} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  it("refuses attestation, naming the API server and why, while it cannot be reached", async () => {
    const pod = kube.createPod("shop", "db-1", "db", { app: "db" });
    const token = await serviceAccountToken("shop", "db", "db-1", pod.metadata?.uid ?? "");
    await kube.suspend();
    try {
      const refused = await refusal(attest(token));
      expect(refused.code).toBe(grpc.status.UNAVAILABLE);
      expect(refused.message).toContain(`Kubernetes API server ${kube.url}`);
      expect(refused.message).toMatch(/ECONNREFUSED/);
    } finally {
      await kube.resume();
    }
    const issued = await attest(token);
    expect(issued.labels.find((l) => l.key === "app")?.provenance).toBe("k8s-api");
  });
});
