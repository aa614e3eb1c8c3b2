import { createPrivateKey, X509Certificate } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** A certificate and its key from an earlier run: only a proof for the first renewal after a restart. */
export interface StoredIdentity {
  readonly spiffeId: string;
  /** DER, leaf first. */
  readonly certChain: readonly Buffer[];
  readonly privateKey: KeyObject;
  readonly notAfter: Date;
}

export class IdentityStoreError extends Error {}

const CHAIN = "svid.pem";
const KEY = "svid.key";

/**
 * The workload's current SVID and key in a directory only the sidecar's user can read, so that a
 * restarted sidecar (a VM's `Restart=always`, a reboot) renews with them instead of redeeming its
 * join token again, which is single-use. The key leaves memory only for this file (0600, replaced
 * atomically); without `identityDir` nothing is written and a restart needs a new proof.
 */
export class IdentityStore {
  constructor(readonly directory: string) {}

  /** Writes the chain and key, each through a temporary file and a rename. */
  async save(certChainPem: string, privateKeyPem: string): Promise<void> {
    await mkdir(this.directory, { recursive: true, mode: 0o700 });
    await writeAtomically(join(this.directory, KEY), privateKeyPem);
    await writeAtomically(join(this.directory, CHAIN), certChainPem);
  }

  /**
   * The stored identity when there is one that can still prove the workload: `null` when the
   * directory holds none, or the certificate has expired. Unreadable, mismatched or foreign
   * content is an error naming the file, never silently skipped.
   */
  async load(now: Date = new Date()): Promise<StoredIdentity | null> {
    const chainPath = join(this.directory, CHAIN);
    const keyPath = join(this.directory, KEY);
    const [chainPem, keyPem] = await Promise.all([readIfPresent(chainPath), readIfPresent(keyPath)]);
    if (chainPem === null || keyPem === null) return null;
    let certs: X509Certificate[];
    let privateKey: KeyObject;
    try {
      certs = splitPem(chainPem).map((pem) => new X509Certificate(pem));
      privateKey = createPrivateKey(keyPem);
    } catch (err) {
      throw new IdentityStoreError(
        `${this.directory}: cannot read the stored SVID: ${(err as Error).message}`,
      );
    }
    const leaf = certs[0];
    if (!leaf) throw new IdentityStoreError(`${chainPath}: no certificate`);
    if (!leaf.checkPrivateKey(privateKey))
      throw new IdentityStoreError(`${keyPath}: not the key of the certificate in ${chainPath}`);
    const spiffeId = /URI:(spiffe:\/\/[^,\s]+)/.exec(leaf.subjectAltName ?? "")?.[1];
    if (!spiffeId) throw new IdentityStoreError(`${chainPath}: the certificate names no SPIFFE ID`);
    const notAfter = new Date(leaf.validTo);
    if (notAfter.getTime() <= now.getTime()) return null;
    return { spiffeId, certChain: certs.map((c) => c.raw), privateKey, notAfter };
  }
}

async function writeAtomically(path: string, content: string): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, content, { mode: 0o600 });
  await rename(temporary, path);
}

async function readIfPresent(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new IdentityStoreError(`cannot read ${path}: ${(err as Error).message}`);
  }
}

function splitPem(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}
