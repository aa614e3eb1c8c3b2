import { basename } from "node:path";
import { checkPolicySet, formatPolicyError, parsePolicyDocuments } from "../../core/policy/index.ts";
import type { ParsedDocument, PolicyDocument, PolicyError } from "../../core/policy/index.ts";
import type { PolicyText } from "./sources.ts";
import type { PolicySnapshot } from "./store.ts";

/**
 * The policy files as the API shows them and as a proposed write would leave them. The watched
 * directory (or etcd) and `sigil policy apply` are one set of files named by their base names: a
 * write replaces the file of that name, whoever wrote it last.
 */

/** One policy file as written, with what it defines and whether that is in effect. */
export interface PolicyFileView {
  readonly name: string;
  readonly yaml: string;
  readonly policies: readonly { kind: string; name: string }[];
  /** Empty when the file's current text is what the store compiled; otherwise why it is not. */
  readonly errors: readonly string[];
}

/** A file as a caller proposes it: its name in the set and its text. */
export interface ProposedFile {
  readonly name: string;
  readonly yaml: string;
}

export interface PolicyChange {
  readonly kind: string;
  readonly name: string;
  readonly file: string;
}

export interface PolicyDiff {
  readonly added: readonly PolicyChange[];
  readonly changed: readonly PolicyChange[];
  readonly removed: readonly PolicyChange[];
}

/** The name a file has in the set: its base name, whether it lives in a directory or in etcd. */
export function fileNameOf(file: string): string {
  return basename(file);
}

export function describeFiles(texts: readonly PolicyText[], snapshot: PolicySnapshot): PolicyFileView[] {
  return texts.map(({ file, text }) => {
    const errors = snapshot.errors.filter((e) => e.file === file).map(formatPolicyError);
    if (text instanceof Error) return { name: fileNameOf(file), yaml: "", policies: [], errors };
    const parsed = parsePolicyDocuments(text, file);
    const policies = parsed.ok
      ? parsed.documents.map((d) => ({ kind: d.document.kind, name: d.document.metadata.name }))
      : [];
    return { name: fileNameOf(file), yaml: text, policies, errors };
  });
}

/**
 * The documents the store would compile once `proposed` replaced the files of the same names:
 * every other file contributes what its text defines when that validates, else what of it is in
 * effect (as the store itself does). Errors name each file, line and field; a policy name defined
 * in two files is one of them.
 */
export function proposedSet(
  texts: readonly PolicyText[],
  snapshot: PolicySnapshot,
  proposed: readonly ProposedFile[],
): { ok: true; documents: ParsedDocument[] } | { ok: false; errors: PolicyError[] } {
  const replaced = new Set(proposed.map((f) => f.name));
  const documents: ParsedDocument[] = [];
  const errors: PolicyError[] = [];
  for (const { file, text } of texts) {
    if (replaced.has(fileNameOf(file))) continue;
    const parsed = typeof text === "string" ? parsePolicyDocuments(text, file) : null;
    if (parsed?.ok) documents.push(...parsed.documents);
    else documents.push(...snapshot.documents.filter((d) => d.source.file === file));
  }
  for (const f of proposed) {
    const parsed = parsePolicyDocuments(f.yaml, f.name);
    if (parsed.ok) documents.push(...parsed.documents);
    else errors.push(...parsed.errors);
  }
  errors.push(...checkPolicySet(documents));
  return errors.length > 0 ? { ok: false, errors } : { ok: true, documents };
}

/** Policies added, changed (same name, different content) and removed between two sets. */
export function diffPolicies(
  before: readonly ParsedDocument[],
  after: readonly ParsedDocument[],
): PolicyDiff {
  const byName = (docs: readonly ParsedDocument[]) => new Map(docs.map((d) => [d.document.metadata.name, d]));
  const old = byName(before);
  const next = byName(after);
  const change = (d: ParsedDocument): PolicyChange => ({
    kind: d.document.kind,
    name: d.document.metadata.name,
    file: fileNameOf(d.source.file),
  });
  const same = (a: PolicyDocument, b: PolicyDocument) => JSON.stringify(a) === JSON.stringify(b);
  return {
    added: after.filter((d) => !old.has(d.document.metadata.name)).map(change),
    changed: after
      .filter((d) => {
        const prior = old.get(d.document.metadata.name);
        return prior !== undefined && !same(prior.document, d.document);
      })
      .map(change),
    removed: before.filter((d) => !next.has(d.document.metadata.name)).map(change),
  };
}
