import type { EventEmitter } from "node:events";
import { mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ControlPlane } from "../../controlplane/control-plane.ts";
import { openIdentityPlane } from "../../controlplane/identity/plane.ts";
import { registrationMetadata, type Registration } from "../../core/registration.ts";
import type { FlowRecord } from "../../core/flow.ts";
import type { RotationManager, WorkloadCredentials } from "../../sidecar/identity/rotation.ts";
import { generateWorkloadKey, createCsr } from "../../sidecar/identity/workload-key.ts";
import { FlowReporter } from "../../sidecar/flows/reporter.ts";
import { XdsClient, type DecodedResource } from "../../xds/client.ts";
import { PEER_DIRECTORY, POLICY_SET, REVOCATION_LIST, TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { attestWithJoinToken, startTestControlPlane } from "../support/control-plane.ts";
import { apiIngressPolicy } from "../support/api-ingress.ts";
import type { Closer, TestControlPlane } from "../support/control-plane.ts";
import { nextEvent } from "./xds-harness.ts";

const POLICIES = `${apiIngressPolicy({ ports: [8080], methods: ["GET"], paths: ["/api/**"] })}---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: web-egress }
spec:
  selector: { matchLabels: { app: web } }
  egress:
    - action: allow
      to: [ { matchLabels: { app: api } } ]
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: api-mtls }
spec:
  selector: { matchLabels: { app: api } }
  mode: STRICT
  portLevel: { "9090": PERMISSIVE }
`;

let controlPlane: TestControlPlane;
let policyDir: string;
let cp: ControlPlane;
let caPem: string;
let grpcTarget: string;
const closers: Closer[] = [];

async function api<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`http://127.0.0.1:${cp.httpPort}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${cp.httpAuth.token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: (text.startsWith("{") ? JSON.parse(text) : text) as T };
}

/** Resolves once `check()` holds, re-checking whenever `emitter` emits `event`; bounded by `timeoutMs`. */
function until(emitter: EventEmitter, event: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (check()) return resolve();
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`condition not met within ${timeoutMs} ms`));
    }, timeoutMs);
    const listener = () => {
      if (!check()) return;
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve();
    };
    emitter.on(event, listener);
  });
}

function tlsCredentials(creds?: { privateKeyPem: string; certChainPem: string }): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(
    Buffer.from(caPem),
    creds ? Buffer.from(creds.privateKeyPem) : null,
    creds ? Buffer.from(creds.certChainPem) : null,
  );
}

/** A simulated sidecar: join-token attestation, SVID, then ADS over TLS with that SVID. */
interface SimSidecar {
  readonly creds: WorkloadCredentials;
  readonly rotation: RotationManager;
  readonly xds: XdsClient;
  readonly state: Map<string, ReadonlyMap<string, DecodedResource>>;
  one(typeUrl: string): Record<string, unknown> | undefined;
}

async function joinToken(name: string, labels: Record<string, string>): Promise<string> {
  const res = await api<{ token: string }>("POST", "/api/tokens", { name, labels, ttlSeconds: 600 });
  expect(res.status).toBe(201);
  return res.body.token;
}

async function attest(name: string, labels: Record<string, string>): Promise<RotationManager> {
  return attestWithJoinToken(controlPlane, await joinToken(name, labels), closers);
}

function adsClient(
  nodeId: string,
  credentials: grpc.ChannelCredentials,
  registration?: Registration,
): XdsClient {
  const client = new XdsClient({
    target: grpcTarget,
    credentials,
    channelOptions: { "grpc.ssl_target_name_override": "localhost" },
    node: { id: nodeId, metadata: registration ? registrationMetadata(registration) : undefined },
    protocol: "sotw",
    registry: cp.xds.registry,
    backoff: { initialMs: 10_000, maxMs: 10_000, multiplier: 1, jitter: 0 },
  });
  closers.push(() => client.close());
  return client;
}

async function startSidecar(
  name: string,
  labels: Record<string, string>,
  registration: Registration,
): Promise<SimSidecar> {
  const rotation = await attest(name, labels);
  const creds = rotation.current();
  const xds = adsClient(creds.spiffeId, tlsCredentials(creds), registration);
  const state = new Map<string, ReadonlyMap<string, DecodedResource>>();
  for (const typeUrl of [TRUST_BUNDLE, POLICY_SET, PEER_DIRECTORY, REVOCATION_LIST]) {
    xds.subscribe(typeUrl, { handler: (u) => void state.set(typeUrl, u.resources) });
  }
  xds.start();
  await until(xds, "ack", () => [TRUST_BUNDLE, POLICY_SET, PEER_DIRECTORY].every((t) => state.get(t)?.size));
  return {
    creds,
    rotation,
    xds,
    state,
    one: (typeUrl) => {
      const all = [...(state.get(typeUrl)?.values() ?? [])];
      return all.length === 1 ? all[0]?.message : undefined;
    },
  };
}

interface DirectoryWorkload {
  name: string;
  spiffe_id: string;
  labels: Record<string, string>;
  addresses: string[];
  inbound_port: number;
  ports: { port: number; protocol: string; data_path: string; mtls: string }[];
}

function directory(s: SimSidecar): DirectoryWorkload[] {
  return (s.one(PEER_DIRECTORY)?.workloads ?? []) as DirectoryWorkload[];
}

function ruleIds(s: SimSidecar, direction: "ingress" | "egress"): string[] {
  return ((s.one(POLICY_SET)?.[direction] ?? []) as { id: string }[]).map((r) => r.id);
}

async function writePolicies(text: string): Promise<void> {
  const tmp = join(policyDir, ".mesh.yaml.tmp");
  await writeFile(tmp, text);
  await rename(tmp, join(policyDir, "mesh.yaml"));
}

let web: SimSidecar;
let web2: SimSidecar;
let apiSc: SimSidecar;

beforeAll(async () => {
  controlPlane = await startTestControlPlane("sg-cpm-", { "mesh.yaml": POLICIES });
  ({ cp, caPem, grpcTarget, policyDir } = controlPlane);
  web = await startSidecar(
    "web",
    { app: "web" },
    { addresses: ["198.18.0.10"], appPorts: [8000], fastPathPorts: [], inboundPort: 15006 },
  );
  web2 = await startSidecar(
    "web2",
    { app: "web" },
    { addresses: ["198.18.0.12"], appPorts: [8000], fastPathPorts: [], inboundPort: 15006 },
  );
  apiSc = await startSidecar(
    "api",
    { app: "api" },
    { addresses: ["198.18.0.11"], appPorts: [8080, 9090], fastPathPorts: [9090], inboundPort: 15106 },
  );
}, 60_000);

afterAll(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await controlPlane?.close();
});

describe("control plane serving a simulated sidecar over real gRPC/TLS", () => {
  it("publishes the bundle file the control plane's serving certificate chains to", () => {
    expect(caPem).toContain("BEGIN CERTIFICATE");
    expect(web.creds.spiffeId).toBe("spiffe://sigil.local/workload/web");
  });

  it("serves each workload exactly its own PolicySet, shared between workloads selecting the same policies", () => {
    const webSets = [...(web.state.get(POLICY_SET)?.values() ?? [])];
    expect(webSets).toHaveLength(1);
    expect(ruleIds(web, "egress")).toEqual(["web-egress/egress/0"]);
    expect(ruleIds(web, "ingress")).toEqual([]);
    expect(web.one(POLICY_SET)?.egress_default_deny).toBe(true);
    expect(web.one(POLICY_SET)?.mode).toBe("ENFORCE");

    expect(ruleIds(apiSc, "ingress")).toEqual(["api-ingress/ingress/0"]);
    expect(ruleIds(apiSc, "egress")).toEqual([]);
    expect(apiSc.one(POLICY_SET)?.peer_authentication).toMatchObject({
      mode: "STRICT",
      port_level: { "9090": "PERMISSIVE" },
    });

    const name = (s: SimSidecar) => [...(s.state.get(POLICY_SET)?.keys() ?? [])][0];
    expect(name(web)).toBe(name(web2));
    expect(name(web)).not.toBe(name(apiSc));
  });

  it("serves the trust bundle and a peer directory built from the registrations", () => {
    const bundle = web.one(TRUST_BUNDLE);
    expect(bundle?.trust_domain).toBe("sigil.local");
    expect((bundle?.x509_roots_pem as string[]).join("")).toBe(caPem);

    const entries = directory(web);
    const apiEntry = entries.find((w) => w.spiffe_id === apiSc.creds.spiffeId);
    expect(apiEntry).toMatchObject({
      name: "api",
      labels: { app: "api" },
      addresses: ["198.18.0.11"],
      inbound_port: 15106,
      ports: [
        { port: 8080, protocol: "HTTP", data_path: "L7_PROXY", mtls: "STRICT" },
        { port: 9090, protocol: "TCP", data_path: "L4_FAST_PATH", mtls: "PERMISSIVE" },
      ],
    });
    expect(entries.map((w) => w.name).sort()).toEqual(["api", "web", "web2"]);
  });

  it("re-pushes policy within seconds of a policy file change", async () => {
    await writePolicies(
      POLICIES.replace(
        'paths: [ "/api/**" ] }',
        'paths: [ "/api/**" ] }\n    - action: deny\n      ports: [ 9090 ]',
      ),
    );
    await until(apiSc.xds, "ack", () => ruleIds(apiSc, "ingress").includes("api-ingress/ingress/1"));
    expect(ruleIds(apiSc, "ingress")).toEqual(["api-ingress/ingress/0", "api-ingress/ingress/1"]);
  });

  it("pushes a run-time mode switch to the workload it concerns, and not the unchanged directory", async () => {
    const directoryVersion = () => cp.xds.cache.get(web2.creds.spiffeId)?.set(PEER_DIRECTORY)?.version;
    const before = directoryVersion();
    expect(before).toBeDefined();
    const res = await api("PUT", "/api/mode", {
      scope: "workload",
      name: web2.creds.spiffeId,
      mode: "observe",
    });
    expect(res.status).toBe(200);
    await until(web2.xds, "ack", () => web2.one(POLICY_SET)?.mode === "OBSERVE");
    expect(web.one(POLICY_SET)?.mode).toBe("ENFORCE");
    expect(directoryVersion()).toBe(before);
  });

  it("turns an operator label change into a directory update the sidecar renews on", async () => {
    const res = await api("POST", "/api/identity/workloads/labels", {
      spiffeId: web.creds.spiffeId,
      labels: { tier: "frontend" },
    });
    expect(res.status).toBe(200);
    await until(
      web.xds,
      "ack",
      () => directory(web).find((w) => w.spiffe_id === web.creds.spiffeId)?.labels.tier === "frontend",
    );
    const renewed = await web.rotation.renewNow();
    expect(renewed.labels.map((l) => `${l.key}=${l.value}`)).toContain("tier=frontend");
  });

  it("accepts flow reports only in the reporting workload's name and lists them in /api/flows", async () => {
    const creds = web.rotation.current();
    const reporter = new FlowReporter({
      target: grpcTarget,
      credentials: () => tlsCredentials(creds),
      channelOptions: { "grpc.ssl_target_name_override": "localhost" },
      flushIntervalMs: 20,
      logger: pino({ level: "silent" }),
    });
    closers.push(() => reporter.close(0));
    const record: FlowRecord = {
      id: "0b6a3f0e-5f0c-4b7e-9a51-2f0a7c9d1e01",
      time: Date.now(),
      reporter: { spiffeId: creds.spiffeId, kind: "sidecar" },
      direction: "egress",
      source: { spiffeId: creds.spiffeId, labels: { app: "web" }, address: "198.18.0.10" },
      destination: { spiffeId: apiSc.creds.spiffeId, labels: { app: "api" }, address: "198.18.0.11" },
      port: 8080,
      protocol: "http",
      http: { method: "GET", path: "/api/orders", status: 200 },
      verdict: "allow",
      wouldDeny: false,
      policy: "web-egress/egress/0",
      reason: "allowed by web-egress/egress/0",
      encrypted: true,
      bytesSent: 10,
      bytesReceived: 20,
      durationMs: 3,
    };
    reporter.start();
    const acked = nextEvent(reporter, "ack");
    reporter.report(record);
    await acked;
    const flows = await api<{ flows: FlowRecord[] }>("GET", "/api/flows?limit=10");
    expect(flows.body.flows.map((f) => f.id)).toContain(record.id);

    const forged = new FlowReporter({
      target: grpcTarget,
      credentials: () => tlsCredentials(creds),
      channelOptions: { "grpc.ssl_target_name_override": "localhost" },
      flushIntervalMs: 20,
      logger: pino({ level: "silent" }),
    });
    closers.push(() => forged.close(0));
    forged.start();
    const forgedAck = nextEvent<{ accepted: number; rejected: number }>(forged, "ack");
    forged.report({
      ...record,
      id: "0b6a3f0e-5f0c-4b7e-9a51-2f0a7c9d1e02",
      reporter: { spiffeId: apiSc.creds.spiffeId, kind: "sidecar" },
    });
    const ack = await forgedAck;
    expect(Number(ack.accepted)).toBe(0);
    const after = await api<{ flows: FlowRecord[] }>("GET", "/api/flows?limit=10");
    expect(after.body.flows.map((f) => f.id)).not.toContain("0b6a3f0e-5f0c-4b7e-9a51-2f0a7c9d1e02");
  });

  it("refuses a node claiming another workload's identity", async () => {
    const c = adsClient(apiSc.creds.spiffeId, tlsCredentials(web.rotation.current()));
    c.subscribe(POLICY_SET);
    const down = nextEvent<{ code: number; details: string }>(c, "disconnected");
    c.start();
    const status = await down;
    expect(status.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(status.details).toContain(`proves ${web.creds.spiffeId}`);
  });

  it("refuses a node without a client certificate", async () => {
    const c = adsClient(web.creds.spiffeId, tlsCredentials());
    c.subscribe(POLICY_SET);
    const down = nextEvent<{ code: number; details: string }>(c, "disconnected");
    c.start();
    const status = await down;
    expect(status.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(status.details).toContain("no client certificate chaining to the trust bundle");
  });

  it("refuses a node whose certificate comes from another CA, even with a matching SPIFFE ID", async () => {
    const otherDir = await mkdtemp(join(tmpdir(), "sg-cpm-rogue-"));
    const rogue = await openIdentityPlane({ dataDir: otherDir });
    try {
      const key = await generateWorkloadKey();
      const csr = await createCsr(key);
      const { x509 } = await import("../../core/svid/x509.ts");
      const issued = await rogue.ca.issueSvid({
        publicKey: new x509.Pkcs10CertificateRequest(csr).publicKey,
        spiffeId: web.creds.spiffeId,
        labels: [],
        ttlSeconds: 600,
      });
      const certChainPem = issued.chain.map((d) => x509.PemConverter.encode(d, "CERTIFICATE")).join("\n");
      const c = adsClient(
        web.creds.spiffeId,
        tlsCredentials({ privateKeyPem: key.privateKeyPem, certChainPem }),
      );
      c.subscribe(POLICY_SET);
      const down = nextEvent<{ code: number; details: string }>(c, "disconnected");
      c.start();
      const status = await down;
      expect(status.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(status.details).toContain("no client certificate chaining to the trust bundle");
    } finally {
      rogue.close();
      await rm(otherDir, { recursive: true, force: true });
    }
  });

  it("pushes a revocation to every sidecar at once and drops the workload from the directory", async () => {
    const res = await api("POST", "/api/identity/workloads/revoke", {
      spiffeId: web2.creds.spiffeId,
      reason: "compromised",
    });
    expect(res.status).toBe(200);
    await until(
      apiSc.xds,
      "ack",
      () =>
        ((apiSc.one(REVOCATION_LIST)?.spiffe_ids ?? []) as string[]).includes(web2.creds.spiffeId) &&
        !directory(apiSc).some((w) => w.spiffe_id === web2.creds.spiffeId),
      2_000,
    );
  });

  it("reports its own metrics", async () => {
    const res = await api<string>("GET", "/metrics");
    expect(res.status).toBe(200);
    expect(res.body).toMatch(/sigil_controlplane_connected_sidecars [1-9]/);
    expect(res.body).toMatch(/sigil_controlplane_signings_total\{kind="x509",result="issued"\} [1-9]/);
    expect(res.body).toMatch(/sigil_controlplane_pushes_total\{type="PolicySet"\} [1-9]/);
  });
});
