import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Pod } from "kubernetes-types/core/v1.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readKubernetesAttestorConfig } from "../../controlplane/attestation/kubernetes.ts";
import type { PodFacts } from "../../controlplane/attestation/pod-labels.ts";
import {
  PodShapeError,
  podFacts,
  podMismatch,
  sharedPodLabels,
} from "../../controlplane/attestation/pod-labels.ts";
import { backoffDelay } from "../../controlplane/attestation/pod-watch.ts";
import { effectiveLabels } from "../../controlplane/identity/registry.ts";

const pod = (labels: Record<string, string>, extra: Partial<PodFacts> = {}): PodFacts => ({
  namespace: "shop",
  name: "web-1",
  uid: "u1",
  serviceAccount: "web",
  labels,
  live: true,
  ...extra,
});

describe("pod facts", () => {
  it("reads namespace, name, uid, service account (default when unset), labels and liveness", () => {
    const facts = podFacts({
      metadata: { namespace: "shop", name: "web-1", uid: "u1", labels: { app: "web" } },
      spec: { containers: [] },
      status: { phase: "Succeeded" },
    });
    expect(facts).toEqual({ ...pod({ app: "web" }), serviceAccount: "default", live: false });
  });

  it("refuses a pod object without a uid, naming the field", () => {
    expect(() => podFacts({ metadata: { namespace: "shop", name: "x" } } as Pod)).toThrow(
      new PodShapeError("pod has no metadata.uid"),
    );
  });
});

describe("pod against token", () => {
  const claims = { namespace: "shop", serviceAccount: "web", pod: "web-1", podUid: "u1" };
  it("accepts the pod the token was issued to", () => {
    expect(podMismatch(claims, pod({}))).toBeNull();
  });
  it("refuses another pod of the same name, another service account, a finished pod", () => {
    expect(podMismatch(claims, pod({}, { uid: "u2" }))).toMatch(/has uid u2, the token was issued to uid u1/);
    expect(podMismatch(claims, pod({}, { serviceAccount: "admin" }))).toMatch(
      /runs as service account admin, the token names web/,
    );
    expect(podMismatch(claims, pod({}, { live: false }))).toMatch(/has finished/);
  });
});

describe("labels the pods of one service account share", () => {
  it("keeps each key every pod carries with the same value, as orchestrator (k8s-api) labels", () => {
    const { labels } = sharedPodLabels([
      pod({ app: "web", "pod-template-hash": "a1", tier: "front" }),
      pod({ app: "web", "pod-template-hash": "b2", tier: "front" }, { name: "web-2", uid: "u2" }),
    ]);
    expect(labels).toEqual([
      { key: "app", value: "web", provenance: "k8s-api" },
      { key: "tier", value: "front", provenance: "k8s-api" },
    ]);
  });

  it("skips keys that would forge the token's claims or a provenance statement, or that Sigil cannot carry", () => {
    const { labels, skipped } = sharedPodLabels([
      pod({
        "k8s.ns": "kube-system",
        "provenance.sigil.dev/app": "operator",
        ["x".repeat(129)]: "long",
        "app.kubernetes.io/name": "web",
      }),
    ]);
    expect(labels.map((l) => l.key)).toEqual(["app.kubernetes.io/name"]);
    expect(skipped).toHaveLength(3);
    expect(skipped.join("\n")).toMatch(/reserved for the service-account token's claims/);
  });

  it("gives nothing when no pod runs", () => {
    expect(sharedPodLabels([])).toEqual({ labels: [], skipped: [] });
  });

  it("never outranks the operator, and outranks the scanner and the node", () => {
    const merged = effectiveLabels({
      staticLabels: [{ key: "app", value: "ops", provenance: "static" }],
      attestedLabels: [
        { key: "app", value: "web", provenance: "k8s-api" },
        { key: "image", value: "web:1", provenance: "k8s-api" },
      ],
      scannerLabels: [{ key: "image", value: "scanned", provenance: "scanner" }],
      reportedLabels: [{ key: "image", value: "node", provenance: "metadata-file" }],
    });
    expect(merged).toEqual([
      { key: "app", value: "ops", provenance: "static" },
      { key: "image", value: "web:1", provenance: "k8s-api" },
    ]);
  });
});

describe("watch retry delays", () => {
  it("double from the initial delay and stop at the bound", () => {
    const b = { initialMs: 100, maxMs: 1_000 };
    expect([0, 1, 2, 3, 4, 50].map((n) => backoffDelay(b, n))).toEqual([100, 200, 400, 800, 1_000, 1_000]);
  });
});

describe("API server settings in the attestation file", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sigil-k8s-conf-"));
    await writeFile(join(dir, "jwks.json"), JSON.stringify({ keys: [{ kty: "EC", kid: "k" }] }));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));
  const conf = async (apiServer: string) => {
    const file = join(dir, "k8s.yaml");
    await writeFile(file, `issuer: https://k\naudiences: [sigil]\njwksFile: jwks.json\n${apiServer}`);
    return file;
  };

  it("takes in-cluster defaults from the pod's environment and mounted account", async () => {
    const config = await readKubernetesAttestorConfig(await conf("apiServer: in-cluster\n"), {
      KUBERNETES_SERVICE_HOST: "10.96.0.1",
      KUBERNETES_SERVICE_PORT: "443",
    });
    expect(config.apiServer).toEqual({
      url: "https://10.96.0.1:443",
      caFile: "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
      tokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token",
      whenUnavailable: "refuse",
    });
  });

  it("resolves given files beside the config, and keeps the explicit opt-out", async () => {
    const config = await readKubernetesAttestorConfig(
      await conf(
        "apiServer: { url: 'https://api.example:6443', caFile: ca.crt, tokenFile: t, whenUnavailable: token-claims-only }\n",
      ),
      {},
    );
    expect(config.apiServer).toEqual({
      url: "https://api.example:6443",
      caFile: join(dir, "ca.crt"),
      tokenFile: join(dir, "t"),
      whenUnavailable: "token-claims-only",
    });
  });

  it("names the field and reason of a bad setting", async () => {
    await expect(readKubernetesAttestorConfig(await conf("apiServer: in-cluster\n"), {})).rejects.toThrow(
      /k8s.yaml: apiServer.url: not given and KUBERNETES_SERVICE_HOST is unset/,
    );
    await expect(
      readKubernetesAttestorConfig(await conf("apiServer: { url: 'http://api:80' }\n"), {}),
    ).rejects.toThrow(/k8s.yaml: apiServer/);
    await expect(
      readKubernetesAttestorConfig(await conf("apiServer: { whenUnavailable: allow }\n"), {}),
    ).rejects.toThrow(/k8s.yaml: apiServer/);
  });
});
