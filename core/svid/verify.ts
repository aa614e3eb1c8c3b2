import { X509Certificate } from "node:crypto";
import { x509 } from "./x509.ts";
import type { AttestedLabel } from "../labels.ts";
import type { WorkloadIdentity } from "../identity.ts";
import { parseSpiffeId } from "../identity.ts";
import type { TrustBundle } from "./bundle.ts";
import { labelsWithProvenance } from "../label-provenance.ts";
import { LabelExtensionError, matchLabelsExtension, decodeLabelsExtension } from "./labels-extension.ts";
import { describeRevocation } from "./revocation.ts";
import type { Revocation, RevocationIndex } from "./revocation.ts";

/** Why a peer's certificate was refused; stable names for logs, metrics and tests. */
export type SvidRejection =
  | "malformed"
  | "untrusted"
  | "expired"
  | "not-yet-valid"
  | "ca-as-leaf"
  | "ca-key-usage"
  | "path-length"
  | "uri-san"
  | "trust-domain"
  | "key-usage"
  | "ext-key-usage"
  | "labels"
  | "revoked";

export class SvidVerificationError extends Error {
  constructor(
    readonly reason: SvidRejection,
    message: string,
    /** With reason "revoked": the entry that refused the certificate (its workload, or it alone). */
    readonly revocation?: Revocation,
  ) {
    super(message);
  }
}

/** Which side of a TLS connection the certificate authenticates. */
export type SvidPurpose = "client" | "server";

export interface SvidVerifyOptions {
  readonly bundle: TrustBundle;
  readonly purpose: SvidPurpose;
  readonly revocations?: RevocationIndex;
  readonly now?: Date;
}

export interface VerifiedSvid {
  readonly identity: WorkloadIdentity;
  /** The labels with their provenance, as the CA signed them. */
  readonly attestedLabels: readonly AttestedLabel[];
  readonly leaf: X509Certificate;
}

const MAX_CHAIN = 8;
const OID_KEY_USAGE = "2.5.29.15";
const OID_BASIC_CONSTRAINTS = "2.5.29.19";
const OID_SAN = "2.5.29.17";
const OID_EKU = "2.5.29.37";
/**
 * The critical extensions this verifier enforces. A leaf or intermediate with any other critical
 * extension (name constraints, policy constraints) is refused rather than accepted without the
 * constraint it expresses (RFC 5280 §4.2, §6.1.4 (o)).
 */
const CRITICAL_ENFORCED = new Set([OID_KEY_USAGE, OID_BASIC_CONSTRAINTS, OID_SAN, OID_EKU]);

type Parsed = { node: X509Certificate; info: x509.X509Certificate };

function parse(der: Buffer, position: string): Parsed {
  try {
    return { node: new X509Certificate(der), info: new x509.X509Certificate(der) };
  } catch (err) {
    throw new SvidVerificationError(
      "malformed",
      `${position} certificate cannot be parsed: ${(err as Error).message}`,
    );
  }
}

function checkValidity(info: x509.X509Certificate, now: Date, what: string): void {
  if (now < info.notBefore) {
    throw new SvidVerificationError(
      "not-yet-valid",
      `${what} is not valid before ${info.notBefore.toISOString()}`,
    );
  }
  if (now > info.notAfter) {
    throw new SvidVerificationError("expired", `${what} expired at ${info.notAfter.toISOString()}`);
  }
}

/** The single SPIFFE ID of a leaf, or the reason it does not have exactly one valid URI SAN. */
function spiffeIdOf(info: x509.X509Certificate): string {
  const san = info.getExtension(x509.SubjectAlternativeNameExtension);
  const uris = san ? san.names.items.filter((n) => n.type === "url").map((n) => n.value) : [];
  if (uris.length !== 1) {
    throw new SvidVerificationError(
      "uri-san",
      `certificate has ${uris.length} URI SANs; an SVID has exactly one`,
    );
  }
  return uris[0] as string;
}

function checkLeafUsage(info: x509.X509Certificate, purpose: SvidPurpose): void {
  const ku = info.getExtension(x509.KeyUsagesExtension);
  if (!ku || !ku.critical || !(ku.usages & x509.KeyUsageFlags.digitalSignature)) {
    throw new SvidVerificationError("key-usage", "leaf lacks a critical key usage with digitalSignature");
  }
  if (ku.usages & (x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign)) {
    throw new SvidVerificationError("key-usage", "leaf key usage allows certificate or CRL signing");
  }
  const eku = info.getExtension(x509.ExtendedKeyUsageExtension);
  const needed = purpose === "client" ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth;
  if (!eku || !eku.usages.includes(needed)) {
    throw new SvidVerificationError(
      "ext-key-usage",
      `leaf extended key usage does not allow ${purpose} authentication`,
    );
  }
  for (const ext of info.extensions) {
    if (ext.critical && !CRITICAL_ENFORCED.has(ext.type)) {
      throw new SvidVerificationError("malformed", `leaf has unsupported critical extension ${ext.type}`);
    }
  }
}

/** The signed labels of a leaf; none when it has no Sigil labels extension. */
function labelsFromLeaf(info: x509.X509Certificate): AttestedLabel[] {
  try {
    let found: AttestedLabel[] | null = null;
    for (const ext of info.extensions) {
      const match = matchLabelsExtension(Buffer.from(ext.rawData));
      if (!match) continue;
      if (found) throw new LabelExtensionError("certificate carries the labels extension twice");
      found = decodeLabelsExtension(match.value);
    }
    return found ?? [];
  } catch (err) {
    if (err instanceof LabelExtensionError) throw new SvidVerificationError("labels", err.message);
    throw err;
  }
}

function describe(node: X509Certificate): string {
  return node.subject.replace(/\n/g, ", ") || "(empty subject)";
}

/**
 * Checks that a certificate in the chain above the leaf may sign certificates (RFC 5280):
 * basicConstraints CA:TRUE (§4.2.1.9), keyCertSign when a key usage is present (§4.2.1.3 and
 * §6.1.4 (n): an absent key usage does not restrict the key), a pathLenConstraint no smaller than
 * the non-self-issued intermediates below it, and no critical extension left unenforced.
 * `below` counts those intermediates between this certificate and the leaf.
 */
function checkIssuer(cert: Parsed, below: number, what: string, intermediate: boolean): void {
  const bc = cert.info.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca) throw new SvidVerificationError("untrusted", `${what} is not a CA (basicConstraints CA:TRUE)`);
  const ku = cert.info.getExtension(x509.KeyUsagesExtension);
  if (ku && !(ku.usages & x509.KeyUsageFlags.keyCertSign)) {
    throw new SvidVerificationError(
      "ca-key-usage",
      `${what} key usage lacks keyCertSign, so it may not sign certificates`,
    );
  }
  if (bc.pathLength !== undefined && below > bc.pathLength) {
    throw new SvidVerificationError(
      "path-length",
      `${what} has pathLenConstraint ${bc.pathLength} but ${below} intermediate CA certificate${below === 1 ? "" : "s"} below it`,
    );
  }
  if (!intermediate) return;
  for (const ext of cert.info.extensions) {
    if (ext.critical && !CRITICAL_ENFORCED.has(ext.type)) {
      throw new SvidVerificationError("untrusted", `${what} has unsupported critical extension ${ext.type}`);
    }
  }
}

/** Whether a certificate is self-issued (subject equals issuer): RFC 5280 leaves those out of path lengths. */
function selfIssued(cert: Parsed): boolean {
  return cert.node.subject === cert.node.issuer;
}

/**
 * Walks from the leaf through presented intermediates to a root of the bundle. Each link must be
 * a name match plus a valid signature by a CA certificate that is itself within its validity, may
 * sign certificates, and allows the path length below it.
 */
function checkChain(certs: Parsed[], bundle: TrustBundle, now: Date): void {
  let current = certs[0] as Parsed;
  const path: Parsed[] = [];
  for (let i = 1; i <= certs.length; i++) {
    const anchor = bundle.x509Authorities.find((root) => signedBy(current.node, root));
    if (anchor) {
      const info = new x509.X509Certificate(anchor.raw);
      const what = `trust anchor ${describe(anchor)}`;
      checkValidity(info, now, what);
      checkIssuer({ node: anchor, info }, intermediatesBelow(path), what, false);
      return;
    }
    const next = certs[i];
    if (!next || !signedBy(current.node, next.node)) {
      throw new SvidVerificationError(
        "untrusted",
        `certificate issued by "${current.node.issuer.replace(/\n/g, ", ")}" does not chain to the ${bundle.trustDomain} trust bundle`,
      );
    }
    const what = `intermediate ${describe(next.node)}`;
    checkIssuer(next, intermediatesBelow(path), what, true);
    checkValidity(next.info, now, what);
    path.push(next);
    current = next;
  }
  throw new SvidVerificationError("untrusted", `chain does not reach the ${bundle.trustDomain} trust bundle`);
}

/**
 * Whether `issuer` issued `cert`: names match and the signature verifies with its key. What may sign
 * is decided afterwards by `checkIssuer`, so a refusal names the rule broken. (Node's `checkIssued`
 * would also drop an issuer lacking keyCertSign, and the chain would only be reported as untrusted.)
 */
function signedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  return cert.issuer === issuer.subject && cert.verify(issuer.publicKey);
}

/** How many of the intermediates walked so far (leaf excluded) count towards a path length. */
function intermediatesBelow(path: readonly Parsed[]): number {
  return path.filter((cert) => !selfIssued(cert)).length;
}

/**
 * Verifies an X.509-SVID chain (DER, leaf first) as a peer presented it: exactly one URI SAN with a
 * valid SPIFFE ID in the bundle's trust domain, a non-CA leaf with digitalSignature and the EKU for
 * `purpose`, a chain to the bundle, validity at `now`, well-formed Sigil labels, and not revoked.
 * Returns the verified identity or throws SvidVerificationError naming the first rule broken.
 */
export function verifySvid(chain: readonly Buffer[], options: SvidVerifyOptions): VerifiedSvid {
  if (chain.length === 0) throw new SvidVerificationError("malformed", "peer presented no certificate");
  if (chain.length > MAX_CHAIN)
    throw new SvidVerificationError("malformed", `chain longer than ${MAX_CHAIN} certificates`);
  const now = options.now ?? new Date();
  const certs = chain.map((der, i) => parse(der, i === 0 ? "leaf" : `chain[${i}]`));
  const leaf = certs[0] as Parsed;

  const spiffeId = spiffeIdOf(leaf.info);
  const parsedId = parseSpiffeId(spiffeId);
  if (!parsedId || parsedId.path === "") {
    throw new SvidVerificationError("uri-san", `URI SAN "${spiffeId}" is not a valid workload SPIFFE ID`);
  }
  if (parsedId.trustDomain !== options.bundle.trustDomain) {
    throw new SvidVerificationError(
      "trust-domain",
      `SPIFFE ID ${spiffeId} is in trust domain "${parsedId.trustDomain}", expected "${options.bundle.trustDomain}"`,
    );
  }
  // Node's `ca` follows OpenSSL's check, which calls a CA:TRUE certificate without keyCertSign
  // "not a CA"; an end-entity SVID must not assert CA:TRUE at all.
  if (leaf.info.getExtension(x509.BasicConstraintsExtension)?.ca)
    throw new SvidVerificationError("ca-as-leaf", `leaf ${spiffeId} is a CA certificate (CA:TRUE)`);

  checkChain(certs, options.bundle, now);
  checkValidity(leaf.info, now, `certificate for ${spiffeId}`);
  checkLeafUsage(leaf.info, options.purpose);

  const attestedLabels = labelsFromLeaf(leaf.info);

  const serial = leaf.node.serialNumber.toLowerCase();
  const revoked = options.revocations?.revoking({ spiffeId, serial });
  if (revoked) throw new SvidVerificationError("revoked", describeRevocation(revoked), revoked);

  return {
    identity: {
      spiffeId,
      trustDomain: parsedId.trustDomain,
      labels: labelsWithProvenance(attestedLabels),
      serial,
      notAfter: leaf.info.notAfter,
    },
    attestedLabels,
    leaf: leaf.node,
  };
}
