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

/**
 * Where the CA keeps its state (generations and their windows) and each generation's keys and
 * certificates: a directory by default, etcd when replicas share one CA.
 */
export interface CaStorage {
  /** Where the CA lives, for error messages. */
  readonly location: string;
  /** The state document, or undefined when no CA exists yet. */
  readState(): Promise<string | undefined>;
  writeState(text: string): Promise<void>;
  writeGeneration(id: string, files: GenerationFiles): Promise<void>;
  readGeneration(id: string): Promise<GenerationFiles>;
  removeGeneration(id: string): Promise<void>;
}

/** The CA in `<dataDir>/ca/`: `state.json`, and per generation `ca.key`, `jwt.key` (0600), `ca.crt`, `chain.pem`. */
export class FileCaStorage implements CaStorage {
  readonly location: string;

  constructor(dataDir: string) {
    this.location = join(dataDir, "ca");
  }

  async readState(): Promise<string | undefined> {
    const path = join(this.location, "state.json");
    try {
      await readFile(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    return readPrivateFile(path);
  }

  async writeState(text: string): Promise<void> {
    await ensurePrivateDir(this.location);
    await writePrivateFile(join(this.location, "state.json"), text);
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
