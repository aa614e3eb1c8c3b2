import { LineCounter, parseAllDocuments, stringify } from "yaml";
import { InjectError } from "./errors.ts";
import type { InjectSettings } from "./settings.ts";
import { injectObject, type Outcome } from "./workloads.ts";

export interface DocumentReport {
  readonly index: number;
  readonly object: string;
  readonly outcome: Outcome;
}

export interface InjectedStream {
  readonly yaml: string;
  readonly report: readonly DocumentReport[];
}

const describe = (o: unknown): string => {
  const d = o as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
  const ns = typeof d.metadata?.namespace === "string" ? `${d.metadata.namespace}/` : "";
  return `${String(d.kind)} ${ns}${String(d.metadata?.name ?? "(unnamed)")}`;
};

/**
 * `sigil inject` over a YAML stream: every document is parsed first (one bad document refuses the
 * whole stream, so nothing half-injected is ever applied), then each is injected and written back in
 * order. `source` names the input in errors (a file path or `stdin`).
 */
export function injectYaml(text: string, settings: InjectSettings, source: string): InjectedStream {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false });
  if (!Array.isArray(docs)) throw new InjectError(source, "", "not a YAML stream");
  const objects: { index: number; value: unknown }[] = [];
  docs.forEach((doc, i) => {
    const where = `${source} document ${i + 1}`;
    const error = doc.errors[0];
    if (error) {
      const at = lines.linePos(error.pos[0]);
      throw new InjectError(`${where} (line ${at.line})`, "", `not YAML: ${error.message.split("\n")[0]}`);
    }
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    // An empty document (a stray `---`) carries nothing to inject or to keep.
    if (value !== null && value !== undefined) objects.push({ index: i + 1, value });
  });
  if (objects.length === 0) throw new InjectError(source, "", "no Kubernetes object in the input");
  const report: DocumentReport[] = [];
  const out = objects.map(({ index, value }) => {
    const { object, outcome } = injectObject(value, settings, `${source} document ${index}`);
    report.push({ index, object: describe(object), outcome });
    return stringify(object, { lineWidth: 0 });
  });
  return { yaml: out.join("---\n"), report };
}
