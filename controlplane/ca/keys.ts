import { createPrivateKey, createPublicKey, webcrypto } from "node:crypto";
import { x509 } from "../../core/svid/x509.ts";

export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** ECDSA parameters Sigil signs with, per curve. */
export interface SigningKey {
  readonly key: CryptoKey;
  readonly algorithm: webcrypto.EcdsaParams & webcrypto.EcKeyImportParams;
}

const CURVES: Record<string, { namedCurve: string; hash: string }> = {
  prime256v1: { namedCurve: "P-256", hash: "SHA-256" },
  secp384r1: { namedCurve: "P-384", hash: "SHA-384" },
};

export class CaKeyError extends Error {}

/** Imports a PEM private key (PKCS#8, SEC1 or encrypted-less PEM) as a non-extractable signing key. */
export async function importSigningKey(pem: string, what: string): Promise<SigningKey> {
  let keyObject;
  try {
    keyObject = createPrivateKey(pem);
  } catch (err) {
    throw new CaKeyError(`${what} is not a readable PEM private key: ${(err as Error).message}`);
  }
  const curve =
    keyObject.asymmetricKeyType === "ec"
      ? CURVES[keyObject.asymmetricKeyDetails?.namedCurve ?? ""]
      : undefined;
  if (!curve) {
    throw new CaKeyError(
      `${what} is ${keyObject.asymmetricKeyType} ${keyObject.asymmetricKeyDetails?.namedCurve ?? ""}; Sigil signs with ECDSA P-256 or P-384`.trim(),
    );
  }
  const der = keyObject.export({ format: "der", type: "pkcs8" });
  const algorithm = { name: "ECDSA", namedCurve: curve.namedCurve, hash: curve.hash };
  const key = await webcrypto.subtle.importKey("pkcs8", der, algorithm, false, ["sign"]);
  return { key, algorithm };
}

/** True when the private key in `keyPem` is the one whose public half `cert` carries. */
export function keyMatchesCertificate(keyPem: string, cert: x509.X509Certificate): boolean {
  const fromKey = createPublicKey(createPrivateKey(keyPem)).export({ format: "der", type: "spki" });
  return Buffer.from(cert.publicKey.rawData).equals(fromKey);
}

/** A fresh P-256 pair, returned with the private half as PKCS#8 PEM for storage. */
export async function generateP256(): Promise<{ keys: CryptoKeyPair; privatePem: string }> {
  const keys = await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ]);
  const pkcs8 = await webcrypto.subtle.exportKey("pkcs8", keys.privateKey);
  return { keys, privatePem: x509.PemConverter.encode(pkcs8, "PRIVATE KEY") };
}

/** A random positive 128-bit certificate serial in hex. */
export function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x01;
  return Buffer.from(bytes).toString("hex");
}
