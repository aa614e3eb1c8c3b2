import type { AttestedLabel, LabelProvenance, Labels } from "../labels.ts";
import { labelKeyProblem, labelValueProblem } from "../labels.ts";
import { reservedKeyProblem } from "../label-provenance.ts";
import {
  DerError,
  TAG_BOOLEAN,
  TAG_OCTET_STRING,
  TAG_OID,
  TAG_SEQUENCE,
  TAG_UTF8_STRING,
  decodeUtf8,
  encodeOidContent,
  encodeSequence,
  encodeTlv,
  encodeUtf8String,
  readChildren,
  readExactly,
  readTlv,
} from "./der.ts";

/**
 * Object identifier of Sigil's workload-label certificate extension. It lives under the `2.25`
 * arc (ITU-T X.667: the integer value of a UUID, no registration needed), so it collides with no
 * one's extension. The UUID is 00000000-0000-0000-0000-3fb7844ec4a9: its integer fits in 46 bits,
 * because the ASN.1 stack that writes certificates re-encodes OIDs through JavaScript numbers and
 * would corrupt a larger arc. The encoding is described in README.md next to this file.
 */
export const SIGIL_LABELS_OID = "2.25.70057431319721";

const SIGIL_LABELS_OID_DER = encodeOidContent(SIGIL_LABELS_OID);

/** Upper bound on labels in one certificate: keeps certificates small and decoding bounded. */
export const MAX_LABELS = 256;

const PROVENANCES: ReadonlySet<string> = new Set<LabelProvenance>([
  "join-token",
  "k8s-sat",
  "k8s-api",
  "proc",
  "metadata-file",
  "static",
  "scanner",
]);

/** The extension's value could not be decoded or breaks a rule of the encoding. */
export class LabelExtensionError extends Error {}

function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/** Canonical order: by key, compared as UTF-8 bytes. */
export function sortLabels(labels: readonly AttestedLabel[]): AttestedLabel[] {
  return [...labels].sort((a, b) => compareKeys(a.key, b.key));
}

/** DER encoding of the labels (the extension's `extnValue` content). Throws on invalid labels. */
export function encodeLabelsExtension(labels: readonly AttestedLabel[]): Buffer {
  if (labels.length > MAX_LABELS) throw new LabelExtensionError(`more than ${MAX_LABELS} labels`);
  const sorted = sortLabels(labels);
  for (let i = 0; i < sorted.length; i++) {
    const label = sorted[i] as AttestedLabel;
    const problem =
      labelKeyProblem(label.key) ??
      reservedKeyProblem(label.key) ??
      labelValueProblem(label.key, label.value);
    if (problem) throw new LabelExtensionError(problem);
    if (!PROVENANCES.has(label.provenance)) {
      throw new LabelExtensionError(`label "${label.key}" has unknown provenance "${label.provenance}"`);
    }
    if (i > 0 && sorted[i - 1]?.key === label.key)
      throw new LabelExtensionError(`label "${label.key}" appears twice`);
  }
  return encodeSequence(
    sorted.map((l) =>
      encodeSequence([encodeUtf8String(l.key), encodeUtf8String(l.value), encodeUtf8String(l.provenance)]),
    ),
  );
}

/** Decodes the extension value; rejects anything that is not the canonical encoding. */
export function decodeLabelsExtension(der: Buffer): AttestedLabel[] {
  try {
    const outer = readExactly(der, TAG_SEQUENCE);
    const entries = readChildren(outer.content);
    if (entries.length > MAX_LABELS) throw new LabelExtensionError(`more than ${MAX_LABELS} labels`);
    const out: AttestedLabel[] = [];
    for (const [index, entry] of entries.entries()) {
      if (entry.tag !== TAG_SEQUENCE) throw new LabelExtensionError(`label ${index} is not a SEQUENCE`);
      const fields = readChildren(entry.content);
      if (fields.length !== 3 || fields.some((f) => f.tag !== TAG_UTF8_STRING)) {
        throw new LabelExtensionError(`label ${index} must be three UTF8Strings (key, value, provenance)`);
      }
      const [key, value, provenance] = fields.map((f) => decodeUtf8(f.content, f.end)) as [
        string,
        string,
        string,
      ];
      const problem = labelKeyProblem(key) ?? reservedKeyProblem(key) ?? labelValueProblem(key, value);
      if (problem) throw new LabelExtensionError(`label ${index}: ${problem}`);
      if (!PROVENANCES.has(provenance)) {
        throw new LabelExtensionError(`label "${key}" has unknown provenance "${provenance}"`);
      }
      const previous = out[out.length - 1];
      if (previous && compareKeys(previous.key, key) >= 0) {
        throw new LabelExtensionError(`label "${key}" is out of order or repeated`);
      }
      out.push({ key, value, provenance: provenance as LabelProvenance });
    }
    return out;
  } catch (err) {
    if (err instanceof DerError)
      throw new LabelExtensionError(`labels extension is not valid DER: ${err.message}`);
    throw err;
  }
}

/** Plain key/value view of attested labels. */
export function labelsOf(labels: readonly AttestedLabel[]): Labels {
  return Object.fromEntries(labels.map((l) => [l.key, l.value]));
}

/** The whole DER `Extension` (non-critical) carrying `labels`, ready to put in a certificate. */
export function labelsExtensionDer(labels: readonly AttestedLabel[]): Buffer {
  return encodeSequence([
    encodeTlv(TAG_OID, SIGIL_LABELS_OID_DER),
    encodeTlv(TAG_OCTET_STRING, encodeLabelsExtension(labels)),
  ]);
}

/**
 * If the DER `Extension` is Sigil's labels extension, returns its value (the OCTET STRING content)
 * and criticality; otherwise null. Throws LabelExtensionError when it is ours but malformed.
 */
export function matchLabelsExtension(extensionDer: Buffer): { value: Buffer; critical: boolean } | null {
  try {
    const outer = readExactly(extensionDer, TAG_SEQUENCE);
    const oid = readTlv(outer.content, 0);
    if (oid.tag !== TAG_OID || !oid.content.equals(SIGIL_LABELS_OID_DER)) return null;
    let next = readTlv(outer.content, oid.end);
    let critical = false;
    if (next.tag === TAG_BOOLEAN) {
      critical = next.content.length === 1 && next.content[0] === 0xff;
      next = readTlv(outer.content, next.end);
    }
    if (next.tag !== TAG_OCTET_STRING || next.end !== outer.content.length) {
      throw new LabelExtensionError("labels extension value is not a single OCTET STRING");
    }
    return { value: next.content, critical };
  } catch (err) {
    if (err instanceof DerError)
      throw new LabelExtensionError(`labels extension is not valid DER: ${err.message}`);
    throw err;
  }
}
