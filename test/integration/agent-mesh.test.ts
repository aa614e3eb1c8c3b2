/**
 * Two `sigil sidecar` agents (web, api) in explicit mode against a real control plane side on
 * loopback: identity service, ADS and FlowService on one TLS gRPC listener. The agents get their
 * SVIDs by join token, policy and peer directory over xDS, and report flows; a request from web's
 * side is allowed, another denied, and a policy change flips the next request.
 */
import { EventEmitter, once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { flowServiceHandlers } from "../../controlplane/flows/service.ts";
import { FlowServiceDefinition } from "../../controlplane/flows/wire.ts";
import { createXdsService } from "../../controlplane/xds/service.ts";
import type { XdsService } from "../../controlplane/xds/service.ts";
import {
  peerDirectoryResource,
  policySetResource,
  revocationListResource,
  trustBundleResource,
} from "../../controlplane/xds/sigil.ts";
import type { PolicySetSpec, RuleSpec } from "../../controlplane/xds/sigil.ts";
import type { FlowRecord } from "../../core/flow.ts";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import { revocationListSpec, trustBundleSpec } from "../../core/svid/xds-resources.ts";
import { PEER_DIRECTORY, POLICY_SET, REVOCATION_LIST, TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { startAgent } from "../../sidecar/agent/agent.ts";
import type { Agent } from "../../sidecar/agent/agent.ts";
import { parseAgentOptions } from "../../sidecar/agent/options.ts";
import type { AgentOptionsInput } from "../../sidecar/agent/options.ts";
import type { IdentityHarness } from "../support/identity-harness.ts";
import { startIdentityHarness } from "../support/identity-harness.ts";
import type { HttpApp } from "../support/sidecar-apps.ts";
import { startHttpApp } from "../support/sidecar-apps.ts";

const TD = "sigil.local";
const quiet = pino({ level: "silent" });

/** The control plane's FlowService store, reduced to what the test watches. */
class CollectedFlows extends EventEmitter<{ flows: [] }> {
  readonly records: FlowRecord[] = [];
  append(records: readonly FlowRecord[]): Promise<{ accepted: readonly FlowRecord[]; duplicates: number }> {
    this.records.push(...records);
    this.emit("flows");
    return Promise.resolve({ accepted: records, duplicates: 0 });
  }
  async waitFor(test: (r: FlowRecord) => boolean, timeoutMs = 10_000): Promise<FlowRecord> {
    const signal = AbortSignal.timeout(timeoutMs);
    for (;;) {
      const hit = this.records.find(test);
      if (hit) return hit;
      await once(this, "flows", { signal });
    }
  }
}

let h: IdentityHarness;
let xds: XdsService;
let dir: string;
let caFile: string;
let app: HttpApp;
const flows = new CollectedFlows();
const agents: Agent[] = [];

function apiPolicy(paths: string[], generation: number): PolicySetSpec {
  const allow: RuleSpec = {
    id: "api-ingress/ingress/0",
    action: "ALLOW",
    peers: [{ selector: { match_labels: { app: "web" } } }],
    http: { methods: ["GET"], paths },
  };
  return {
    name: "api",
    workload: `spiffe://${TD}/workload/api`,
    mode: "ENFORCE",
    ingress: [allow],
    egress: [],
    egress_default_deny: false,
    generation,
  };
}

function publishPolicy(spiffeId: string, spec: PolicySetSpec): void {
  xds.publisher.setNodeResources(spiffeId, POLICY_SET, [policySetResource(xds.registry, spec)]);
}

async function agentFor(name: string, extra: Partial<AgentOptionsInput>): Promise<Agent> {
  const { token } = await h.plane.tokens.create({ name, labels: { app: name }, ttlSeconds: 600 });
  const agent = await startAgent(
    parseAgentOptions({
      controlPlane: h.address,
      controlPlaneCa: caFile,
      joinToken: token,
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

function nextAck(agent: Agent, typeUrl: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ACK of ${typeUrl}`)), 10_000);
    const onAck = (a: { typeUrl: string }): void => {
      if (a.typeUrl !== typeUrl) return;
      clearTimeout(timer);
      agent.subscriptions.client.off("ack", onAck);
      resolve();
    };
    agent.subscriptions.client.on("ack", onAck);
  });
}

beforeAll(async () => {
  h = await startIdentityHarness();
  xds = createXdsService();
  h.server.addService(xds.ads.definition, xds.ads.implementation);
  h.server.addService(FlowServiceDefinition, flowServiceHandlers({ store: flows, logger: quiet }));
  dir = await mkdtemp(join(tmpdir(), "sigil-agent-"));
  caFile = join(dir, "bundle.pem");
  await writeFile(caFile, bundleRootsPem(h.plane.bundle()));
  xds.publisher.setShared(TRUST_BUNDLE, [
    trustBundleResource(xds.registry, trustBundleSpec(h.plane.bundle())),
  ]);
  xds.publisher.setShared(REVOCATION_LIST, [
    revocationListResource(xds.registry, revocationListSpec(h.plane.revocations())),
  ]);
  app = await startHttpApp();
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.close()));
  await app?.close();
  await h?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("sigil sidecar agents on loopback", () => {
  let web: Agent;
  let api: Agent;
  let outboundPort: number;

  it("attest by join token, take policy and directory over xDS, and become ready", async () => {
    publishPolicy(`spiffe://${TD}/workload/api`, apiPolicy(["/allowed/**"], 1));
    publishPolicy(`spiffe://${TD}/workload/web`, {
      name: "web",
      workload: `spiffe://${TD}/workload/web`,
      mode: "ENFORCE",
      ingress: [],
      egress: [],
      egress_default_deny: false,
      generation: 1,
    });
    api = await agentFor("api", { appPort: [app.port], advertiseAddress: ["127.0.0.1"] });
    expect(api.spiffeId).toBe(`spiffe://${TD}/workload/api`);
    xds.publisher.setShared(PEER_DIRECTORY, [
      peerDirectoryResource(xds.registry, {
        name: "mesh",
        generation: 1,
        workloads: [
          {
            name: "api",
            spiffe_id: api.spiffeId,
            labels: { app: "api" },
            addresses: ["127.0.0.1"],
            ports: [{ port: app.port, protocol: "HTTP", data_path: "L7_PROXY" }],
          },
        ],
      }),
    ]);
    web = await agentFor("web", {
      outbound: [`127.0.0.1:0=127.0.0.1:${app.port}`],
      peerInboundPort: api.sidecar.inbound.port,
    });
    outboundPort = web.sidecar.outboundTargets[0]?.port ?? 0;
    expect(outboundPort).toBeGreaterThan(0);
    for (const a of [api, web]) {
      const ready = await fetch(`http://127.0.0.1:${a.sidecar.admin.port}/ready`);
      expect(ready.status).toBe(200);
    }
    // The directory is in force at web once its stream has acknowledged it.
    await expect
      .poll(() => web.subscriptions.client.resources(PEER_DIRECTORY).size, { timeout: 10_000 })
      .toBe(1);
  });

  it("allows what api's policy allows for web, end to end over mTLS", async () => {
    const res = await get(outboundPort, "/allowed/orders");
    expect(res.status).toBe(200);
    expect(app.seen.some((s) => s.url === "/allowed/orders")).toBe(true);
    const flow = await flows.waitFor(
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
    const flow = await flows.waitFor(
      (r) => r.reporter.spiffeId === api.spiffeId && r.http?.path === "/secret",
    );
    expect(flow.verdict).toBe("deny");
    expect(flow.source.spiffeId).toBe(web.spiffeId);
  });

  it("a policy change flips the next request", async () => {
    const acked = nextAck(api, POLICY_SET);
    publishPolicy(api.spiffeId, apiPolicy(["/allowed/**", "/secret"], 2));
    await acked;
    expect((await get(outboundPort, "/secret")).status).toBe(200);
    expect(app.seen.some((s) => s.url === "/secret")).toBe(true);
  });

  it("NACKs a policy set it cannot compile and keeps enforcing the last good one", async () => {
    const nacked = once(api.subscriptions.client, "nack", { signal: AbortSignal.timeout(10_000) });
    publishPolicy(api.spiffeId, {
      ...apiPolicy(["/allowed/**"], 3),
      ingress: [{ id: "api-ingress/ingress/0", action: "ALLOW", http: { paths: ["/a/../b"] } }],
    });
    const [nack] = (await nacked) as [{ typeUrl: string; error: string }];
    expect(nack.typeUrl).toBe(POLICY_SET);
    expect(nack.error).toMatch(/ingress\[0\]\.http\.paths/);
    expect(api.subscriptions.current?.generation).toBe(2);
    expect((await get(outboundPort, "/secret")).status).toBe(200);
    expect((await get(outboundPort, "/other")).status).toBe(403);
  });
});
