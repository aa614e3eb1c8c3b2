import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ModeStore } from "../../controlplane/visibility/mode.ts";

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function file(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "sigil-mode-"));
  dirs.push(dir);
  return join(dir, "modes.json");
}

const api = { spiffeId: "spiffe://sigil.local/ns/shop/sa/api", labels: { app: "api", "k8s.ns": "shop" } };
const web = { spiffeId: "spiffe://sigil.local/ns/shop/sa/web", labels: { app: "web", "k8s.ns": "shop" } };
const vm = { spiffeId: "spiffe://sigil.local/workload/batch", labels: { app: "batch", namespace: "jobs" } };

describe("enforcement mode store", () => {
  it("lets the most specific setting win and switches at run time with a change event", async () => {
    const modes = await ModeStore.open({ defaultMode: "enforce" });
    const events: string[] = [];
    modes.on("change", (s) => events.push(s.mesh));
    expect(modes.modeFor(api)).toEqual({ mode: "enforce", from: "mesh" });
    await modes.set({ kind: "namespace", name: "shop" }, "observe");
    expect(modes.modeFor(api)).toEqual({ mode: "observe", from: "namespace" });
    expect(modes.modeFor(vm)).toEqual({ mode: "enforce", from: "mesh" });
    await modes.set({ kind: "workload", spiffeId: api.spiffeId }, "enforce");
    expect(modes.modeFor(api)).toEqual({ mode: "enforce", from: "workload" });
    expect(modes.modeFor(web)).toEqual({ mode: "observe", from: "namespace" });
    await modes.set({ kind: "mesh" }, "observe");
    await modes.set({ kind: "namespace", name: "jobs" }, "enforce");
    expect(modes.modeFor(vm)).toEqual({ mode: "enforce", from: "namespace" });
    await modes.set({ kind: "workload", spiffeId: api.spiffeId }, null);
    expect(modes.modeFor(api)).toEqual({ mode: "observe", from: "namespace" });
    expect(events).toHaveLength(5);
  });

  it("persists every change and reloads it", async () => {
    const f = await file();
    const modes = await ModeStore.open({ file: f });
    await modes.set({ kind: "namespace", name: "shop" }, "observe");
    const again = await ModeStore.open({ file: f });
    expect(again.settings()).toEqual({ mesh: "enforce", namespaces: { shop: "observe" }, workloads: {} });
    expect(JSON.parse(await readFile(f, "utf8"))).toEqual(again.settings());
  });

  it("refuses bad input with a reason and keeps the previous settings", async () => {
    const modes = await ModeStore.open();
    await expect(modes.set({ kind: "mesh" }, null)).rejects.toThrow(/cannot be cleared/);
    await expect(modes.set({ kind: "workload", spiffeId: "web" }, "observe")).rejects.toThrow(
      /not a SPIFFE ID/,
    );
    await expect(modes.set({ kind: "namespace", name: "a b" }, "observe")).rejects.toThrow(
      /not a valid name/,
    );
    await expect(modes.set({ kind: "mesh" }, "permissive" as "observe")).rejects.toThrow(
      /enforce or observe/,
    );
    expect(modes.settings()).toEqual({ mesh: "enforce", namespaces: {}, workloads: {} });
    const f = await file();
    await writeFile(f, JSON.stringify({ mesh: "observe", namespaces: { shop: "maybe" }, workloads: {} }));
    await expect(ModeStore.open({ file: f })).rejects.toThrow(/namespaces\.shop/);
  });
});
