import { createPrivateKey, sign, webcrypto } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { x509 } from "../../core/svid/x509.ts";

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

/**
 * A workload's P-256 key pair. It is never sent anywhere; only CSRs and signatures made with it
 * leave. It stays in this process's memory unless the sidecar is given an identity directory
 * (identity-store.ts), where the current one is kept for a restart.
 */
export interface WorkloadKey {
  readonly keys: webcrypto.CryptoKeyPair;
  /** PKCS#8 PEM, for node:tls secure contexts in this process. */
  readonly privateKeyPem: string;
  readonly privateKey: KeyObject;
}

export async function generateWorkloadKey(): Promise<WorkloadKey> {
  const keys = await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ]);
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
  const privateKeyPem = x509.PemConverter.encode(pkcs8, "PRIVATE KEY");
  return { keys, privateKeyPem, privateKey: createPrivateKey(privateKeyPem) };
}

/**
 * A PKCS#10 request for `key` with an empty subject, optionally naming the SPIFFE ID it expects:
 * the control plane decides the identity from attestation, so the CSR asks for nothing else.
 */
export async function createCsr(key: WorkloadKey, spiffeId?: string): Promise<Buffer> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: key.keys,
    signingAlgorithm: ALGORITHM,
    extensions: spiffeId
      ? [new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }])]
      : [],
  });
  return Buffer.from(csr.rawData);
}

/** ECDSA-SHA256 (DER) over `data`: the renewal proof that this process holds the current SVID key. */
export function signWithKey(key: Pick<WorkloadKey, "privateKey">, data: Buffer): Buffer {
  return sign("sha256", data, key.privateKey);
}
