/**
 * This workload's own fast-path credentials: its SVID chain (PEM, leaf first) and the private key
 * that goes with it. The identity (SPIFFE ID, labels) is read from the leaf, and the key is checked
 * against the leaf so a mismatched pair fails at load, not as refused handshakes.
 */
import { X509Certificate, createPrivateKey, createPublicKey } from "node:crypto";
import type { WorkloadIdentity } from "../../core/identity.ts";
import { parseSpiffeId } from "../../core/identity.ts";
import { labelsWithProvenance } from "../../core/label-provenance.ts";
import { SIGIL_LABELS_OID, decodeLabelsExtension } from "../../core/svid/labels-extension.ts";
import { x509 } from "../../core/svid/x509.ts";
import type { LocalIdentity } from "./enforcer-state.ts";

export class LocalIdentityError extends Error {
  override readonly name = "LocalIdentityError";
}

export function pemCertificates(pem: string): Buffer[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new X509Certificate(b).raw);
}

export function loadLocalIdentity(chainPem: string, keyPem: string): LocalIdentity {
  const chain = pemCertificates(chainPem);
  const leafDer = chain[0];
  if (!leafDer) throw new LocalIdentityError("the SVID file holds no certificate");
  const leaf = new X509Certificate(leafDer);
  const uris = (leaf.subjectAltName ?? "")
    .split(", ")
    .filter((n) => n.startsWith("URI:"))
    .map((n) => n.slice(4));
  const spiffeId = uris[0];
  const parsed = spiffeId === undefined || uris.length !== 1 ? null : parseSpiffeId(spiffeId);
  if (!parsed || spiffeId === undefined) {
    throw new LocalIdentityError("the SVID leaf must have exactly one SPIFFE URI SAN");
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(keyPem);
  } catch (err) {
    throw new LocalIdentityError(`the SVID key cannot be read: ${(err as Error).message}`);
  }
  const fromKey = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  if (!leaf.publicKey.export({ format: "der", type: "spki" }).equals(fromKey)) {
    throw new LocalIdentityError(`the private key does not belong to the SVID of ${spiffeId}`);
  }
  if (privateKey.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw new LocalIdentityError("the fast path signs with ECDSA P-256; the SVID key is another type");
  }
  const ext = new x509.X509Certificate(leafDer).extensions.find((e) => e.type === SIGIL_LABELS_OID);
  const labels = ext ? labelsWithProvenance(decodeLabelsExtension(Buffer.from(ext.value))) : {};
  const identity: WorkloadIdentity = {
    spiffeId,
    trustDomain: parsed.trustDomain,
    labels,
    serial: leaf.serialNumber.toLowerCase(),
    notAfter: new Date(leaf.validTo),
  };
  return { identity, chain, privateKey };
}
