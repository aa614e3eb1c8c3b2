/**
 * Three control-plane replicas (real processes) over a real three-member etcd cluster on loopback:
 * shared CA, exactly-once join tokens, changes through any replica reaching sidecars on every
 * replica, failover of a killed replica's sidecars (simulated xDS clients, and two real sidecar
 * agents carrying caller → callee HTTP traffic through the kill with no wrong verdict), an etcd
 * member lost, quorum lost and regained, and a full restart that loses nothing.
 */
import { execFile } from "node:child_process";
import { once } from "node:events";
import { X509Certificate } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { controlPlaneSpiffeId } from "../../controlplane/ca/authority.ts";
import { IdentityClient } from "../../sidecar/identity/identity-client.ts";
import { RotationManager, type WorkloadCredentials } from "../../sidecar/identity/rotation.ts";
import { XdsClient } from "../../xds/client.ts";
import { defaultTypeRegistry } from "../../xds/registry.ts";
import { registrationMetadata } from "../../core/registration.ts";
import { canonicalSerial } from "../../core/svid/revocation.ts";
import { revocationListFromResource } from "../../core/svid/xds-resources.ts";
import { PEER_DIRECTORY, POLICY_SET, REVOCATION_LIST, TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { apiIngressPolicy } from "../support/api-ingress.ts";
import { startEtcdCluster, type EtcdCluster } from "../support/etcd-cluster.ts";
import { startReplicas, type ReplicaSet } from "../support/replicas.ts";
import { carryTraffic, send, startReplicaAgent } from "../support/replica-agents.ts";
import { startHttpApp } from "../support/sidecar-apps.ts";
import type { Agent } from "../../sidecar/agent/agent.ts";
import type { AgentOptionsInput } from "../../sidecar/agent/options.ts";
import type { Closer } from "../support/control-plane.ts";

const TD = "sigil.local";
const execFileAsync = promisify(execFile);
const policy = (...methods: string[]) => apiIngressPolicy({ methods, paths: ["/api/**"] });

let etcd: EtcdCluster;
let set: ReplicaSet;
let caPem: string;
const closers: Closer[] = [];

/** Resolves when `check()` holds, polling every 50 ms; fails after `timeoutMs` naming `what`. */
async function eventually(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function newToken(replica: number, name: string, labels: Record<string, string>): Promise<string> {
  const res = await set.api<{ token: string }>(replica, "POST", "/api/identity/tokens", {
    name,
    labels,
    ttlSeconds: 600,
  });
  expect(res.status).toBe(201);
  return res.body.token;
}

function identityClient(replica: number): IdentityClient {
  const client = new IdentityClient({
    address: set.grpcTargets[replica] as string,
    caPem,
    serverSpiffeId: controlPlaneSpiffeId(TD),
  });
  closers.push(() => client.close());
  return client;
}

async function attest(replica: number, joinToken: string): Promise<RotationManager> {
  const rotation = new RotationManager({
    client: identityClient(replica),
    trustDomain: TD,
    bootstrapProof: () => Promise.resolve({ joinToken }),
  });
  closers.push(() => rotation.stop());
  await rotation.start();
  return rotation;
}

interface SimSidecar {
  readonly creds: WorkloadCredentials;
  readonly xds: XdsClient;
  /** Every PolicySet the sidecar accepted, in order (the rules it enforces). */
  readonly policies: string[];
  /** Set when a handler was ever asked to accept an empty PolicySet (it must never be). */
  emptied: boolean;
}

async function sidecar(
  replica: number,
  name: string,
  labels: Record<string, string>,
  address: string,
): Promise<SimSidecar> {
  const creds = (await attest(replica, await newToken(replica, name, labels))).current();
  const xds = new XdsClient({
    target: set.grpcTargets,
    firstTarget: replica,
    credentials: grpc.credentials.createSsl(
      Buffer.from(caPem),
      Buffer.from(creds.privateKeyPem),
      Buffer.from(creds.certChainPem),
    ),
    channelOptions: { "grpc.ssl_target_name_override": "localhost" },
    node: {
      id: creds.spiffeId,
      metadata: registrationMetadata({
        addresses: [address],
        appPorts: [8080],
        fastPathPorts: [],
        inboundPort: 15006,
      }),
    },
    protocol: "sotw",
    registry: defaultTypeRegistry(),
    backoff: { initialMs: 300, maxMs: 2000, multiplier: 2, jitter: 0.3 },
  });
  closers.push(() => xds.close());
  const s: SimSidecar = { creds, xds, policies: [], emptied: false };
  xds.subscribe(POLICY_SET, {
    handler: (u) => {
      if (u.resources.size === 0) s.emptied = true;
      for (const r of u.resources.values()) s.policies.push(JSON.stringify(r.message.ingress ?? []));
    },
  });
  for (const t of [TRUST_BUNDLE, PEER_DIRECTORY, REVOCATION_LIST]) xds.subscribe(t);
  xds.start();
  await eventually(
    `${name} configured`,
    () => s.policies.length > 0 && xds.resources(PEER_DIRECTORY).size > 0,
  );
  return s;
}

const lastPolicy = (s: SimSidecar) => s.policies[s.policies.length - 1] ?? "";
const directoryNames = (s: SimSidecar) =>
  [...s.xds.resources(PEER_DIRECTORY).values()].flatMap((r) =>
    ((r.message.workloads ?? []) as { spiffe_id: string }[]).map((w) => w.spiffe_id),
  );

/** A callee (app=api, in front of an HTTP app) and a caller (app=web) whose xDS streams open to `replica`. */
async function agentPairOn(replica: number): Promise<{ api: Agent; web: Agent; port: number }> {
  const app = await startHttpApp();
  closers.push(() => app.close());
  const agent = async (name: string, extra: Partial<AgentOptionsInput>): Promise<Agent> => {
    const a = await startReplicaAgent({
      controlPlanes: set.grpcTargets,
      firstReplica: replica,
      caFile: join(set.replicas[0]?.dataDir as string, "bundle.pem"),
      joinToken: await newToken(replica, `${name}-agent`, { app: name }),
      name: `${name}-agent`,
      extra,
    });
    closers.push(() => a.close());
    return a;
  };
  const api = await agent("api", { appPort: [app.port], advertiseAddress: ["127.0.0.1"] });
  const web = await agent("web", { outbound: [`127.0.0.1:0=127.0.0.1:${app.port}`] });
  const signal = AbortSignal.timeout(10_000);
  while (!web.peers.lookup("127.0.0.1", app.port)) await once(web.subscriptions, "peers", { signal });
  return { api, web, port: web.sidecar.outboundTargets[0]?.port as number };
}

let sidecars: SimSidecar[];
let usedToken: string;

beforeAll(async () => {
  etcd = await startEtcdCluster(3);
  set = await startReplicas(3, etcd.endpoints);
  caPem = await readFile(join(set.replicas[0]?.dataDir as string, "bundle.pem"), "utf8");
  expect((await set.api(0, "PUT", "/api/policy/files/mesh.yaml", policy("GET"))).status).toBe(200);
  sidecars = await Promise.all(
    [0, 1, 2].map((r) => sidecar(r, `api${r}`, { app: "api" }, `198.18.0.${10 + r}`)),
  );
}, 120_000);

afterAll(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await set?.close();
  await etcd?.close();
});

describe("replicas over etcd", () => {
  it("share one CA whose private keys etcd holds only sealed", async () => {
    for (const r of set.replicas) expect(await readFile(join(r.dataDir, "bundle.pem"), "utf8")).toBe(caPem);
    const client = new Etcd3({ hosts: [...etcd.endpoints] });
    try {
      const stored = await client.getAll().prefix("/sigil/ca/generations/").strings();
      expect(Object.keys(stored).length).toBeGreaterThan(0);
      for (const value of Object.values(stored)) {
        expect(value).toContain("BEGIN CERTIFICATE");
        expect(value).not.toContain("PRIVATE KEY");
      }
    } finally {
      client.close();
    }
  });

  it("list every workload in every replica's peer directory, whichever replica its sidecar is on", async () => {
    for (const s of sidecars)
      await eventually("directory complete", () =>
        sidecars.every((o) => directoryNames(s).includes(o.creds.spiffeId)),
      );
  });

  it("accept a join token raced through two replicas exactly once", async () => {
    usedToken = await newToken(0, "raced", { app: "raced" });
    const results = await Promise.allSettled([attest(1, usedToken), attest(2, usedToken)]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const refused = results.find((r) => r.status === "rejected");
    expect(String(refused?.reason)).toMatch(/already used|redeemed concurrently/);
  });

  it("push a policy applied through one replica to sidecars on every replica", async () => {
    const bad = await set.api<{ error: string }>(2, "PUT", "/api/policy/files/mesh.yaml", "kind: Nope\n");
    expect(bad.status).toBe(400);
    // Through the CLI, given two replicas of which it reaches the second.
    const file = join(set.replicas[0]?.dataDir as string, "mesh.yaml");
    await writeFile(file, policy("GET", "POST"));
    const cli = await execFileAsync(
      process.execPath,
      [
        "--import",
        "tsx",
        "cmd/sigil/main.ts",
        "policy",
        "apply",
        "-f",
        file,
        "--token-file",
        set.tokenFile,
        "--api",
        `http://127.0.0.1:1,${set.replicas[2]?.httpBase}`,
      ],
      { cwd: join(import.meta.dirname, "../..") },
    );
    expect(cli.stdout).toMatch(/applied mesh.yaml: policy revision \d+/);
    await eventually("POST allowed everywhere", () => sidecars.every((s) => lastPolicy(s).includes("POST")));
  }, 60000);

  it("keep one CA when two replicas rotate it at the same moment", async () => {
    const rotate = (r: number) =>
      set.api<{ id?: string; error?: string }>(r, "POST", "/api/identity/ca/rotate", {
        activateInSeconds: 3600,
      });
    const before = (await set.api<{ generations: unknown[] }>(0, "GET", "/api/identity/ca")).body.generations;
    const results = await Promise.all([rotate(0), rotate(1)]);
    for (const r of results)
      if (r.status !== 200) {
        expect(r.status).toBe(409);
        expect(r.body.error).toMatch(/another replica rotated or retired a CA generation at the same time/);
      }
    const accepted = results.filter((r) => r.status === 200).map((r) => r.body.id);
    expect(accepted.length).toBeGreaterThan(0);
    const generations = async (r: number) =>
      JSON.stringify(
        (await set.api<{ generations: unknown[] }>(r, "GET", "/api/identity/ca")).body.generations,
      );
    await eventually("every replica holds the same CA generations", async () => {
      const seen = await Promise.all([0, 1, 2].map(generations));
      return seen.every((g) => g === seen[0]);
    });
    const ids = (JSON.parse(await generations(2)) as { id: string }[]).map((g) => g.id);
    expect(ids).toHaveLength(before.length + accepted.length);
    for (const id of accepted) expect(ids).toContain(id);
    await eventually("every replica's bundle file names every root", async () => {
      const files = await Promise.all(
        set.replicas.map((r) => readFile(join(r.dataDir, "bundle.pem"), "utf8")),
      );
      return files.every((f) => f === files[0] && f.split("BEGIN CERTIFICATE").length - 1 === ids.length);
    });
    caPem = await readFile(join(set.replicas[0]?.dataDir as string, "bundle.pem"), "utf8");
  });

  it("move a killed replica's sidecars to another within 5 s, keeping their last policy meanwhile", async () => {
    const onR2 = sidecars.filter((s) => s.xds.target === set.grpcTargets[2]);
    expect(onR2.length).toBeGreaterThan(0);
    const before = onR2.map(lastPolicy);
    // Real sidecar agents on replica 2 carry caller → callee traffic through the kill.
    const { api, web, port } = await agentPairOn(2);
    expect(await send(port, "POST", "/api/orders")).toBe(200);
    expect(await send(port, "PUT", "/api/orders")).toBe(403);
    const traffic = carryTraffic(port, [
      { method: "GET", path: "/api/orders", expected: 200 },
      { method: "DELETE", path: "/api/orders", expected: 403 },
    ]);
    // Served by a survivor = the survivor holds an authorized ADS stream for that sidecar.
    const moved = [...onR2.map((s) => ({ id: s.creds.spiffeId, xds: s.xds })), api, web].map((s) =>
      "xds" in s ? s : { id: s.spiffeId, xds: s.subscriptions.client },
    );
    const servedAt = new Map<string, number>();
    const killedAt = Date.now();
    await set.kill(2);
    await eventually(
      "all failed over",
      async () => {
        const nodes = new Set<string>();
        for (const r of [0, 1]) {
          const res = await set.api<{ streams: { nodeId: string }[] }>(r, "GET", "/api/xds/streams");
          for (const st of res.body.streams) nodes.add(st.nodeId);
        }
        for (const { id } of moved) if (!servedAt.has(id) && nodes.has(id)) servedAt.set(id, Date.now());
        return moved.every(({ id }) => servedAt.has(id));
      },
      15_000,
    );
    for (const { id, xds } of moved) {
      expect((servedAt.get(id) as number) - killedAt).toBeLessThan(5_000);
      expect(xds.target).not.toBe(set.grpcTargets[2]);
    }
    const failedOverAt = Math.max(...servedAt.values());
    const during = traffic.answers.filter((a) => a.at >= killedAt && a.at <= failedOverAt);
    expect(during.some((a) => a.expected === 200)).toBe(true);
    expect(during.some((a) => a.expected === 403)).toBe(true);
    expect(onR2.map(lastPolicy)).toEqual(before);
    expect(sidecars.some((s) => s.emptied)).toBe(false);
    expect((await set.api(1, "PUT", "/api/policy/files/mesh.yaml", policy("GET", "PUT"))).status).toBe(200);
    await eventually("PUT allowed on every sidecar", () =>
      sidecars.every((s) => lastPolicy(s).includes("PUT")),
    );
    const signal = AbortSignal.timeout(10_000);
    while (!JSON.stringify(api.subscriptions.current?.documents).includes("PUT"))
      await once(api.subscriptions, "changed", { signal });
    // The change made through a survivor flips verdicts at the real sidecars both ways.
    expect(await send(port, "PUT", "/api/orders")).toBe(200);
    expect(await send(port, "POST", "/api/orders")).toBe(403);
    await traffic.stop();
    expect(traffic.wrong()).toEqual([]);
    expect(traffic.answers.filter((a) => a.at > failedOverAt).length).toBeGreaterThan(0);
    await set.start(2);
  }, 60000);

  it("go on when one etcd member dies", async () => {
    await etcd.kill(0);
    const res = await set.api(0, "PUT", "/api/policy/files/mesh.yaml", policy("GET", "DELETE"));
    expect(res.status).toBe(200);
    await eventually("DELETE allowed everywhere", () =>
      sidecars.every((s) => lastPolicy(s).includes("DELETE")),
    );
    await etcd.start(0);
    await etcd.healthy();
  }, 60000);

  it("without quorum: keep serving the last state, refuse writes with the reason, recover", async () => {
    const served = sidecars.map(lastPolicy);
    await etcd.kill(1);
    await etcd.kill(2);
    const refused = await set.api<{ error: string }>(0, "PUT", "/api/policy/files/mesh.yaml", policy("GET"));
    expect(refused.status).toBe(503);
    expect(refused.body.error).toMatch(/refused: etcd .* did not accept the write/);
    const token = await set.api<{ error: string }>(1, "POST", "/api/identity/tokens", {
      name: "x",
      labels: {},
      ttlSeconds: 60,
    });
    expect(token.status).toBe(503);
    // A sidecar connecting now is served the full last state, never an empty one.
    const late = new XdsClient({
      target: set.grpcTargets[0] as string,
      credentials: grpc.credentials.createSsl(
        Buffer.from(caPem),
        Buffer.from(sidecars[0]?.creds.privateKeyPem as string),
        Buffer.from(sidecars[0]?.creds.certChainPem as string),
      ),
      channelOptions: { "grpc.ssl_target_name_override": "localhost" },
      node: { id: sidecars[0]?.creds.spiffeId as string },
      protocol: "sotw",
      registry: defaultTypeRegistry(),
    });
    closers.push(() => late.close());
    late.subscribe(POLICY_SET);
    late.subscribe(PEER_DIRECTORY);
    late.start();
    await eventually(
      "late sidecar served",
      () => late.resources(PEER_DIRECTORY).size > 0 && late.resources(POLICY_SET).size > 0,
    );
    expect(sidecars.map(lastPolicy)).toEqual(served);
    await etcd.start(1);
    await etcd.start(2);
    await etcd.healthy();
    // Every replica, not only the first to reconnect, accepts changes again once etcd has a quorum.
    for (const replica of [2, 1, 0]) {
      await eventually(
        `writes accepted again through replica ${replica}`,
        async () =>
          (await set.api(replica, "PUT", "/api/policy/files/mesh.yaml", policy("GET, PATCH"))).status === 200,
        20_000,
      );
    }
    await eventually("PATCH allowed everywhere", () =>
      sidecars.every((s) => lastPolicy(s).includes("PATCH")),
    );
  }, 90000);

  it("lose nothing when everything restarts", async () => {
    const victim = sidecars[1]?.creds.spiffeId as string;
    expect((await set.api(0, "POST", "/api/identity/workloads/revoke", { spiffeId: victim })).status).toBe(
      200,
    );
    // One certificate revoked by serial through replica 0, of a workload attested through replica 1:
    // the entry lives in etcd's revocation list and reaches a sidecar on replica 2.
    const leaky = (await attest(1, await newToken(1, "leaky", { app: "leaky" }))).current();
    const serial = canonicalSerial(new X509Certificate(leaky.certChain[0] as Buffer).serialNumber);
    expect(
      (await set.api(0, "POST", "/api/identity/certificates/revoke", { serial, reason: "key leaked" }))
        .status,
    ).toBe(200);
    await eventually("serial revocation pushed through another replica", () =>
      [...(sidecars[2] as SimSidecar).xds.resources(REVOCATION_LIST).values()].some((r) =>
        revocationListFromResource(r.message).certificates?.some((c) => c.serial === serial),
      ),
    );
    for (const i of [0, 1, 2]) await set.kill(i);
    for (const i of [0, 1, 2]) await etcd.kill(i);
    for (const i of [0, 1, 2]) await etcd.start(i);
    await etcd.healthy();
    await Promise.all([0, 1, 2].map((i) => set.start(i)));
    for (const r of set.replicas) expect(await readFile(join(r.dataDir, "bundle.pem"), "utf8")).toBe(caPem);
    const workloads = await set.api<{ workloads: { spiffeId: string; revoked: unknown }[] }>(
      1,
      "GET",
      "/api/identity/workloads",
    );
    expect(workloads.body.workloads.map((w) => w.spiffeId)).toEqual(
      expect.arrayContaining(sidecars.map((s) => s.creds.spiffeId)),
    );
    const revocations = await set.api<{ entries: { spiffeId: string }[] }>(
      2,
      "GET",
      "/api/identity/revocations",
    );
    expect(revocations.body.entries.map((e) => e.spiffeId)).toContain(victim);
    const revokedCertificates = await set.api<{ certificates: { serial: string; spiffeId: string }[] }>(
      1,
      "GET",
      "/api/identity/certificates/revoked",
    );
    expect(revokedCertificates.body.certificates).toEqual([
      expect.objectContaining({ serial, spiffeId: leaky.spiffeId }),
    ]);
    await expect(attest(2, usedToken)).rejects.toThrow(/already used/);
    const policies = await set.api<{ policies: unknown[] }>(0, "GET", "/api/policies");
    expect(JSON.stringify(policies.body.policies)).toContain("PATCH");
  }, 120000);
});
