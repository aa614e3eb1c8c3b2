import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import pino from "pino";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import { flowServiceHandlers } from "../../controlplane/flows/service.ts";
import { FlowStore } from "../../controlplane/flows/store.ts";
import { FlowServiceDefinition } from "../../core/flow-wire.ts";
import { createControlPlaneMetrics } from "../../controlplane/metrics/metrics.ts";
import { FlowReporter } from "../../sidecar/flows/reporter.ts";
import { demo, demoTraffic, flow } from "../support/flows-fixtures.ts";

const silent = pino({ level: "silent" });
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "sigil-flows-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function startServer(
  store: Pick<FlowStore, "append">,
  port = 0,
  extra: Partial<Parameters<typeof flowServiceHandlers>[0]> = {},
): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  server.addService(FlowServiceDefinition, flowServiceHandlers({ store, logger: silent, ...extra }));
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  cleanups.push(() => void server.forceShutdown());
  return { server, port: bound };
}

function reporter(
  port: number,
  opts: Partial<ConstructorParameters<typeof FlowReporter>[0]> = {},
): FlowReporter {
  const r = new FlowReporter({
    target: `127.0.0.1:${port}`,
    credentials: () => grpc.credentials.createInsecure(),
    flushIntervalMs: 20,
    backoffInitialMs: 20,
    backoffMaxMs: 100,
    logger: silent,
    ...opts,
  });
  cleanups.push(() => r.close(100));
  return r;
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

function ids(records: readonly FlowRecord[]): string[] {
  return records.map((r) => r.id).sort();
}

describe("flow reporting over a real gRPC stream", () => {
  it("delivers every record with its identities, verdicts and policies", async () => {
    const store = await FlowStore.open({ dir: await tempDir(), logger: silent });
    cleanups.push(() => store.close());
    const metrics = createControlPlaneMetrics();
    const { port } = await startServer(store, 0, { metrics });
    const r = reporter(port, { batchSize: 4 });
    r.start();
    const sent = demoTraffic();
    for (const rec of sent) r.report(rec);
    await r.flush();

    const stored = store.all();
    expect(ids(stored)).toEqual(ids(sent));
    const denied = stored.find(
      (x) => x.source.spiffeId === demo.rogue.spiffeId && x.port === 8080 && x.direction === "ingress",
    );
    expect(denied).toMatchObject({
      verdict: "deny",
      policy: null,
      destination: { spiffeId: demo.api.spiffeId, labels: demo.api.labels },
      http: { method: "GET", path: "/api/orders/1", status: 403 },
    });
    const allowed = stored.find((x) => x.direction === "ingress" && x.http?.method === "POST");
    expect(allowed).toMatchObject({
      verdict: "allow",
      policy: "demo-allow/ingress/0",
      source: { spiffeId: demo.web.spiffeId, labels: demo.web.labels },
      encrypted: true,
    });
    expect(r.stats()).toMatchObject({ acknowledged: sent.length, buffered: 0, dropped: 0 });
    const text = await metrics.registry.metrics();
    expect(text).toContain(`sigil_controlplane_flows_ingested_total{result="accepted"} ${sent.length}`);
  });

  it("sends a burst as full batches of the configured size, the remainder on its timer", async () => {
    const store = await FlowStore.open({ dir: await tempDir(), logger: silent });
    cleanups.push(() => store.close());
    const sizes: number[] = [];
    const { port } = await startServer({
      append: (records) => {
        sizes.push(records.length);
        return store.append(records);
      },
    });
    const r = reporter(port, { batchSize: 10, flushIntervalMs: 60_000 });
    r.start();
    await new Promise<void>((resolve) => r.once("connected", resolve));
    const sent = Array.from({ length: 35 }, () => flow({ from: demo.web, to: demo.api, port: 8080 }));
    const acks: number[] = [];
    r.on("ack", (a) => acks.push(Number(a.sequence)));
    for (const rec of sent) r.report(rec);
    await waitFor("three full batches", () => acks.length >= 3);
    expect(sizes.slice(0, 3)).toEqual([10, 10, 10]);
    // The remainder waits for its timer (a minute here) or a flush.
    expect(r.stats().buffered).toBe(5);
    await r.flush();
    expect(ids(store.all())).toEqual(ids(sent));
    expect(sizes).toEqual([10, 10, 10, 5]);
  });

  it("delivers a backlog of many batches, in order and once, when the control plane comes up", async () => {
    const holder = await startServer({ append: async () => ({ accepted: [], duplicates: 0 }) });
    holder.server.forceShutdown();
    const r = reporter(holder.port, { batchSize: 10 });
    let disconnects = 0;
    r.on("disconnected", () => disconnects++);
    r.start();
    const sent = Array.from({ length: 95 }, () => flow({ from: demo.web, to: demo.api, port: 8080 }));
    for (const rec of sent) r.report(rec);
    await waitFor("a failed connection attempt", () => disconnects >= 1);
    const store = await FlowStore.open({ dir: await tempDir(), logger: silent });
    cleanups.push(() => store.close());
    const metrics = createControlPlaneMetrics();
    await startServer(store, holder.port, { metrics });
    await r.flush();
    expect(ids(store.all())).toEqual(ids(sent));
    expect(r.stats()).toMatchObject({ acknowledged: 95, buffered: 0, dropped: 0 });
    const text = await metrics.registry.metrics();
    expect(text).toContain(`sigil_controlplane_flows_ingested_total{result="accepted"} 95`);
  });

  it("loses no acknowledged record across a control-plane restart", async () => {
    const dir = await tempDir();
    let store = await FlowStore.open({ dir, logger: silent });
    const first = await startServer(store);
    const r = reporter(first.port);
    r.start();
    const sent = demoTraffic();
    for (const rec of sent) r.report(rec);
    await r.flush();
    const edgesBefore = store.edges();
    first.server.forceShutdown();
    await store.close();

    store = await FlowStore.open({ dir, logger: silent });
    cleanups.push(() => store.close());
    expect(ids(store.all())).toEqual(ids(sent));
    expect(store.edges()).toEqual(edgesBefore);
  });

  it("resends an unacknowledged batch after a reconnect without losing or duplicating", async () => {
    const store = await FlowStore.open({ dir: await tempDir(), logger: silent });
    cleanups.push(() => store.close());
    let kill: (() => void) | null = null;
    let appends = 0;
    // The control plane stores the second batch and dies before its ack leaves.
    const crashing: Pick<FlowStore, "append"> = {
      append: async (records) => {
        const result = await store.append(records);
        appends++;
        if (appends === 2) kill?.();
        return result;
      },
    };
    const first = await startServer(crashing);
    kill = () => first.server.forceShutdown();
    const r = reporter(first.port, { batchSize: 5 });
    let disconnects = 0;
    r.on("disconnected", () => disconnects++);
    r.start();
    const sent = demoTraffic();
    for (const rec of sent.slice(0, 10)) r.report(rec);
    await waitFor("the first control plane to die", () => disconnects >= 1);
    expect(r.stats().acknowledged).toBe(5);

    for (const rec of sent.slice(10)) r.report(rec);
    const metrics = createControlPlaneMetrics();
    await startServer(store, first.port, { metrics });
    await r.flush();

    expect(ids(store.all())).toEqual(ids(sent));
    expect(r.stats()).toMatchObject({ acknowledged: sent.length, dropped: 0, buffered: 0 });
    expect(r.stats().reconnects).toBeGreaterThanOrEqual(1);
    const text = await metrics.registry.metrics();
    expect(text).toContain(`sigil_controlplane_flows_ingested_total{result="duplicate"} 5`);
  });

  it("bounds its buffer while the control plane is unreachable and counts what it drops", async () => {
    const holder = await startServer({ append: async () => ({ accepted: [], duplicates: 0 }) });
    holder.server.forceShutdown();
    const registry = new Registry();
    const r = reporter(holder.port, { maxBuffered: 5, batchSize: 2, registry });
    r.start();
    for (let i = 0; i < 8; i++) r.report(flow({ from: demo.web, to: demo.api, port: 8080 }));
    expect(r.stats()).toMatchObject({ buffered: 5, dropped: 3, acknowledged: 0 });
    expect(await registry.metrics()).toContain("sigil_sidecar_flows_dropped_total 3");
  });

  it("rejects malformed records and records claimed for another reporter, keeping the rest", async () => {
    const store = await FlowStore.open({ dir: await tempDir(), logger: silent });
    cleanups.push(() => store.close());
    const { port } = await startServer(store, 0, {
      authenticatePeer: () => ({ spiffeId: demo.api.spiffeId, serial: "1" }),
    });
    const r = reporter(port);
    const acks: { rejected: number; errors: string[] }[] = [];
    r.on("ack", (a) => acks.push(a));
    r.start();
    const good = flow({ from: demo.web, to: demo.api, port: 8080 });
    const forged = flow({ from: demo.web, to: demo.db, port: 5432 });
    const badPort = { ...flow({ from: demo.web, to: demo.api, port: 8080 }), port: 70000 };
    r.report(good);
    r.report(forged);
    r.report(badPort);
    await r.flush();
    expect(ids(store.all())).toEqual([good.id]);
    expect(acks.reduce((n, a) => n + a.rejected, 0)).toBe(2);
    const errors = acks.flatMap((a) => a.errors).join("\n");
    expect(errors).toContain(`reporter ${demo.db.spiffeId} is not the peer ${demo.api.spiffeId}`);
    expect(errors).toMatch(/port/);
  });

  it("refuses a stream whose peer proved no identity", async () => {
    const store = await FlowStore.open({ dir: await tempDir(), logger: silent });
    cleanups.push(() => store.close());
    const { port } = await startServer(store, 0, { authenticatePeer: () => null });
    const r = reporter(port, { backoffInitialMs: 5_000 });
    const refused = new Promise<Error>((resolve) => r.once("disconnected", resolve));
    r.start();
    r.report(flow({ from: demo.web, to: demo.api, port: 8080 }));
    const err = (await refused) as Error & { code?: number };
    expect(err.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err.message).toContain("flow reports need a workload identity");
    expect(store.all()).toEqual([]);
    expect(r.stats()).toMatchObject({ acknowledged: 0, buffered: 1 });
  });
});
