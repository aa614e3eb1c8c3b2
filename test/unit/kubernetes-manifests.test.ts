import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { MutatingWebhookConfiguration } from "kubernetes-types/admissionregistration/v1.js";
import type { Deployment } from "kubernetes-types/apps/v1.js";
import type { ConfigMap, Service } from "kubernetes-types/core/v1.js";
import type { ClusterRole, ClusterRoleBinding } from "kubernetes-types/rbac/v1.js";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { describe, expect, it } from "vitest";
import { injectYaml } from "../../inject/documents.ts";
import { parseWebhookConfig } from "../../inject/webhook/config.ts";
import { WEBHOOK_PATH } from "../../inject/webhook/server.ts";

/** Every manifest under examples/kubernetes/ must parse and agree with what the code expects. */

const DIR = new URL("../../examples/kubernetes/", import.meta.url).pathname;
const files = readdirSync(DIR).filter((f) => f.endsWith(".yaml"));
const objects = files.flatMap((file) =>
  parseAllDocuments(readFileSync(join(DIR, file), "utf8")).map((doc, i) => {
    expect(doc.errors, `${file} document ${i + 1}`).toEqual([]);
    return {
      where: `${file} document ${i + 1}`,
      object: doc.toJS() as {
        apiVersion: string;
        kind: string;
        metadata: { name: string; namespace?: string };
      },
    };
  }),
);
const find = <T>(kind: string, name: string): T => {
  const found = objects.find((o) => o.object.kind === kind && o.object.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${name} under examples/kubernetes/`);
  return found.object as T;
};

describe("examples/kubernetes manifests", () => {
  it("every document is a named Kubernetes object", () => {
    expect(files.length).toBeGreaterThanOrEqual(4);
    for (const { where, object } of objects) {
      expect(object.apiVersion, where).toMatch(/^([a-z0-9.]+\/)?v1$/);
      expect(object.kind, where).toMatch(/^[A-Z][A-Za-z]+$/);
      expect(object.metadata.name, where).toMatch(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
    }
  });

  const config = find<ConfigMap>("ConfigMap", "sigil-controlplane-config").data ?? {};
  const webhookConfig = parseWebhookConfig(
    parseYaml(config["webhook.yaml"] ?? ""),
    "sigil.local",
    "webhook.yaml",
  );
  const hook = find<MutatingWebhookConfiguration>("MutatingWebhookConfiguration", "sigil-injector");

  it("the webhook configuration calls the path, service and port the control plane serves", () => {
    const service = find<Service>("Service", "sigil-webhook");
    const deployment = find<Deployment>("Deployment", "sigil-controlplane");
    const container = deployment.spec?.template.spec?.containers[0];
    const webhookPort = container?.ports?.find((p) => p.name === service.spec?.ports?.[0]?.targetPort);
    expect(webhookPort?.containerPort).toBe(webhookConfig.port);
    expect(container?.args).toContain("--webhook=/etc/sigil/config/webhook.yaml");
    expect(container?.args).toContain(
      "--kubernetes-attestation=/etc/sigil/config/kubernetes-attestation.yaml",
    );
    expect(hook.webhooks?.length).toBe(2);
    for (const w of hook.webhooks ?? []) {
      const svc = w.clientConfig.service;
      expect(svc).toEqual({
        name: "sigil-webhook",
        namespace: "sigil-system",
        path: WEBHOOK_PATH,
        port: service.spec?.ports?.[0]?.port,
      });
      expect(webhookConfig.dnsNames).toContain(`${svc?.name}.${svc?.namespace}.svc`);
      expect(w).toMatchObject({
        failurePolicy: "Fail",
        sideEffects: "None",
        reinvocationPolicy: "IfNeeded",
        admissionReviewVersions: ["v1"],
      });
      // The server's own deadline is 10 s; the API server must not give up sooner than it answers.
      expect(w.timeoutSeconds).toBe(10);
      expect(w.rules).toEqual([
        {
          operations: ["CREATE"],
          apiGroups: [""],
          apiVersions: ["v1"],
          resources: ["pods"],
          scope: "Namespaced",
        },
      ]);
    }
  });

  it("opt-in is by namespace label, or by pod label elsewhere; the control plane's own namespace opts out", () => {
    const [byNamespace, byPod] = hook.webhooks ?? [];
    expect(byNamespace?.namespaceSelector?.matchLabels).toEqual({ "sigil.io/inject": "enabled" });
    expect(byPod?.objectSelector?.matchLabels).toEqual({ "sigil.io/inject": "enabled" });
    const system = objects.find(
      (o) => o.object.kind === "Namespace" && o.object.metadata.name === "sigil-system",
    );
    expect((system?.object.metadata as { labels?: Record<string, string> }).labels?.["sigil.io/inject"]).toBe(
      "disabled",
    );
  });

  it("the token audience the sidecar asks for is one the attestor accepts", () => {
    const attestation = parseYaml(config["kubernetes-attestation.yaml"] ?? "") as {
      audiences: string[];
      issuer: string;
      jwksFile: string;
    };
    const runtime = webhookConfig.settings.runtime;
    expect(runtime.kind).toBe("kubernetes");
    expect(attestation.audiences).toContain(runtime.kind === "kubernetes" ? runtime.tokenAudience : "");
    expect(webhookConfig.settings.controlPlane).toBe("sigil-controlplane.sigil-system.svc:15010");
  });

  it("the control plane may read pods and nothing else, with the token it mounts for that", () => {
    const role = find<ClusterRole>("ClusterRole", "sigil-pod-reader");
    expect(role.rules).toEqual([{ apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"] }]);
    const binding = find<ClusterRoleBinding>("ClusterRoleBinding", "sigil-controlplane-pod-reader");
    expect(binding.roleRef).toEqual({
      apiGroup: "rbac.authorization.k8s.io",
      kind: "ClusterRole",
      name: "sigil-pod-reader",
    });
    expect(binding.subjects).toEqual([
      { kind: "ServiceAccount", name: "sigil-controlplane", namespace: "sigil-system" },
    ]);
    const attestation = parseYaml(config["kubernetes-attestation.yaml"] ?? "") as { apiServer?: unknown };
    expect(attestation.apiServer).toBe("in-cluster");
    const pod = find<Deployment>("Deployment", "sigil-controlplane").spec?.template.spec;
    expect(pod?.serviceAccountName).toBe("sigil-controlplane");
    expect(pod?.automountServiceAccountToken).toBe(true);
  });

  it("the example app injects cleanly", () => {
    const text = readFileSync(join(DIR, "30-example-app.yaml"), "utf8");
    const out = injectYaml(text, webhookConfig.settings, "30-example-app.yaml");
    expect(out.report.filter((r) => r.outcome === "injected").map((r) => r.object)).toEqual([
      "Deployment shop/web",
      "Deployment shop/api",
    ]);
  });
});
