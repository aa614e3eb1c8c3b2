import { mkdtemp, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { PolicyStore } from "../../controlplane/policy-store/store.ts";
import type { PolicySnapshot } from "../../controlplane/policy-store/store.ts";
import { evaluate, formatPolicyError } from "../../core/policy/index.ts";
import type { CompiledPolicySet } from "../../core/policy/index.ts";
import { workload } from "./policy-helpers.ts";

function policy(name: string, app: string, from: string): string {
  return `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: ${name} }
spec:
  selector: { matchLabels: { app: ${app} } }
  ingress:
    - action: allow
      from: [{ matchLabels: { app: ${from} } }]
`;
}

function allows(set: CompiledPolicySet, from: string, to: string): boolean {
  return (
    evaluate(set, {
      direction: "ingress",
      local: { labels: { app: to } },
      peer: workload({ app: from }),
      port: 8080,
      mode: "enforce",
    }).verdict === "allow"
  );
}

/** Resolves with the first snapshot that satisfies `until`; fails after a bounded wait. */
function nextSnapshot(store: PolicyStore, until: (s: PolicySnapshot) => boolean): Promise<PolicySnapshot> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`no matching policy snapshot; current: ${JSON.stringify(store.current().errors)}`));
    }, 10_000);
    const stop = store.onChange((s) => {
      if (!until(s)) return;
      clearTimeout(timer);
      stop();
      resolve(s);
    });
  });
}

let dir: string;
let store: PolicyStore | null = null;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "sg-policy-"));
});

afterEach(async () => {
  await store?.close();
  store = null;
  await rm(dir, { recursive: true, force: true });
});

describe("policy store loading", () => {
  it("loads .yaml and .yml files, ignoring dotfiles and other files", async () => {
    await writeFile(join(dir, "a.yaml"), policy("a", "api", "web"));
    await writeFile(join(dir, "b.yml"), policy("b", "db", "api"));
    await writeFile(join(dir, ".c.yaml"), policy("c", "api", "rogue"));
    await writeFile(join(dir, "d.yaml.bak"), policy("d", "api", "rogue"));
    store = await PolicyStore.open({ directory: dir, watch: false });
    const s = store.current();
    expect(s.errors).toEqual([]);
    expect(s.revision).toBe(1);
    expect(s.documents.map((d) => d.document.metadata.name)).toEqual(["a", "b"]);
    expect(s.documents[0]?.source).toEqual({ file: join(dir, "a.yaml"), line: 1, column: 1 });
    expect(allows(s.set, "web", "api")).toBe(true);
    expect(allows(s.set, "api", "db")).toBe(true);
    expect(allows(s.set, "rogue", "api")).toBe(false);
  });

  it("a file that never validated contributes nothing and is reported with its position", async () => {
    await writeFile(join(dir, "good.yaml"), policy("good", "api", "web"));
    await writeFile(
      join(dir, "bad.yaml"),
      policy("bad", "db", "api").replace("action: allow", "action: alow"),
    );
    store = await PolicyStore.open({ directory: dir, watch: false });
    const s = store.current();
    expect(s.documents.map((d) => d.document.metadata.name)).toEqual(["good"]);
    expect(s.errors.map(formatPolicyError)).toEqual([
      `${join(dir, "bad.yaml")}:7:15: spec.ingress[0].action: Invalid option: expected one of "allow"|"deny"|"log"`,
    ]);
    expect(allows(s.set, "api", "db")).toBe(false);
  });

  it("refuses a directory that does not exist", async () => {
    await expect(PolicyStore.open({ directory: join(dir, "missing"), watch: false })).rejects.toThrow(
      /ENOENT/,
    );
  });

  it("duplicate names across files keep the previous set and name both places", async () => {
    await writeFile(join(dir, "a.yaml"), policy("shared", "api", "web"));
    store = await PolicyStore.open({ directory: dir, watch: false });
    const before = store.current();
    await writeFile(join(dir, "b.yaml"), policy("shared", "db", "api"));
    const after = await store.reload();
    expect(after.set).toBe(before.set);
    expect(after.revision).toBe(before.revision);
    expect(after.errors.map(formatPolicyError)).toEqual([
      `${join(dir, "b.yaml")}:1:1: metadata.name: name "shared" is already used at ${join(dir, "a.yaml")}:1:1`,
    ]);
  });
});

describe("policy store watching", () => {
  it("applies an edit, keeps the last good version on a bad edit, and recovers", async () => {
    const file = join(dir, "api.yaml");
    await writeFile(file, policy("api-ingress", "api", "web"));
    store = await PolicyStore.open({ directory: dir, debounceMs: 10 });
    const first = store.current();
    expect(allows(first.set, "web", "api")).toBe(true);

    const edited = nextSnapshot(store, (s) => s.revision > first.revision);
    await writeFile(file, policy("api-ingress", "api", "batch"));
    const second = await edited;
    expect(allows(second.set, "web", "api")).toBe(false);
    expect(allows(second.set, "batch", "api")).toBe(true);
    // the old set is untouched: holders of the old reference keep a consistent view
    expect(allows(first.set, "web", "api")).toBe(true);

    const broken = nextSnapshot(store, (s) => s.errors.length > 0);
    await writeFile(file, policy("api-ingress", "api", "web").replace("matchLabels", "matchLabel"));
    const third = await broken;
    expect(third.revision).toBe(second.revision);
    expect(third.set).toBe(second.set);
    expect(formatPolicyError(third.errors[0]!)).toBe(
      `${file}:5:15: spec.selector.matchLabel: unknown field "matchLabel"`,
    );

    const fixed = nextSnapshot(store, (s) => s.errors.length === 0);
    await writeFile(file, policy("api-ingress", "api", "web"));
    const fourth = await fixed;
    expect(fourth.revision).toBe(second.revision + 1);
    expect(allows(fourth.set, "web", "api")).toBe(true);
  });

  it("an emptied file keeps its last good version until it is deleted or refilled", async () => {
    const file = join(dir, "web.yaml");
    await writeFile(file, policy("web-ingress", "web", "api"));
    store = await PolicyStore.open({ directory: dir, watch: false });
    const before = store.current();
    await writeFile(file, "");
    const emptied = await store.reload();
    expect(emptied.set).toBe(before.set);
    expect(emptied.errors.map(formatPolicyError)).toEqual([
      `${file}: file is empty; delete it to remove its policies`,
    ]);
    await writeFile(file, policy("web-ingress", "web", "api"));
    const refilled = await store.reload();
    expect(refilled.errors).toEqual([]);
    expect(refilled.set).toBe(before.set);
  });

  it("picks up new files and drops deleted ones", async () => {
    store = await PolicyStore.open({ directory: dir, debounceMs: 10 });
    expect(store.current().documents).toEqual([]);
    const added = nextSnapshot(store, (s) => s.documents.length === 1);
    await writeFile(join(dir, "db.yaml"), policy("db-ingress", "db", "api"));
    expect(allows((await added).set, "api", "db")).toBe(true);
    const removed = nextSnapshot(store, (s) => s.documents.length === 0);
    await unlink(join(dir, "db.yaml"));
    expect(allows((await removed).set, "api", "db")).toBe(false);
  });
});
