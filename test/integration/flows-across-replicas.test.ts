/**
 * Flows stay on the replica their sidecar reported to. Three control-plane replicas over a real
 * etcd announce their APIs on leases; a question about flows asked of any one merges every live
 * replica's answer: records once each, edges counted role by role across replicas, simulate and
 * diff over everything; a replica that does not answer is named and the answer is partial, never
 * late past the peer timeout; a replica that leaves stops being asked. A follow streams every
 * replica's new records, each once.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Etcd3 } from "etcd3";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlPlane, type ControlPlane } from "../../controlplane/control-plane.ts";
import { VisibilityClient } from "../../cmd/sigil/visibility-client.ts";
import type { FlowRecord } from "../../core/flow.ts";
import { apiIngressPolicy } from "../support/api-ingress.ts";
import { startEtcdCluster, type EtcdCluster } from "../support/etcd-cluster.ts";
import { demo, flow } from "../support/flows-fixtures.ts";

let dir: string;
let etcd: EtcdCluster;
let replicas: ControlPlane[] = [];
let silent: Server;
const held: Socket[] = [];
const token = randomBytes(32).toString("hex");
const url = (cp: ControlPlane) => `http://127.0.0.1:${cp.httpPort}`;
const t0 = Date.now() - 60_000;

// Flips the api's recorded decisions: its GETs become denials, its refused POST an allow.
const POST_ONLY = apiIngressPolicy({ methods: ["POST"], paths: ["/orders/**"] });

async function api<T>(cp: ControlPlane, method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${url(cp)}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(20_000),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as T;
}

/** Resolves when `check()` holds, polling every 50 ms; fails after `timeoutMs` naming `what`. */
async function eventually(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// web → api: web's sidecar (on replica 0) reports its egress, api's (on replica 1) the decisions.
const webEgress = [1, 2, 3].map((i) =>
  flow({
    from: demo.web,
    to: demo.api,
    port: 8080,
    direction: "egress",
    http: { method: "GET", path: `/orders/${i}` },
    time: t0 + i,
  }),
);
const apiIngress = [
  flow({
    from: demo.web,
    to: demo.api,
    port: 8080,
    http: { method: "GET", path: "/orders/1" },
    time: t0 + 4,
  }),
  flow({
    from: demo.web,
    to: demo.api,
    port: 8080,
    http: { method: "GET", path: "/orders/2" },
    time: t0 + 5,
  }),
  flow({
    from: demo.web,
    to: demo.api,
    port: 8080,
    http: { method: "POST", path: "/orders/3" },
    verdict: "deny",
    time: t0 + 6,
  }),
];
// The rogue's own sidecar (replica 2) lets it out; the api's (replica 1) refuses it.
const rogueEgress = flow({
  from: demo.rogue,
  to: demo.api,
  port: 8080,
  direction: "egress",
  http: { method: "GET", path: "/admin" },
  policy: null,
  time: t0 + 7,
});
const rogueRefused = flow({
  from: demo.rogue,
  to: demo.api,
  port: 8080,
  http: { method: "GET", path: "/admin" },
  verdict: "deny",
  time: t0 + 8,
});

// api → db, decided by the db's fast path: a batch re-sent after a failover, stored on two replicas.
const dbIngress = flow({ from: demo.api, to: demo.db, port: 5432, time: t0 + 9 });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sg-flowrep-"));
  etcd = await startEtcdCluster(1);
  const tokenFile = join(dir, "http-token");
  const keyFile = join(dir, "envelope.key");
  await writeFile(tokenFile, token, { mode: 0o600 });
  await writeFile(keyFile, randomBytes(32).toString("hex"), { mode: 0o600 });
  const start = (name: string) =>
    startControlPlane({
      dataDir: join(dir, name),
      grpc: { host: "127.0.0.1", port: 0 },
      xdsPlaintext: undefined,
      http: { host: "127.0.0.1", port: 0, tokenFile },
      serverNames: ["localhost"],
      log: pino({ level: "silent" }),
      replication: { etcdEndpoints: etcd.endpoints, envelopeKey: { file: keyFile }, replicaId: name },
    });
  // The first creates the CA; the others join it.
  replicas = [await start("r0")];
  replicas.push(...(await Promise.all(["r1", "r2"].map(start))));
  const [r0, r1, r2] = replicas as [ControlPlane, ControlPlane, ControlPlane];
  await r0.flows.append(webEgress);
  await r1.flows.append([...apiIngress, rogueRefused, dbIngress]);
  await r2.flows.append([rogueEgress, dbIngress]);
  silent = createServer((socket) => held.push(socket));
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
  await eventually("every replica sees the others", () =>
    replicas.every((cp) => cp.replication?.peers.others().length === 2),
  );
}, 90_000);

afterAll(async () => {
  for (const cp of replicas) await cp.close();
  for (const s of held) s.destroy();
  silent?.close();
  await etcd?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("flows across replicas over etcd", () => {
  it("lists every replica's flows from any replica, each record once, in time order within the limit", async () => {
    const ids = [...webEgress, ...apiIngress, rogueEgress, rogueRefused, dbIngress].map((r) => r.id);
    for (const cp of replicas) {
      const body = await api<{ flows: FlowRecord[]; partial?: boolean }>(cp, "GET", "/api/flows");
      expect(body.flows.map((r) => r.id).sort()).toEqual([...ids].sort());
      expect(body.flows.map((r) => r.time)).toEqual([...body.flows.map((r) => r.time)].sort());
      expect(body.partial).toBeUndefined();
    }
    const newest = await api<{ flows: FlowRecord[] }>(
      replicas[0] as ControlPlane,
      "GET",
      "/api/flows?limit=2",
    );
    expect(newest.flows.map((r) => r.id)).toEqual([rogueRefused.id, dbIngress.id]);
    const local = await api<{ flows: FlowRecord[] }>(
      replicas[0] as ControlPlane,
      "GET",
      "/api/flows?local=1",
    );
    expect(local.flows.map((r) => r.id)).toEqual(webEgress.map((r) => r.id));
  });

  it("counts each request once on the map when caller and callee reported to different replicas", async () => {
    type Graph = { edges: { id: string; allowed: number; denied: number; countedFrom: string }[] };
    for (const cp of replicas) {
      const { edges } = await api<Graph>(cp, "GET", "/api/graph");
      const byId = new Map(edges.map((e) => [e.id, e]));
      expect(byId.get(`${demo.web.spiffeId} -> ${demo.api.spiffeId}:8080`)).toMatchObject({
        allowed: 2,
        denied: 1,
        countedFrom: "callee",
      });
      // Alone, replica 2 holds only the rogue's egress allow; with the api's refusal it is denied.
      expect(byId.get(`${demo.rogue.spiffeId} -> ${demo.api.spiffeId}:8080`)).toMatchObject({
        allowed: 0,
        denied: 1,
      });
    }
    const { edges } = await api<Graph>(replicas[2] as ControlPlane, "GET", "/api/graph?local=1");
    expect(edges.find((e) => e.id.startsWith(demo.rogue.spiffeId))).toMatchObject({ allowed: 1, denied: 0 });
  });

  it("simulates, diffs and suggests over every replica's recorded flows, each record once", async () => {
    const [r0, , r2] = replicas as [ControlPlane, ControlPlane, ControlPlane];
    type Simulation = { nowDenied: number; nowAllowed: number };
    // r0 holds none of the callees' decisions; the db's, stored twice (r1, r2), counts once.
    const simulation = await api<Simulation>(r0, "POST", "/api/policy/simulate", { yaml: POST_ONLY });
    expect(simulation).toMatchObject({ nowDenied: 3, nowAllowed: 1 });
    const files = [{ name: "mesh.yaml", yaml: POST_ONLY }];
    const diff = await api<{ simulation: Simulation }>(r2, "POST", "/api/policy/diff", { files });
    expect(diff.simulation).toMatchObject({ nowDenied: 3, nowAllowed: 1 });
    const local = await api<{ simulation: Simulation }>(r2, "POST", "/api/policy/diff?local=1", { files });
    expect(local.simulation).toMatchObject({ nowDenied: 1, nowAllowed: 0 });
    // Suggestions take the callees' decisions, all of which are on other replicas than r0.
    const suggestion = await api<{ yaml: string }>(r0, "GET", "/api/policy/suggest");
    expect(suggestion.yaml).toMatch(/app: api[\s\S]*app: web[\s\S]*\/orders\/\*/);
    const alone = await api<{ yaml: string }>(r0, "GET", "/api/policy/suggest?local=1");
    expect(alone.yaml).not.toContain("/orders/");
  });

  it("follows every replica's new flows from any replica, each record once", async () => {
    const [r0, r1, r2] = replicas as [ControlPlane, ControlPlane, ControlPlane];
    const cli = new VisibilityClient(url(r0), { token, source: "test" });
    const seen: string[] = [];
    const stop = new AbortController();
    const following = cli.follow({ limit: 100 }, (r) => seen.push(r.id), stop.signal);
    try {
      await eventually("the merged backlog", () => seen.length === 9);
      const later = flow({ from: demo.web, to: demo.api, port: 8080, time: Date.now() });
      const twice = flow({ from: demo.api, to: demo.db, port: 5432, time: Date.now() });
      await r1.flows.append([later, twice]);
      await r2.flows.append([twice]);
      await eventually(
        "the new records of r1 and r2",
        () => seen.includes(later.id) && seen.includes(twice.id),
      );
      // r2's copy of the re-sent batch arrives too, and must not be sent again.
      await r0.flows.append([flow({ from: demo.web, to: demo.api, port: 8080, time: Date.now() })]);
      await eventually("r0's own record after them", () => seen.length === 12);
      expect(new Set(seen).size).toBe(seen.length);
      expect(cli.unreachable).toEqual([]);
    } finally {
      stop.abort();
      await following;
    }
  });

  it("answers without a replica that does not answer, naming it, and the CLI says so", async () => {
    const client = new Etcd3({ hosts: [...etcd.endpoints] });
    const lease = client.namespace("/sigil/").lease(30);
    try {
      const port = (silent.address() as { port: number }).port;
      await lease.put("peers/r9").value(JSON.stringify({ api: `http://127.0.0.1:${port}` }));
      await eventually("r9 announced", () =>
        replicas.every((cp) => cp.replication?.peers.others().some((p) => p.replica === "r9")),
      );
      const body = await api<{ flows: FlowRecord[]; partial: boolean; unanswered: unknown[] }>(
        replicas[1] as ControlPlane,
        "GET",
        "/api/flows",
      );
      // The nine records above and the three the follow test added.
      expect(body.flows).toHaveLength(12);
      expect(body.partial).toBe(true);
      expect(body.unanswered).toEqual([
        { replica: "r9", api: `http://127.0.0.1:${port}`, reason: "no answer within 3000 ms" },
      ]);
      const cli = new VisibilityClient(url(replicas[0] as ControlPlane), { token, source: "test" });
      expect(await cli.graph()).toMatchObject({ partial: true });
      expect(cli.unreachable).toEqual([`r9 at http://127.0.0.1:${port} (no answer within 3000 ms)`]);
      // A follow says so as an event, and goes on with the replicas that answer.
      const stop = new AbortController();
      const missing: string[] = [];
      const following = cli.follow(
        {},
        () => undefined,
        stop.signal,
        (m) => missing.push(...m),
      );
      await eventually("follow names r9", () =>
        missing.some((m) => m.startsWith(`r9 at http://127.0.0.1:${port}`)),
      );
      stop.abort();
      await following;
    } finally {
      await lease.revoke();
      client.close();
    }
    await eventually("r9 gone with its lease", () =>
      replicas.every((cp) => !cp.replication?.peers.others().some((p) => p.replica === "r9")),
    );
  });

  it("stops asking a replica that left, and lists the flows of those still there", async () => {
    const [r0, r1, r2] = replicas as [ControlPlane, ControlPlane, ControlPlane];
    await r2.close();
    replicas = [r0, r1];
    await eventually("r2 gone", () => r0.replication?.peers.others().length === 1);
    const body = await api<{ flows: FlowRecord[]; partial?: boolean }>(r0, "GET", "/api/flows");
    expect(body.partial).toBeUndefined();
    // r0's and r1's records, with the three the follow test added to them.
    expect(body.flows).toHaveLength(webEgress.length + apiIngress.length + 2 + 3);
  });
});
