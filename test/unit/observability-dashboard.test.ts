import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { SidecarMetrics } from "../../sidecar/admin/metrics.ts";
import { registerFastPathMetrics } from "../../sidecar/agent/fast-path-metrics.ts";

/**
 * The Grafana dashboard in examples/observability: every PromQL query parses (promtool's own
 * parser, through `promtool check rules`) and names only metrics a Sigil sidecar exports.
 */

const DASHBOARD = path.join(import.meta.dirname, "../../examples/observability/sigil-mesh.dashboard.json");

interface Panel {
  readonly title?: string;
  readonly targets?: readonly { readonly expr?: string }[];
  readonly panels?: readonly Panel[];
}

interface Dashboard {
  readonly panels: readonly Panel[];
  readonly templating?: { readonly list: readonly { readonly definition?: string }[] };
}

function queries(d: Dashboard): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  const walk = (panels: readonly Panel[]): void => {
    for (const p of panels) {
      for (const t of p.targets ?? [])
        if (t.expr !== undefined) out.push({ where: p.title ?? "?", expr: t.expr });
      walk(p.panels ?? []);
    }
  };
  walk(d.panels);
  for (const v of d.templating?.list ?? []) {
    const m = /^label_values\(\s*([^,]+),/.exec(v.definition ?? "");
    if (m) out.push({ where: `variable ${v.definition}`, expr: (m[1] as string).trim() });
  }
  return out;
}

/** Grafana's interval variables, as a query runs them. */
function expand(expr: string): string {
  return expr.replaceAll("$__rate_interval", "5m").replaceAll("$__interval", "1m");
}

const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "and",
  "or",
  "unless",
  "offset",
  "inf",
  "nan",
]);

/** The metric names a PromQL expression selects. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names: string[] = [];
  for (const m of bare.matchAll(/(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const after = bare.slice((m.index ?? 0) + m[0].length).trimStart();
    if (after.startsWith("(") || KEYWORDS.has(m[0].toLowerCase())) continue;
    names.push(m[0]);
  }
  return names;
}

/** Every series name a sidecar (with the fast path on) can put in a scrape. */
async function exportedNames(): Promise<Set<string>> {
  const metrics = new SidecarMetrics();
  registerFastPathMetrics(metrics.registry, {
    stats: () => Promise.reject(new Error("not read")),
    kernelQueues: () => Promise.resolve([]),
    failOpen: false,
  });
  metrics.watchUpstreamRoutes(() => 0);
  const names = new Set<string>();
  for (const m of metrics.registry.getMetricsAsArray() as unknown as { name: string; type: string }[]) {
    names.add(m.name);
    if (m.type === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(m.name + s);
    if (m.type === "summary") for (const s of ["_sum", "_count"]) names.add(m.name + s);
  }
  return names;
}

function unknownMetrics(d: Dashboard, exported: Set<string>): string[] {
  const problems: string[] = [];
  for (const q of queries(d)) {
    const names = metricNames(expand(q.expr));
    if (names.length === 0) problems.push(`${q.where}: names no metric: ${q.expr}`);
    for (const n of names) if (!exported.has(n)) problems.push(`${q.where}: ${n} is not exported`);
  }
  return problems;
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8")) as Dashboard;

describe("the mesh dashboard", () => {
  it("has queries, and each one parses as PromQL", () => {
    const all = queries(dashboard);
    expect(all.length).toBeGreaterThan(15);
    const dir = mkdtempSync(path.join(tmpdir(), "sigil-dashboard-"));
    try {
      const rules = {
        groups: [
          {
            name: "dashboard",
            rules: all.map((q, i) => ({ record: `dashboard:query${i}`, expr: expand(q.expr) })),
          },
        ],
      };
      const file = path.join(dir, "rules.yaml");
      writeFileSync(file, stringify(rules));
      const check = spawnSync("promtool", ["check", "rules", file], { encoding: "utf8" });
      expect(check.error).toBeUndefined();
      expect({ status: check.status, output: check.stderr }).toEqual({ status: 0, output: "" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("names only metrics a sidecar exports", async () => {
    expect(unknownMetrics(dashboard, await exportedNames())).toEqual([]);
  });

  it("would catch a query naming a metric nobody exports", async () => {
    const broken: Dashboard = {
      panels: [
        {
          title: "typo",
          targets: [{ expr: 'sum by (policy) (rate(sigil_request_total{verdict="deny"}[5m]))' }],
        },
      ],
    };
    expect(unknownMetrics(broken, await exportedNames())).toEqual([
      "typo: sigil_request_total is not exported",
    ]);
  });

  it("reads metric names out of PromQL, not functions, labels or keywords", () => {
    expect(
      metricNames(
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{x=~"b|c",le!="1"}[5m] offset 1h))) / on (y) group_left (z) b_total > bool 0 or vector(0)',
      ),
    ).toEqual(["a_bucket", "b_total"]);
  });
});
