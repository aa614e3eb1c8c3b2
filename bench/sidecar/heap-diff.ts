/**
 * Compares two V8 heap snapshots by what they hold: objects grouped by constructor (closures by
 * function name, other nodes by their V8 type), with the count and self size of each group in both
 * and the difference, largest growth first. What a soak wave leaves behind shows as the groups
 * that grew between the second wave's snapshot and the last one's.
 * Usage: npx tsx bench/sidecar/heap-diff.ts BEFORE.heapsnapshot AFTER.heapsnapshot [--top 30]
 */
import { readFileSync } from "node:fs";

interface Snapshot {
  readonly snapshot: { readonly meta: { readonly node_fields: string[]; readonly node_types: unknown[] } };
  readonly nodes: number[];
  readonly strings: string[];
}

interface Group {
  count: number;
  bytes: number;
}

/** Count and self size per group of one snapshot. */
function groups(file: string): Map<string, Group> {
  const snap = JSON.parse(readFileSync(file, "utf8")) as Snapshot;
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0] as string[];
  const width = fields.length;
  const typeAt = fields.indexOf("type");
  const nameAt = fields.indexOf("name");
  const sizeAt = fields.indexOf("self_size");
  const out = new Map<string, Group>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + typeAt] as number] ?? "?";
    const name = snap.strings[snap.nodes[i + nameAt] as number] ?? "?";
    const key = type === "object" || type === "closure" || type === "native" ? `${type} ${name}` : type;
    const g = out.get(key) ?? { count: 0, bytes: 0 };
    g.count++;
    g.bytes += snap.nodes[i + sizeAt] as number;
    out.set(key, g);
  }
  return out;
}

const [beforeFile, afterFile] = process.argv.slice(2);
if (!beforeFile || !afterFile) {
  process.stderr.write("usage: heap-diff.ts BEFORE.heapsnapshot AFTER.heapsnapshot [--top N]\n");
  process.exit(2);
}
const topIndex = process.argv.indexOf("--top");
const top = topIndex === -1 ? 30 : Number(process.argv[topIndex + 1]);
const before = groups(beforeFile);
const after = groups(afterFile);
const rows = [...new Set([...before.keys(), ...after.keys()])].map((key) => {
  const b = before.get(key) ?? { count: 0, bytes: 0 };
  const a = after.get(key) ?? { count: 0, bytes: 0 };
  return { key, b, a, grew: a.bytes - b.bytes };
});
rows.sort((x, y) => y.grew - x.grew);
const total = (m: Map<string, Group>): number => [...m.values()].reduce((sum, g) => sum + g.bytes, 0);
process.stdout.write(`self size: ${total(before)} → ${total(after)} bytes\n`);
process.stdout.write(
  "| group | count before → after | bytes before → after | grew by |\n| --- | --- | --- | --- |\n",
);
for (const r of rows.slice(0, top)) {
  process.stdout.write(
    `| ${r.key.slice(0, 80)} | ${r.b.count} → ${r.a.count} | ${r.b.bytes} → ${r.a.bytes} | ${r.grew} |\n`,
  );
}
