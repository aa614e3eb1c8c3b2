import type { NetworkPolicy } from "kubernetes-types/networking/v1.js";
import { LineCounter, parseAllDocuments } from "yaml";
import type { z } from "zod";
import { formatFieldPath } from "../../core/policy/index.ts";
import { NetworkPolicyError, type Finding } from "./errors.ts";
import { namespaceSchema, networkPolicySchema } from "./schema.ts";

/** One input: a file (or stdin) and its text. */
export interface ImportSource {
  readonly name: string;
  readonly text: string;
}

export interface ReadPolicy {
  /** `<file> document <n> (NetworkPolicy <ns>/<name>)`, the prefix of every message about it. */
  readonly where: string;
  readonly namespace: string;
  readonly policy: NetworkPolicy;
}

export interface ReadInput {
  readonly policies: readonly ReadPolicy[];
  /** Labels of the Namespace objects in the input (each with `kubernetes.io/metadata.name`); null when none was given. */
  readonly namespaces: ReadonlyMap<string, Readonly<Record<string, string>>> | null;
  /** Objects of other kinds, passed over. */
  readonly skipped: readonly Finding[];
}

const LISTS = new Set(["List", "NetworkPolicyList", "NamespaceList"]);

interface Item {
  readonly where: string;
  readonly value: unknown;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function checked<T extends z.ZodType>(schema: T, value: unknown, where: string): z.output<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new NetworkPolicyError(where, formatFieldPath(issue?.path ?? []), issue?.message ?? "invalid");
}

/** Every object of a source, list items unpacked; a document that is not YAML is refused with its line. */
function itemsOf(source: ImportSource): Item[] {
  const lines = new LineCounter();
  const docs = parseAllDocuments(source.text, { lineCounter: lines, prettyErrors: false });
  if (!Array.isArray(docs)) throw new NetworkPolicyError(source.name, "", "not a YAML stream");
  const items: Item[] = [];
  docs.forEach((doc, i) => {
    const where = `${source.name} document ${i + 1}`;
    const error = doc.errors[0];
    if (error) {
      const at = lines.linePos(error.pos[0]);
      throw new NetworkPolicyError(
        `${where} (line ${at.line})`,
        "",
        `not YAML: ${error.message.split("\n")[0]}`,
      );
    }
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) return;
    if (!isObject(value))
      throw new NetworkPolicyError(where, "", "not a Kubernetes object (a mapping with kind)");
    if (typeof value.kind === "string" && LISTS.has(value.kind)) {
      if (!Array.isArray(value.items))
        throw new NetworkPolicyError(where, "items", "a list needs an items array");
      value.items.forEach((item, j) => items.push({ where: `${where} item ${j + 1}`, value: item }));
    } else items.push({ where, value });
  });
  return items;
}

const describe = (v: Record<string, unknown>): string => {
  const meta = isObject(v.metadata) ? v.metadata : {};
  const ns = typeof meta.namespace === "string" ? `${meta.namespace}/` : "";
  return `${String(v.kind)} ${ns}${typeof meta.name === "string" ? meta.name : "(unnamed)"}`;
};

/**
 * Reads NetworkPolicies (and Namespaces, whose labels namespace selectors are resolved against) from
 * every source; a policy without a namespace is in `defaultNamespace`, as kubectl would put it.
 */
export function readNetworkPolicies(sources: readonly ImportSource[], defaultNamespace: string): ReadInput {
  const policies: ReadPolicy[] = [];
  const skipped: Finding[] = [];
  let namespaces: Map<string, Record<string, string>> | null = null;
  const seen = new Map<string, string>();
  for (const item of sources.flatMap(itemsOf)) {
    if (!isObject(item.value)) throw new NetworkPolicyError(item.where, "", "not a Kubernetes object");
    const where = `${item.where} (${describe(item.value)})`;
    const kind = item.value.kind;
    if (kind === "Namespace") {
      const ns = checked(namespaceSchema, item.value, where);
      namespaces ??= new Map();
      namespaces.set(ns.metadata.name, {
        ...ns.metadata.labels,
        "kubernetes.io/metadata.name": ns.metadata.name,
      });
    } else if (typeof kind === "string" && kind.endsWith("NetworkPolicy")) {
      // Another API's NetworkPolicy (Calico, Cilium, AdminNetworkPolicy) means something else: refused.
      const policy: NetworkPolicy = checked(networkPolicySchema, item.value, where);
      const namespace = policy.metadata?.namespace ?? defaultNamespace;
      const key = `${namespace}/${policy.metadata?.name ?? ""}`;
      const first = seen.get(key);
      if (first !== undefined)
        throw new NetworkPolicyError(where, "metadata.name", `NetworkPolicy ${key} is also ${first}`);
      seen.set(key, item.where);
      policies.push({ where: `${item.where} (NetworkPolicy ${key})`, namespace, policy });
    } else {
      skipped.push({
        kind: "note",
        document: where,
        field: "kind",
        message: "not a NetworkPolicy or Namespace: passed over",
      });
    }
  }
  if (policies.length === 0)
    throw new NetworkPolicyError(
      sources.map((s) => s.name).join(", ") || "input",
      "",
      "no NetworkPolicy in the input",
    );
  return { policies, namespaces, skipped };
}
