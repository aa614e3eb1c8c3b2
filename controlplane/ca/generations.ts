import { X509Certificate as NodeCertificate, createPrivateKey, createPublicKey } from "node:crypto";
import { calculateJwkThumbprint, importPKCS8 } from "jose";
import { z } from "zod";
import { parseSpiffeId } from "../../core/identity.ts";
import type { JwtAuthority } from "../../core/svid/bundle.ts";
import { x509 } from "../../core/svid/x509.ts";
import type { CryptoKey, SigningKey } from "./keys.ts";
import { CaKeyError, generateP256, importSigningKey, keyMatchesCertificate, randomSerial } from "./keys.ts";
import type { CaStorage } from "./storage.ts";

// What a CA generation is and how one comes to exist: a generated root, a brought CA checked
// before it is trusted, or one read back from storage. Signing and rotation stay in authority.ts.

/** The CA cannot do what was asked, with the file or rule at fault. */
export class CaError extends Error {}

/** A CA (root or intermediate) the user brings instead of a generated root. */
export interface ImportedCa {
  readonly certPem: string;
  readonly keyPem: string;
  /** Certificates above `certPem`, ending at the root the bundle will carry. Empty: `certPem` is the anchor. */
  readonly chainPem?: string;
}

/** One CA key pair and certificate, with the window in which it signs and is trusted. */
export interface Generation {
  readonly id: string;
  readonly source: "generated" | "imported";
  readonly createdAtMs: number;
  readonly activateAtMs: number;
  /** Set when a newer generation activates: the generation stays trusted until then. */
  retireAtMs: number | null;
}

export interface LoadedGeneration extends Generation {
  readonly cert: x509.X509Certificate;
  /** Intermediates above `cert` that leaves must carry (the anchor excluded). */
  readonly intermediates: readonly Buffer[];
  readonly anchor: NodeCertificate;
  readonly signing: SigningKey;
  readonly jwtKey: CryptoKey;
  readonly jwtAuthority: JwtAuthority;
  /** Built once: every leaf this generation signs carries the same AKI. */
  readonly authorityKeyId: x509.AuthorityKeyIdentifierExtension;
}

export const stateSchema = z.object({
  trustDomain: z.string(),
  sequence: z.number().int().nonnegative(),
  generations: z.array(
    z.object({
      id: z.string().regex(/^[a-z0-9-]+$/),
      source: z.enum(["generated", "imported"]),
      createdAtMs: z.number(),
      activateAtMs: z.number(),
      retireAtMs: z.number().nullable(),
    }),
  ),
});
export type CaState = z.infer<typeof stateSchema>;

function splitPem(pem: string, what: string): x509.X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((block, i) => {
    try {
      return new x509.X509Certificate(block);
    } catch (err) {
      throw new CaError(`${what} certificate ${i + 1} cannot be parsed: ${(err as Error).message}`);
    }
  });
}

export function validateImported(imported: ImportedCa, trustDomain: string): void {
  const [cert, ...extra] = splitPem(imported.certPem, "CA");
  if (!cert) throw new CaError("CA certificate PEM contains no certificate");
  if (extra.length > 0)
    throw new CaError("CA certificate PEM must hold one certificate; put the rest in the chain");
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca)
    throw new CaError(`CA certificate ${cert.subject} is not a CA (basicConstraints CA:TRUE missing)`);
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  if (ku && !(ku.usages & x509.KeyUsageFlags.keyCertSign)) {
    throw new CaError(`CA certificate ${cert.subject} key usage lacks keyCertSign`);
  }
  let matches: boolean;
  try {
    matches = keyMatchesCertificate(imported.keyPem, cert);
  } catch (err) {
    throw new CaError(`CA key cannot be read: ${(err as Error).message}`);
  }
  if (!matches) throw new CaError(`CA key does not belong to certificate ${cert.subject}`);
  if (cert.notAfter < new Date())
    throw new CaError(`CA certificate ${cert.subject} expired at ${cert.notAfter.toISOString()}`);
  const chain = splitPem(imported.chainPem ?? "", "chain");
  let child = new NodeCertificate(Buffer.from(cert.rawData));
  for (const parent of chain) {
    const node = new NodeCertificate(Buffer.from(parent.rawData));
    if (!child.checkIssued(node) || !child.verify(node.publicKey)) {
      throw new CaError(
        `chain certificate ${parent.subject} did not issue ${child.subject.replace(/\n/g, ", ")}`,
      );
    }
    child = node;
  }
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  for (const name of san?.names.items ?? []) {
    const id = name.type === "url" ? parseSpiffeId(name.value) : null;
    if (id && id.trustDomain !== trustDomain) {
      throw new CaError(
        `CA certificate names trust domain "${id.trustDomain}", this CA serves "${trustDomain}"`,
      );
    }
  }
}

export async function createRoot(
  trustDomain: string,
  id: string,
  now: Date,
  ttlSeconds: number,
): Promise<{ certPem: string; keyPem: string }> {
  const { keys, privatePem } = await generateP256();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=Sigil root ${id}, OU=${trustDomain}, O=Sigil`,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + ttlSeconds * 1000),
    keys,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: `spiffe://${trustDomain}` }]),
    ],
  });
  return { certPem: cert.toString("pem"), keyPem: privatePem };
}

export async function loadGenerations(storage: CaStorage, state: CaState): Promise<LoadedGeneration[]> {
  const loaded = await Promise.all(
    state.generations
      .filter((g) => g.retireAtMs === null || g.retireAtMs > Date.now())
      .map((g) => loadGeneration(storage, g)),
  );
  if (loaded.length === 0) throw new CaError(`CA in ${storage.location} has no usable generation`);
  return loaded;
}

export async function loadGeneration(storage: CaStorage, g: Generation): Promise<LoadedGeneration> {
  const genDir = `${storage.location}/${g.id}`;
  const {
    caKey: keyPem,
    jwtKey: jwtPem,
    caCrt: certPem,
    chainPem,
  } = await storage.readGeneration(g.id).catch((err: Error) => {
    throw new CaError(`CA generation ${g.id} in ${genDir} cannot be read: ${err.message}`);
  });
  const [cert] = splitPem(certPem, `${genDir}/ca.crt`);
  if (!cert) throw new CaError(`${genDir}/ca.crt holds no certificate`);
  const chain = splitPem(chainPem, `${genDir}/chain.pem`);
  let signing: SigningKey;
  try {
    signing = await importSigningKey(keyPem, `${genDir}/ca.key`);
  } catch (err) {
    if (err instanceof CaKeyError) throw new CaError(err.message);
    throw err;
  }
  const jwtKey = await importPKCS8(jwtPem, "ES256");
  const publicJwk = createPublicKey(createPrivateKey(jwtPem)).export({ format: "jwk" });
  const kid = await calculateJwkThumbprint(
    publicJwk as Parameters<typeof calculateJwkThumbprint>[0],
    "sha256",
  );
  const anchorCert = chain.length > 0 ? (chain[chain.length - 1] as x509.X509Certificate) : cert;
  const intermediates = chain.length > 0 ? [cert, ...chain.slice(0, -1)] : [];
  return {
    ...g,
    cert,
    intermediates: intermediates.map((c) => Buffer.from(c.rawData)),
    anchor: new NodeCertificate(Buffer.from(anchorCert.rawData)),
    signing,
    jwtKey: jwtKey as CryptoKey,
    authorityKeyId: await x509.AuthorityKeyIdentifierExtension.create(cert),
    jwtAuthority: {
      kid,
      jwk: Object.fromEntries(
        Object.entries(publicJwk).filter((e): e is [string, string] => typeof e[1] === "string"),
      ),
    },
  };
}
