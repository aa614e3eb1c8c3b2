import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import { describe, expect, it } from "vitest";

/**
 * The repository's layering, read from the import statements themselves: folders import in one
 * direction only, and each top-level folder only from those below it (core < xds < controlplane,
 * sidecar < inject < cmd). Type-only imports count: a reader walks them just the same.
 */

const ROOT = normalize(join(import.meta.dirname, "../.."));
const LAYERED = ["core", "xds", "controlplane", "sidecar", "inject", "cmd"] as const;

/** What each top-level folder may import besides itself. */
const MAY_IMPORT: Record<(typeof LAYERED)[number], readonly string[]> = {
  core: [],
  xds: ["core"],
  controlplane: ["core", "xds"],
  sidecar: ["core", "xds", "native"],
  inject: ["core", "controlplane"],
  cmd: ["core", "xds", "controlplane", "sidecar", "inject", "native"],
};

const IMPORT =
  /(?:^|[\s;])(?:import|export)\s(?:[^;"']*?\sfrom\s)?["'](\.{1,2}\/[^"']+)["']|import\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g;

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== "static" && entry.name !== "node_modules") out.push(...sourceFiles(path));
    } else if (entry.name.endsWith(".ts")) {
      out.push(path);
    }
  }
  return out;
}

/** file → files it imports, every path relative to the repository root. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of LAYERED.flatMap(sourceFiles)) {
    const text = readFileSync(join(ROOT, file), "utf8");
    const targets = [...text.matchAll(IMPORT)].map((m) =>
      normalize(join(dirname(file), (m[1] ?? m[2]) as string)),
    );
    graph.set(file, targets);
  }
  return graph;
}

/** Strongly connected components with more than one member: each is a cycle. */
function cycles(edges: ReadonlyMap<string, ReadonlySet<string>>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
      }
    }
    if (low.get(v) !== index.get(v)) return;
    const component: string[] = [];
    let w: string;
    do {
      w = stack.pop() as string;
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    if (component.length > 1) found.push(component.sort());
  };
  for (const v of edges.keys()) if (!index.has(v)) visit(v);
  return found;
}

const topOf = (path: string): string => path.split("/")[0] as string;

function edgesOf(graph: ReadonlyMap<string, readonly string[]>, node: (file: string) => string) {
  const edges = new Map<string, Set<string>>();
  for (const [file, targets] of graph) {
    const from = node(file);
    const set = edges.get(from) ?? new Set<string>();
    edges.set(from, set);
    for (const target of targets) if (node(target) !== from) set.add(node(target));
  }
  return edges;
}

/** Imports that reach a top-level folder the importer's folder may not use. */
function wrongImports(graph: ReadonlyMap<string, readonly string[]>): string[] {
  const wrong: string[] = [];
  for (const [file, targets] of graph) {
    const top = topOf(file) as (typeof LAYERED)[number];
    for (const target of targets) {
      const to = topOf(target);
      if (to !== top && !MAY_IMPORT[top].includes(to)) wrong.push(`${file} -> ${target}`);
    }
  }
  return wrong;
}

const graph = importGraph();

describe("layering", () => {
  it("reads the sources it judges", () => {
    for (const top of LAYERED)
      expect(
        [...graph.keys()].some((f) => topOf(f) === top),
        top,
      ).toBe(true);
    expect(graph.get(join("cmd", "sigil", "commands", "sidecar.ts"))).toContain(
      join("sidecar", "agent", "agent.ts"),
    );
  });

  it("has no folder that imports a folder importing it back", () => {
    expect(cycles(edgesOf(graph, dirname))).toEqual([]);
  });

  it("has no file that imports a file importing it back", () => {
    expect(cycles(edgesOf(graph, (f) => f))).toEqual([]);
  });

  it("imports each top-level folder only from the folders below it", () => {
    expect(wrongImports(graph)).toEqual([]);
  });

  it("finds a cycle and a wrong import when there is one", () => {
    const edges = new Map([
      ["a", new Set(["b"])],
      ["b", new Set(["c"])],
      ["c", new Set(["a"])],
      ["d", new Set(["a"])],
    ]);
    expect(cycles(edges)).toEqual([["a", "b", "c"]]);
    const upward = new Map([
      ["controlplane/x.ts", ["sidecar/y.ts", "core/z.ts"]],
      ["core/z.ts", ["xds/w.ts"]],
    ]);
    expect(wrongImports(upward)).toEqual(["controlplane/x.ts -> sidecar/y.ts", "core/z.ts -> xds/w.ts"]);
  });
});
