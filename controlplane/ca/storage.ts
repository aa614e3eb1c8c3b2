import { createHash } from "node:crypto";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { ensurePrivateDir, readPrivateFile, writePrivateFile } from "./secret-files.ts";

/** The stored parts of one CA generation (PEM). The two keys are the secrets. */
export interface GenerationFiles {
  readonly caKey: string;
  readonly jwtKey: string;
  readonly caCrt: string;
  readonly chainPem: string;
}

/** The stored state document and the revision a compare-and-swap of it is based on. */
export interface StoredCaState {
  readonly text: string;
  readonly revision: string;
}

/** The stored CA state moved on since it was read: another replica rotated or retired meanwhile. */
export class CaStateConflictError extends Error {}

/**
 * Where the CA keeps its state (generations and their windows) and each generation's keys and
 * certificates: a directory by default, etcd when replicas share one CA.
 */
export interface CaStorage {
  /** Where the CA lives, for error messages. */
  readonly location: string;
  /** The state document, or undefined when no CA exists yet. */
  readState(): Promise<StoredCaState | undefined>;
  /**
   * Stores `text` only if the stored state is still at revision `basedOn` (undefined: no state yet),
   * so two replicas changing the CA at once cannot both win; returns the new revision, or throws
   * `CaStateConflictError`.
   */
  writeState(text: string, basedOn: string | undefined): Promise<string>;
  writeGeneration(id: string, files: GenerationFiles): Promise<void>;
  readGeneration(id: string): Promise<GenerationFiles>;
  removeGeneration(id: string): Promise<void>;
}

/**
 * The CA in `<dataDir>/ca/`: `state.json`, and per generation `ca.key`, `jwt.key` (0600), `ca.crt`,
 * `chain.pem`. One control plane owns the directory; the revision is a digest of the document, so a
 * second process writing it is still noticed rather than overwritten.
 */
export class FileCaStorage implements CaStorage {
  readonly location: string;

  constructor(dataDir: string) {
    this.location = join(dataDir, "ca");
  }

  async readState(): Promise<StoredCaState | undefined> {
    const path = join(this.location, "state.json");
    try {
      await readFile(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    const text = await readPrivateFile(path);
    return { text, revision: digestOf(text) };
  }

  async writeState(text: string, basedOn: string | undefined): Promise<string> {
    const current = await this.readState();
    if (current?.revision !== basedOn)
      throw new CaStateConflictError(
        `${join(this.location, "state.json")} changed since it was read: another process writes this CA`,
      );
    await ensurePrivateDir(this.location);
    await writePrivateFile(join(this.location, "state.json"), text);
    return digestOf(text);
  }

  async writeGeneration(id: string, files: GenerationFiles): Promise<void> {
    const dir = join(this.location, id);
    await writePrivateFile(join(dir, "ca.key"), files.caKey);
    await writePrivateFile(join(dir, "jwt.key"), files.jwtKey);
    await writePrivateFile(join(dir, "ca.crt"), files.caCrt);
    await writePrivateFile(join(dir, "chain.pem"), files.chainPem);
  }

  async readGeneration(id: string): Promise<GenerationFiles> {
    const dir = join(this.location, id);
    const [caKey, jwtKey, caCrt, chainPem] = await Promise.all([
      readPrivateFile(join(dir, "ca.key")),
      readPrivateFile(join(dir, "jwt.key")),
      readFile(join(dir, "ca.crt"), "utf8"),
      readFile(join(dir, "chain.pem"), "utf8"),
    ]);
    return { caKey, jwtKey, caCrt, chainPem };
  }

  async removeGeneration(id: string): Promise<void> {
    await rm(join(this.location, id), { recursive: true, force: true });
  }
}

function digestOf(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
