import { LineCounter, isMap, isPair, isScalar, isSeq, parseAllDocuments, stringify } from "yaml";
import type { Document, Node } from "yaml";
import type { z } from "zod";
import { KINDS, authorizationPolicySchema, peerAuthenticationSchema } from "./schema.ts";
import type { PolicyDocument } from "./schema.ts";

/**
 * Policy text → validated documents, or errors that name file, line, column, the field path and the
 * reason. Positions come from the YAML node ranges; reasons from the schema.
 */

export interface SourceLocation {
  readonly file: string;
  /** 1-based */
  readonly line: number;
  /** 1-based */
  readonly column: number;
}

export interface PolicyError {
  readonly file: string;
  /** 1-based; absent when the input did not come from text. */
  readonly line?: number;
  readonly column?: number;
  /** The field path, e.g. `spec.ingress[0].http.paths[1]`; "" for the document itself. */
  readonly path: string;
  readonly message: string;
}

export interface ParsedDocument {
  readonly document: PolicyDocument;
  readonly source: SourceLocation;
}

export type ParseResult =
  | { readonly ok: true; readonly documents: readonly ParsedDocument[] }
  | { readonly ok: false; readonly errors: readonly PolicyError[] };

export type ValidateResult =
  | { readonly ok: true; readonly document: PolicyDocument }
  | { readonly ok: false; readonly errors: readonly PolicyError[] };

/** Larger policy files are refused rather than parsed. */
export const MAX_POLICY_TEXT_BYTES = 4 * 1024 * 1024;
/** Bounds alias expansion so a small file cannot expand into a huge value. */
const MAX_ALIAS_COUNT = 100;

type PathSegment = string | number;

export function formatFieldPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(String(seg)))
      out += out === "" ? String(seg) : `.${String(seg)}`;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out;
}

/** `file:line:col: path: message` (position and path omitted when unknown). */
export function formatPolicyError(e: PolicyError): string {
  const where = e.line === undefined ? e.file : `${e.file}:${e.line}:${e.column ?? 1}`;
  return e.path === "" ? `${where}: ${e.message}` : `${where}: ${e.path}: ${e.message}`;
}

function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let v = value;
  for (const seg of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[seg];
  }
  return v;
}

interface Issue {
  readonly path: readonly PathSegment[];
  readonly message: string;
}

function issuesOf(error: z.ZodError, value: unknown): Issue[] {
  const out: Issue[] = [];
  for (const issue of error.issues) {
    const path = issue.path.filter((p): p is PathSegment => typeof p !== "symbol");
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) out.push({ path: [...path, key], message: `unknown field "${key}"` });
    } else if (issue.code !== "custom" && valueAt(value, path) === undefined) {
      out.push({ path, message: "required field is missing" });
    } else {
      out.push({ path, message: issue.message });
    }
  }
  return out;
}

function schemaIssues(value: unknown): { document: PolicyDocument } | { issues: Issue[] } {
  if (value === null || typeof value !== "object" || Array.isArray(value))
    return { issues: [{ path: [], message: "a policy document must be a mapping" }] };
  const kind = (value as Record<string, unknown>).kind;
  if (kind === undefined) return { issues: [{ path: ["kind"], message: "required field is missing" }] };
  if (kind === "AuthorizationPolicy") {
    const r = authorizationPolicySchema.safeParse(value);
    return r.success ? { document: r.data } : { issues: issuesOf(r.error, value) };
  }
  if (kind === "PeerAuthentication") {
    const r = peerAuthenticationSchema.safeParse(value);
    return r.success ? { document: r.data } : { issues: issuesOf(r.error, value) };
  }
  return {
    issues: [
      { path: ["kind"], message: `unknown kind ${JSON.stringify(kind)} (expected ${KINDS.join(" or ")})` },
    ],
  };
}

/** Validates a plain value (from JSON, an API body or an xDS resource). Errors carry no line numbers. */
export function validatePolicyDocument(value: unknown, origin: string): ValidateResult {
  const r = schemaIssues(value);
  if ("document" in r) return { ok: true, document: r.document };
  return {
    ok: false,
    errors: r.issues.map((i) => ({ file: origin, path: formatFieldPath(i.path), message: i.message })),
  };
}

/** The YAML node an issue path points at: the key node for unknown fields, else the deepest existing node. */
function nodeOffset(doc: Document, path: readonly PathSegment[], pointAtKey: boolean): number {
  let node: unknown = doc.contents;
  let offset = (doc.contents as Node | null)?.range?.[0] ?? 0;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i];
    const last = i === path.length - 1;
    if (isMap(node)) {
      const pair = node.items.find(
        (p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg),
      );
      if (!pair) break;
      const key = pair.key as Node;
      if (last && pointAtKey) return key.range?.[0] ?? offset;
      node = pair.value ?? key;
      offset = (pair.value as Node | null)?.range?.[0] ?? key.range?.[0] ?? offset;
    } else if (isSeq(node) && typeof seg === "number") {
      const item = node.items[seg] as Node | undefined;
      if (!item) break;
      node = item;
      offset = item.range?.[0] ?? offset;
    } else {
      break;
    }
  }
  return offset;
}

function firstLine(message: string): string {
  const cut = message.search(/ at line \d+, column \d+|\n/);
  return (cut >= 0 ? message.slice(0, cut) : message).trim();
}

/** Parses a YAML stream of policy documents (`---` separated). All-or-nothing: any error fails the text. */
export function parsePolicyDocuments(text: string, fileName: string): ParseResult {
  if (Buffer.byteLength(text, "utf8") > MAX_POLICY_TEXT_BYTES)
    return {
      ok: false,
      errors: [{ file: fileName, path: "", message: `file is larger than ${MAX_POLICY_TEXT_BYTES} bytes` }],
    };
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  const errors: PolicyError[] = [];
  const documents: ParsedDocument[] = [];
  const at = (offset: number): { line: number; column: number } => {
    const pos = lineCounter.linePos(offset);
    return { line: pos.line, column: pos.col };
  };
  for (const doc of Array.isArray(docs) ? docs : []) {
    const yamlProblems = [...doc.errors, ...doc.warnings];
    for (const e of yamlProblems) {
      const pos = e.linePos?.[0];
      const where = pos ? { line: pos.line, column: pos.col } : at(e.pos[0]);
      errors.push({ file: fileName, ...where, path: "", message: firstLine(e.message) });
    }
    // A document with nothing but comments (or a stray `---`) carries no policy.
    const empty = doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null);
    if (yamlProblems.length > 0 || empty) continue;
    const start = at((doc.contents as Node).range?.[0] ?? 0);
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
    } catch (err) {
      errors.push({ file: fileName, ...start, path: "", message: firstLine((err as Error).message) });
      continue;
    }
    const r = schemaIssues(value);
    if ("document" in r) {
      documents.push({ document: r.document, source: { file: fileName, ...start } });
      continue;
    }
    for (const issue of r.issues) {
      const unknownField = issue.message.startsWith("unknown field");
      errors.push({
        file: fileName,
        ...at(nodeOffset(doc, issue.path, unknownField)),
        path: formatFieldPath(issue.path),
        message: issue.message,
      });
    }
  }
  if (errors.length > 0) {
    errors.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
    return { ok: false, errors };
  }
  return { ok: true, documents };
}

/** Cross-document checks over everything that will form one set: names must be unique. */
export function checkPolicySet(documents: readonly ParsedDocument[]): PolicyError[] {
  const first = new Map<string, SourceLocation>();
  const errors: PolicyError[] = [];
  for (const { document, source } of documents) {
    const name = document.metadata.name;
    const prior = first.get(name);
    if (prior) {
      errors.push({
        ...source,
        path: "metadata.name",
        message: `name "${name}" is already used at ${prior.file}:${prior.line}:${prior.column}`,
      });
    } else {
      first.set(name, source);
    }
  }
  return errors;
}

/**
 * Renders documents as one YAML stream that parsePolicyDocuments reads back to the same documents.
 * Objects used twice (a suggested policy shares peers between rules) are written out each time:
 * `&a1`/`*a1` anchors are valid YAML but not something a person reviewing a policy should decode.
 */
export function stringifyPolicyDocuments(documents: readonly PolicyDocument[]): string {
  return documents.map((d) => stringify(d, { aliasDuplicateObjects: false })).join("---\n");
}
