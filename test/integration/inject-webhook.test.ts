import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:https";
import { connect } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import jsonPatch from "fast-json-patch";
import type { Pod } from "kubernetes-types/core/v1.js";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openIdentityPlane, type IdentityPlane } from "../../controlplane/identity/plane.ts";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import { injectSettings } from "../../inject/settings.ts";
import { injectObject } from "../../inject/workloads.ts";
import { startInjectionWebhook } from "../../inject/webhook/control-plane.ts";
import { startWebhookServer, type WebhookServer } from "../../inject/webhook/server.ts";
import { probeTls } from "../support/tls-probe.ts";

const DNS_NAME = "sigil-webhook.sigil-system.svc";
const settings = injectSettings({ controlPlane: "sigil-controlplane.sigil-system.svc:15010" });

let dataDir: string;
let plane: IdentityPlane;
let webhook: WebhookServer;
let caPem: string;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "sigil-webhook-"));
  plane = await openIdentityPlane({ dataDir });
  caPem = bundleRootsPem(plane.bundle());
  webhook = await startInjectionWebhook({
    ca: plane.ca,
    host: "127.0.0.1",
    port: 0,
    dnsNames: [DNS_NAME],
    settings,
    log: pino({ level: "silent" }),
  });
});

afterAll(async () => {
  await webhook?.close();
  await plane?.close();
  await rm(dataDir, { recursive: true, force: true });
});

interface Answer {
  status: number;
  // The review's JSON, read field by field as a client would.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

/** Posts over HTTPS as the API server does: trusting only the configuration's caBundle, by DNS name. */
function post(body: string | Buffer, headers: Record<string, string> = {}, method = "POST"): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port: webhook.port,
        servername: DNS_NAME,
        path: "/inject?timeout=10s",
        method,
        ca: caPem,
        checkServerIdentity: (_host, cert) =>
          cert.subjectaltname?.includes(`DNS:${DNS_NAME}`) ? undefined : new Error("wrong name"),
        headers: { "content-type": "application/json", ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) }),
        );
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/** A Pod as a ReplicaSet controller creates it: generateName, owner, no name yet. */
function replicaPod(
  labels: Record<string, string> = { app: "web", "sigil.io/inject": "enabled" },
  annotations: Record<string, string> = {},
): Pod {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      generateName: "web-7c9f8d6b5-",
      namespace: "shop",
      labels: { ...labels, "pod-template-hash": "7c9f8d6b5" },
      annotations,
      ownerReferences: [
        {
          apiVersion: "apps/v1",
          kind: "ReplicaSet",
          name: "web-7c9f8d6b5",
          uid: "0b5c3c1e-6f4a-4e8e-9d55-3f1f0f7a2b11",
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec: {
      serviceAccountName: "web",
      containers: [
        {
          name: "web",
          image: "nginx:1.25",
          ports: [{ containerPort: 8080, protocol: "TCP" }],
          resources: {},
          terminationMessagePath: "/dev/termination-log",
          terminationMessagePolicy: "File",
          imagePullPolicy: "IfNotPresent",
        },
      ],
      restartPolicy: "Always",
      terminationGracePeriodSeconds: 30,
      dnsPolicy: "ClusterFirst",
      securityContext: {},
      schedulerName: "default-scheduler",
      tolerations: [
        {
          key: "node.kubernetes.io/not-ready",
          operator: "Exists",
          effect: "NoExecute",
          tolerationSeconds: 300,
        },
      ],
    },
    status: {},
  };
}

/** The review body kube-apiserver sends for a Pod CREATE. */
function review(object: unknown, over: Record<string, unknown> = {}): string {
  return JSON.stringify({
    kind: "AdmissionReview",
    apiVersion: "admission.k8s.io/v1",
    request: {
      uid: "705ab4f5-6393-11e8-b7cc-42010a800002",
      kind: { group: "", version: "v1", kind: "Pod" },
      resource: { group: "", version: "v1", resource: "pods" },
      requestKind: { group: "", version: "v1", kind: "Pod" },
      requestResource: { group: "", version: "v1", resource: "pods" },
      namespace: "shop",
      operation: "CREATE",
      userInfo: {
        username: "system:serviceaccount:kube-system:replicaset-controller",
        uid: "c6e3c1a0",
        groups: ["system:serviceaccounts", "system:authenticated"],
      },
      object,
      oldObject: null,
      dryRun: false,
      options: { kind: "CreateOptions", apiVersion: "meta.k8s.io/v1" },
      ...over,
    },
  });
}

function decodePatch(patch: string): jsonPatch.Operation[] {
  return JSON.parse(Buffer.from(patch, "base64").toString("utf8")) as jsonPatch.Operation[];
}

describe("injection webhook over HTTPS", () => {
  it("serves a certificate from Sigil's CA naming the service", async () => {
    const cert = await new Promise<string>((resolve, reject) => {
      const s = connect(
        {
          host: "127.0.0.1",
          port: webhook.port,
          servername: DNS_NAME,
          ca: caPem,
          checkServerIdentity: () => undefined,
        },
        () => {
          resolve(s.getPeerCertificate().subjectaltname ?? "");
          s.end();
        },
      );
      s.on("error", reject);
    });
    expect(cert).toContain(`DNS:${DNS_NAME}`);
    await expect(
      new Promise((resolve, reject) => {
        const s = connect({ host: "127.0.0.1", port: webhook.port, servername: DNS_NAME }, () => resolve(s));
        s.on("error", reject);
      }),
    ).rejects.toThrow(/self-signed|unable to verify|certificate/);
  });

  it("patches a Pod being created with exactly the sigil inject mutation", async () => {
    const pod = replicaPod();
    const { status, body } = await post(review(pod));
    expect(status).toBe(200);
    expect(body).toMatchObject({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview" });
    expect(body.response).toMatchObject({
      uid: "705ab4f5-6393-11e8-b7cc-42010a800002",
      allowed: true,
      patchType: "JSONPatch",
    });
    const ops = decodePatch(body.response.patch);
    expect(jsonPatch.validate(ops, structuredClone(pod))).toBeUndefined();
    const patched = jsonPatch.applyPatch(structuredClone(pod), ops, true, false).newDocument;
    expect(patched).toEqual(injectObject(pod, settings, "x").object);
    const sidecar = (patched as Pod).spec?.containers[0];
    expect(sidecar?.name).toBe("sigil-sidecar");
    expect(sidecar?.args).toContain("--workload-name=$(SIGIL_POD_NAME)");
  });

  it("a reinvocation of an injected Pod gets no patch", async () => {
    const injected = injectObject(replicaPod(), settings, "x").object;
    const { body } = await post(review(injected));
    expect(body.response).toEqual({ uid: "705ab4f5-6393-11e8-b7cc-42010a800002", allowed: true });
  });

  it("a pod that opts out, an UPDATE and another kind are admitted unchanged", async () => {
    const optedOut = replicaPod({ app: "web", "sigil.io/inject": "disabled" });
    expect((await post(review(optedOut))).body.response).toEqual({ uid: expect.any(String), allowed: true });
    const update = review(replicaPod(), { operation: "UPDATE", oldObject: replicaPod() });
    expect((await post(update)).body.response.patch).toBeUndefined();
    const deployment = review(
      { apiVersion: "apps/v1", kind: "Deployment" },
      {
        kind: { group: "apps", version: "v1", kind: "Deployment" },
        resource: { group: "apps", version: "v1", resource: "deployments" },
      },
    );
    expect((await post(deployment)).body.response).toMatchObject({ allowed: true });
  });

  it("refuses a pod that cannot be injected with allowed: false and the reason", async () => {
    const bad = replicaPod(undefined, { "sigil.io/exclude-outbound-ports": "5432,lots" });
    const { status, body } = await post(review(bad));
    expect(status).toBe(200);
    expect(body.response.allowed).toBe(false);
    expect(body.response.status.code).toBe(400);
    expect(body.response.status.message).toMatch(
      /pod shop\/web-7c9f8d6b5-\*.*metadata\.annotations\["sigil\.io\/exclude-outbound-ports"\]: "lots" is not a port/,
    );
    const uid = replicaPod();
    uid.spec!.securityContext = { runAsUser: 1337 };
    expect((await post(review(uid))).body.response).toMatchObject({
      allowed: false,
      status: { message: expect.stringMatching(/runAsUser: uid 1337/) },
    });
  });

  it("answers what is not an AdmissionReview with a 4xx naming why, never a 500", async () => {
    expect(await post("{not json")).toMatchObject({
      status: 400,
      body: { error: expect.stringMatching(/not JSON/) },
    });
    expect(
      await post(
        JSON.stringify({ apiVersion: "admission.k8s.io/v1beta1", kind: "AdmissionReview", request: {} }),
      ),
    ).toMatchObject({
      status: 400,
      body: { error: expect.stringMatching(/apiVersion/) },
    });
    expect((await post("{}", { "content-type": "text/plain" })).status).toBe(415);
    expect((await post("", {}, "GET")).status).toBe(405);
    const huge = Buffer.alloc(5 * 1024 * 1024, 0x20);
    expect(await post(huge)).toMatchObject({ status: 413, body: { error: expect.stringMatching(/limit/) } });
  });

  it("cuts a client that never finishes its request instead of hanging", async () => {
    const tls = await plane.ca.issueServingCertificate({ dnsNames: [DNS_NAME], ipAddresses: ["127.0.0.1"] });
    const slow = await startWebhookServer({
      host: "127.0.0.1",
      port: 0,
      tls,
      settings,
      log: pino({ level: "silent" }),
      requestTimeoutMs: 500,
    });
    try {
      const outcome = await new Promise<string>((resolve) => {
        const s = connect({ host: "127.0.0.1", port: slow.port, servername: DNS_NAME, ca: caPem }, () => {
          s.write(
            "POST /inject HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
          );
        });
        let text = "";
        s.on("data", (d: Buffer) => (text += d.toString()));
        s.on("close", () => resolve(text.split("\r\n")[0] ?? ""));
        s.on("error", () => undefined);
      });
      expect(outcome).toBe("HTTP/1.1 408 Request Timeout");
    } finally {
      await slow.close();
    }
  });

  it("offers TLS 1.3, or TLS 1.2 with ECDHE AEAD suites only, also after its certificate is replaced", async () => {
    const tls = await plane.ca.issueServingCertificate({ dnsNames: [DNS_NAME], ipAddresses: ["127.0.0.1"] });
    const server = await startWebhookServer({
      host: "127.0.0.1",
      port: 0,
      tls,
      settings,
      log: pino({ level: "silent" }),
    });
    try {
      for (const phase of ["as started", "after renewal"]) {
        if (phase === "after renewal") server.setTls(tls);
        const modern = await probeTls("127.0.0.1", server.port, "tls1_3");
        expect(modern.protocol, `${phase}: ${modern.output}`).toBe("TLSv1.3");
        const aead = await probeTls("127.0.0.1", server.port, "tls1_2", "ECDHE-ECDSA-AES128-GCM-SHA256");
        expect(aead.protocol, `${phase}: ${aead.output}`).toBe("TLSv1.2");
        const cbc = await probeTls("127.0.0.1", server.port, "tls1_2", "ECDHE-ECDSA-AES128-SHA256");
        expect(cbc.protocol, `${phase}: ${cbc.output}`).toBeNull();
        const old = await probeTls("127.0.0.1", server.port, "tls1_1");
        expect(old.protocol, `${phase}: ${old.output}`).toBeNull();
      }
    } finally {
      await server.close();
    }
  });
});
