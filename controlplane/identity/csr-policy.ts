import type { AttestedLabel } from "../../core/labels.ts";
import {
  LabelExtensionError,
  decodeLabelsExtension,
  matchLabelsExtension,
} from "../../core/svid/labels-extension.ts";
import { x509 } from "../../core/svid/x509.ts";

/** A CSR that cannot be parsed or is badly formed: INVALID_ARGUMENT. */
export class InvalidCsrError extends Error {}
/** A CSR that asks for more than attestation proved: PERMISSION_DENIED. */
export class OverReachError extends Error {}

const OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14";
const GRANTED_KEY_USAGE = x509.KeyUsageFlags.digitalSignature;
const GRANTED_EKU: ReadonlySet<string> = new Set([
  x509.ExtendedKeyUsage.serverAuth,
  x509.ExtendedKeyUsage.clientAuth,
]);

/** Parses a PKCS#10 request and checks its self-signature and key type (ECDSA P-256). */
export async function parseCsr(der: Buffer): Promise<x509.Pkcs10CertificateRequest> {
  if (der.length === 0 || der.length > 16_384)
    throw new InvalidCsrError(`CSR is ${der.length} bytes; expected 1..16384`);
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(der);
  } catch (err) {
    throw new InvalidCsrError(`CSR is not a valid PKCS#10 request: ${(err as Error).message}`);
  }
  const algorithm = csr.publicKey.algorithm as { name?: string; namedCurve?: string };
  if (algorithm.name !== "ECDSA" || algorithm.namedCurve !== "P-256") {
    throw new InvalidCsrError(
      `CSR key is ${algorithm.name ?? "unknown"} ${algorithm.namedCurve ?? ""}; Sigil issues for ECDSA P-256 keys`.trim(),
    );
  }
  let valid = false;
  try {
    valid = await csr.verify();
  } catch (err) {
    throw new InvalidCsrError(`CSR signature cannot be checked: ${(err as Error).message}`);
  }
  if (!valid) throw new InvalidCsrError("CSR signature does not match its public key");
  return csr;
}

/**
 * Refuses a CSR that asks for anything beyond the attested identity: a subject, a SAN other than
 * the attested SPIFFE ID, a label that was not attested (or with another value), CA powers, key or
 * extended key usages Sigil does not grant, or any other extension or attribute.
 */
export function checkCsrWithinAttestation(
  csr: x509.Pkcs10CertificateRequest,
  spiffeId: string,
  labels: readonly AttestedLabel[],
): void {
  if (csr.subject !== "")
    throw new OverReachError(`CSR asks for subject "${csr.subject}"; SVID subjects are set by the CA`);
  for (const attribute of csr.attributes) {
    if (attribute.type !== OID_EXTENSION_REQUEST)
      throw new OverReachError(`CSR carries attribute ${attribute.type}, which Sigil does not accept`);
  }
  for (const ext of csr.extensions) {
    let labelMatch;
    try {
      labelMatch = matchLabelsExtension(Buffer.from(ext.rawData));
    } catch (err) {
      if (err instanceof LabelExtensionError)
        throw new InvalidCsrError(`CSR labels extension: ${err.message}`);
      throw err;
    }
    if (labelMatch) {
      let requested: AttestedLabel[];
      try {
        requested = decodeLabelsExtension(labelMatch.value);
      } catch (err) {
        throw new InvalidCsrError(`CSR labels extension: ${(err as Error).message}`);
      }
      for (const label of requested) {
        const attested = labels.find((l) => l.key === label.key);
        if (!attested)
          throw new OverReachError(`CSR asks for label "${label.key}", which attestation did not prove`);
        if (attested.value !== label.value) {
          throw new OverReachError(
            `CSR asks for label ${label.key}=${label.value}; attestation proved ${label.key}=${attested.value}`,
          );
        }
      }
    } else if (ext instanceof x509.SubjectAlternativeNameExtension) {
      for (const name of ext.names.items) {
        if (name.type !== "url" || name.value !== spiffeId) {
          throw new OverReachError(
            `CSR asks for SAN ${name.type}:${name.value}; attestation proved only ${spiffeId}`,
          );
        }
      }
    } else if (ext instanceof x509.BasicConstraintsExtension) {
      if (ext.ca) throw new OverReachError("CSR asks for a CA certificate (basicConstraints CA:TRUE)");
    } else if (ext instanceof x509.KeyUsagesExtension) {
      if (ext.usages & ~GRANTED_KEY_USAGE)
        throw new OverReachError(`CSR asks for key usages ${ext.usages} beyond digitalSignature`);
    } else if (ext instanceof x509.ExtendedKeyUsageExtension) {
      const extra = ext.usages.map(String).filter((u) => !GRANTED_EKU.has(u));
      if (extra.length > 0) throw new OverReachError(`CSR asks for extended key usages ${extra.join(", ")}`);
    } else {
      throw new OverReachError(`CSR asks for extension ${ext.type}, which Sigil does not grant`);
    }
  }
}
