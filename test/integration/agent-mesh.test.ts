/**
 * Two `sigil sidecar` agents (web, api) in explicit mode against a real control plane
 * (startControlPlane) on loopback: SVIDs by join token, registration in the ADS node metadata,
 * policy from a watched YAML directory translated into each workload's PolicySet, the peer
 * directory from the registrations, flows reported to the control plane's store. A request from
 * web's side is allowed, another denied, and editing the policy file flips the next request.
 */
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { request as httpRequest } from "node:http";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ControlPlane } from "../../controlplane/control-plane.ts";
import { apiIngressPolicy } from "../support/api-ingress.ts";
import { startTestControlPlane } from "../support/control-plane.ts";
import type { TestControlPlane } from "../support/control-plane.ts";
import type { FlowRecord } from "../../core/flow.ts";
import { canonicalSerial } from "../../core/svid/revocation.ts";
import { revocationListFromResource } from "../../core/svid/xds-resources.ts";
import { startAgent } from "../../sidecar/agent/agent.ts";
import type { Agent } from "../../sidecar/agent/agent.ts";
import { parseAgentOptions } from "../../sidecar/agent/options.ts";
import type { AgentOptionsInput } from "../../sidecar/agent/options.ts";
import { POLICY_SET, REVOCATION_LIST } from "../../xds/type-urls.ts";
import type { HttpApp } from "../support/sidecar-apps.ts";
import { startHttpApp } from "../support/sidecar-apps.ts";

const quiet = pino({ level: process.env.AGENT_TEST_LOG ?? "silent" });

let cp: ControlPlane;
let controlPlane: TestControlPlane;
let app: HttpApp;
const agents: Agent[] = [];

async function agentFor(name: string, extra: Partial<AgentOptionsInput>): Promise<Agent> {
  const proof =
    extra.joinTokenFile !== undefined
      ? {}
      : {
          joinToken: (await cp.identity.tokens.create({ name, labels: { app: name }, ttlSeconds: 600 }))
            .token,
        };
  const agent = await startAgent(
    parseAgentOptions({
      controlPlane: `127.0.0.1:${cp.grpc.port}`,
      controlPlaneCa: cp.bundlePath,
      ...proof,
      workloadName: name,
      mode: "explicit",
      inboundHost: "127.0.0.1",
      inboundPort: 0,
      adminPort: 0,
      drainTimeoutMs: 2_000,
      logLevel: "silent",
      ...extra,
    }),
    { logger: quiet, startTimeoutMs: 15_000 },
  );
  agents.push(agent);
  return agent;
}

async function flowWhere(test: (r: FlowRecord) => boolean, timeoutMs = 10_000): Promise<FlowRecord> {
  const signal = AbortSignal.timeout(timeoutMs);
  for (;;) {
    const hit = cp.flows.query({}).find(test);
    if (hit) return hit;
    await once(cp.flows, "flows", { signal });
  }
}

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, path, method: "GET", agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

/** Resolves on the agent's next ACK of `typeUrl` whose accepted state passes `test`. */
function nextAccepted(agent: Agent, typeUrl: string, test: () => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no accepted ${typeUrl}`)), 10_000);
    const onAck = (a: { typeUrl: string }): void => {
      if (a.typeUrl !== typeUrl || !test()) return;
      clearTimeout(timer);
      agent.subscriptions.client.off("ack", onAck);
      resolve();
    };
    agent.subscriptions.client.on("ack", onAck);
  });
}

function serialOf(creds: { certChain: readonly Buffer[] }): string {
  return canonicalSerial(new X509Certificate(creds.certChain[0] as Buffer).serialNumber);
}

/** Whether the revocation list the agent accepted names certificate `serial`. */
function holdsRevoked(agent: Agent, serial: string): boolean {
  return [...agent.subscriptions.client.resources(REVOCATION_LIST).values()].some((r) =>
    (revocationListFromResource(r.message).certificates ?? []).some((c) => c.serial === serial),
  );
}

/** Resolves once `test` holds, looked at again on each change the subscriptions apply (bounded). */
async function until(test: () => boolean, subscriptions: Agent["subscriptions"]): Promise<void> {
  const signal = AbortSignal.timeout(20_000);
  while (!test()) await once(subscriptions, "changed", { signal });
}

beforeAll(async () => {
  controlPlane = await startTestControlPlane(
    "sigil-agent-",
    { "api.yaml": apiIngressPolicy({ methods: ["GET"], paths: ["/allowed/**"] }) },
    quiet,
  );
  cp = controlPlane.cp;
  app = await startHttpApp();
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.close()));
  await app?.close();
  await controlPlane?.close();
});

describe("sigil sidecar agents against the control plane", () => {
  let web: Agent;
  let api: Agent;
  let outboundPort: number;

  it("attest by join token, register, take policy and directory over xDS, and become ready", async () => {
    api = await agentFor("api", { appPort: [app.port], advertiseAddress: ["127.0.0.1"] });
    expect(api.spiffeId).toBe(`spiffe://${cp.trustDomain}/workload/api`);
    web = await agentFor("web", { outbound: [`127.0.0.1:0=127.0.0.1:${app.port}`] });
    outboundPort = web.sidecar.outboundTargets[0]?.port ?? 0;
    expect(outboundPort).toBeGreaterThan(0);
    for (const a of [api, web]) {
      const ready = await fetch(`http://127.0.0.1:${a.sidecar.admin.port}/ready`);
      expect(ready.status).toBe(200);
    }
    // web knows api's address, app port and registered inbound port from the directory.
    await expect
      .poll(() => web.peers.lookup("127.0.0.1", app.port), { timeout: 10_000 })
      .toMatchObject({
        identity: { spiffeId: api.spiffeId, labels: { app: "api" } },
        sidecar: { host: "127.0.0.1", port: api.sidecar.inbound.port },
        mtls: true,
      });
    expect(api.subscriptions.current?.documents.map((d) => d.metadata.name)).toContain("api-ingress");
  });

  it("allows what api's policy allows for web, end to end over mTLS, and the flow reaches the control plane", async () => {
    const res = await get(outboundPort, "/allowed/orders");
    expect(res.status).toBe(200);
    expect(app.seen.some((s) => s.url === "/allowed/orders")).toBe(true);
    const flow = await flowWhere(
      (r) => r.reporter.spiffeId === api.spiffeId && r.http?.path === "/allowed/orders",
    );
    expect(flow).toMatchObject({
      verdict: "allow",
      direction: "ingress",
      policy: "api-ingress/ingress/0",
      encrypted: true,
      source: { spiffeId: web.spiffeId },
    });
  });

  it("denies what the policy does not allow, and the denial reaches the control plane", async () => {
    const res = await get(outboundPort, "/secret");
    expect(res.status).toBe(403);
    expect(app.seen.some((s) => s.url === "/secret")).toBe(false);
    const flow = await flowWhere((r) => r.reporter.spiffeId === api.spiffeId && r.http?.path === "/secret");
    expect(flow.verdict).toBe("deny");
    expect(flow.source.spiffeId).toBe(web.spiffeId);
  });

  it("editing the policy file flips the next request", async () => {
    const before = api.subscriptions.current;
    const applied = nextAccepted(api, POLICY_SET, () => api.subscriptions.current !== before);
    await controlPlane.writePolicy(
      "api.yaml",
      apiIngressPolicy({ methods: ["GET"], paths: ["/allowed/**", "/secret"] }),
    );
    await applied;
    expect((await get(outboundPort, "/secret")).status).toBe(200);
    expect(app.seen.some((s) => s.url === "/secret")).toBe(true);
    expect((await get(outboundPort, "/other")).status).toBe(403);
  });

  it("a sidecar whose own certificate is revoked by serial attests again with the token now in its file, comes back on a new connection and is served again", async () => {
    const tokenFile = join(controlPlane.dataDir, "batch-join-token");
    const token = async (): Promise<void> => {
      const { token: t } = await cp.identity.tokens.create({
        name: "batch",
        labels: { app: "web" },
        ttlSeconds: 600,
      });
      await writeFile(tokenFile, t, { mode: 0o600 });
    };
    await token();
    const batch = await agentFor("batch", {
      joinTokenFile: tokenFile,
      outbound: [`127.0.0.1:0=127.0.0.1:${app.port}`],
    });
    const port = batch.sidecar.outboundTargets[0]?.port ?? 0;
    // Pools an upstream connection presenting the certificate about to be revoked.
    expect((await get(port, "/allowed/batch-before")).status).toBe(200);
    const serial = serialOf(batch.rotation.current());
    // The first token is used up: the operator puts a new one in the file.
    await token();
    const rotated = once(batch.rotation, "rotated", { signal: AbortSignal.timeout(20_000) });
    await cp.identity.registry.revokeCertificate(serial, "key leaked", cp.identity.ca.maxLeafTtlSeconds);
    await rotated;
    expect(serialOf(batch.rotation.current())).not.toBe(serial);
    expect(cp.identity.registry.get(batch.spiffeId)?.revoked).toBeNull();
    // Its ADS stream is back, which the control plane allows only on a connection presenting a
    // certificate not revoked, and it holds the list naming the old one.
    await until(
      () =>
        batch.subscriptions.client.connected &&
        cp.xds.ads.status().some((st) => st.key === batch.spiffeId) &&
        holdsRevoked(batch, serial),
      batch.subscriptions,
    );
    // The callee refuses the old certificate: what it serves now came over a new connection.
    await until(() => holdsRevoked(api, serial), api.subscriptions);
    expect((await get(port, "/allowed/batch-after")).status).toBe(200);
    const flow = await flowWhere(
      (r) => r.reporter.spiffeId === api.spiffeId && r.http?.path === "/allowed/batch-after",
    );
    expect(flow).toMatchObject({ verdict: "allow", source: { spiffeId: batch.spiffeId } });
  });
});
