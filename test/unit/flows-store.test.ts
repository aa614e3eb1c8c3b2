import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { FlowStore } from "../../controlplane/flows/store.ts";
import { demo, demoTraffic, flow } from "../support/flows-fixtures.ts";

const silent = pino({ level: "silent" });
const dirs: string[] = [];
const stores: FlowStore[] = [];

afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function open(opts: Partial<Parameters<typeof FlowStore.open>[0]> & { dir?: string } = {}) {
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), "sigil-store-")));
  if (!opts.dir) dirs.push(dir);
  const store = await FlowStore.open({ logger: silent, ...opts, dir });
  stores.push(store);
  return { store, dir };
}

describe("flow store", () => {
  it("de-duplicates by record id within a batch, across batches and after reopening", async () => {
    const { store, dir } = await open();
    const [a, b] = demoTraffic();
    const first = await store.append([a!, a!, b!]);
    expect(first.accepted.map((r) => r.id)).toEqual([a!.id, b!.id]);
    expect(first.duplicates).toBe(1);
    expect((await store.append([b!])).duplicates).toBe(1);
    await store.close();
    stores.pop();
    const { store: again } = await open({ dir });
    expect((await again.append([a!])).accepted).toEqual([]);
    expect(again.stats().records).toBe(2);
  });

  it("keeps another reporter's record with the same id: one reporter cannot shadow another's ids", async () => {
    const { store } = await open();
    const [a] = demoTraffic();
    const forged = { ...a!, reporter: { ...a!.reporter, spiffeId: "spiffe://sigil.local/workload/other" } };
    expect((await store.append([forged])).accepted).toHaveLength(1);
    expect((await store.append([a!])).accepted).toEqual([a]);
    expect(store.stats().records).toBe(2);
  });

  it("cuts a torn tail left by a crash mid-write and keeps every complete record", async () => {
    const { store, dir } = await open();
    const sent = demoTraffic();
    await store.append(sent);
    await store.close();
    stores.pop();
    const [seg] = await readdir(dir);
    await appendFile(join(dir, seg!), '1234abcd {"id":"half');
    const { store: again } = await open({ dir });
    expect(again.all().map((r) => r.id)).toEqual(sent.map((r) => r.id));
    expect(again.stats()).toMatchObject({ tornTailBytes: 20, corruptLines: 0 });
    await again.append([flow({ from: demo.web, to: demo.api, port: 8080 })]);
    const text = await readFile(join(dir, seg!), "utf8");
    expect(text.split("\n").filter(Boolean)).toHaveLength(sent.length + 1);
  });

  it("skips a record whose checksum fails instead of trusting it", async () => {
    const { store, dir } = await open();
    const sent = demoTraffic().slice(0, 3);
    await store.append(sent);
    await store.close();
    stores.pop();
    const [seg] = await readdir(dir);
    const path = join(dir, seg!);
    const lines = (await readFile(path, "utf8")).split("\n");
    lines[1] = lines[1]!.replace('"verdict":"allow"', '"verdict":"deny"');
    await writeFile(path, lines.join("\n"));
    const { store: again } = await open({ dir });
    expect(again.all().map((r) => r.id)).toEqual([sent[0]!.id, sent[2]!.id]);
    expect(again.stats().corruptLines).toBe(1);
  });

  it("drops the oldest segments beyond the size limit and keeps edges in step", async () => {
    const { store, dir } = await open({ segmentBytes: 2_000, maxBytes: 6_000 });
    const base = Date.now() - 1_000;
    for (let i = 0; i < 40; i++)
      await store.append([flow({ from: demo.web, to: demo.api, port: 8080, time: base + i })]);
    const stats = store.stats();
    expect(stats.bytes).toBeLessThanOrEqual(6_000 + 2_000);
    expect(stats.records).toBeLessThan(40);
    expect((await readdir(dir)).length).toBe(stats.segments);
    const [edge] = store.edges();
    expect(edge!.allowed).toBe(stats.records);
    const kept = store.all();
    expect(kept.at(-1)!.time).toBe(base + 39);
    expect(kept[0]!.time).toBe(base + 40 - stats.records);
  });

  it("drops segments older than the age limit", async () => {
    let now = 10_000_000;
    const { store } = await open({ segmentBytes: 500, maxAgeMs: 60_000, now: () => now });
    await store.append([flow({ from: demo.web, to: demo.api, port: 8080, time: now })]);
    now += 30_000;
    await store.append([flow({ from: demo.api, to: demo.db, port: 5432, time: now })]);
    now += 45_000;
    await store.append([flow({ from: demo.rogue, to: demo.db, port: 5432, verdict: "deny", time: now })]);
    expect(store.all().map((r) => r.source.spiffeId)).toEqual([demo.api.spiffeId, demo.rogue.spiffeId]);
    expect(store.edges().map((e) => e.source.id)).not.toContain(demo.web.spiffeId);
  });

  it("aggregates edges: verdict counts, encryption, methods, paths and the last deciding policy", async () => {
    const { store } = await open();
    await store.append(demoTraffic());
    await store.append([
      flow({
        from: demo.web,
        to: demo.api,
        port: 8080,
        http: { method: "GET", path: "/x" },
        wouldDeny: true,
        policy: null,
        encrypted: false,
      }),
    ]);
    const edge = store.edge(`${demo.web.spiffeId} -> ${demo.api.spiffeId}:8080`)!;
    // Each request once, though both sidecars reported the six demo requests.
    expect(edge).toMatchObject({
      allowed: 6,
      denied: 0,
      wouldDeny: 1,
      encrypted: 6,
      plaintext: 1,
      reports: { caller: 6, callee: 7 },
      lastPolicy: null,
    });
    expect(edge.methods).toEqual({ GET: 6, POST: 1 });
    expect(edge.paths["/api/orders/123"]).toBe(1);
    const rogue = store.edge(`${demo.rogue.spiffeId} -> ${demo.api.spiffeId}:8080`)!;
    expect(rogue).toMatchObject({ allowed: 0, denied: 2, lastVerdict: "deny" });
  });

  it("filters queries by denial, selector, workload, time and limit", async () => {
    const { store } = await open();
    const sent = demoTraffic();
    await store.append(sent);
    expect(store.query({ denied: true }).map((r) => r.source.labels.app)).toEqual([
      "rogue",
      "rogue",
      "rogue",
    ]);
    expect(store.query({ selector: { app: "db" } }).every((r) => r.destination.labels.app === "db")).toBe(
      true,
    );
    expect(store.query({ workload: demo.db.spiffeId })).toHaveLength(5);
    expect(store.query({ limit: 2 }).map((r) => r.id)).toEqual(sent.slice(-2).map((r) => r.id));
    expect(store.query({ since: sent.at(-1)!.time })).toHaveLength(1);
  });
});
