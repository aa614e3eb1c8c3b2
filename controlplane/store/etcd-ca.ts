import { z } from "zod";
import type { CertificateAuthority } from "../ca/authority.ts";
import {
  CaStateConflictError,
  type CaStorage,
  type GenerationFiles,
  type StoredCaState,
} from "../ca/storage.ts";
import { open, seal } from "./envelope.ts";
import type { EtcdState, WatchedPrefix } from "./etcd-state.ts";

const STATE = "ca/state";
const GENERATIONS = "ca/generations/";

const storedGeneration = z.object({
  caKey: z.string(),
  jwtKey: z.string(),
  caCrt: z.string(),
  chainPem: z.string(),
});

/**
 * The CA in etcd, so every replica signs with the same keys: the state document, and one key per
 * generation whose two private keys are sealed with the envelope key (AES-256-GCM, bound to the
 * etcd key they are stored under); certificates are stored in the clear. `attach` reloads the CA
 * when another replica rotates or retires a generation.
 */
export class EtcdCaStorage implements CaStorage {
  readonly location: string;

  private constructor(
    private readonly etcd: EtcdState,
    private readonly envelopeKey: Buffer,
    private readonly watched: WatchedPrefix,
  ) {
    this.location = `etcd:${STATE}`;
  }

  static async open(etcd: EtcdState, envelopeKey: Buffer): Promise<EtcdCaStorage> {
    return new EtcdCaStorage(etcd, envelopeKey, await etcd.watchPrefix(STATE));
  }

  attach(ca: CertificateAuthority, onError: (err: unknown) => void): void {
    this.watched.on("change", () => void ca.reload().catch(onError));
  }

  async readState(): Promise<StoredCaState | undefined> {
    const stored = await this.etcd.read(STATE, "reading the CA state");
    return stored && { text: stored.value, revision: stored.modRevision };
  }

  async writeState(text: string, basedOn: string | undefined): Promise<string> {
    const written = await this.etcd.compareAndSwap(
      STATE,
      basedOn === undefined ? undefined : { value: "", modRevision: basedOn },
      text,
      "storing the CA state",
    );
    if (written === undefined)
      throw new CaStateConflictError(
        `etcd ${STATE} changed since this replica read it: another replica rotated or retired a CA generation at the same time; retry`,
      );
    return written;
  }

  async writeGeneration(id: string, files: GenerationFiles): Promise<void> {
    const key = GENERATIONS + id;
    const stored = {
      ...files,
      caKey: seal(this.envelopeKey, `${key}/ca.key`, files.caKey),
      jwtKey: seal(this.envelopeKey, `${key}/jwt.key`, files.jwtKey),
    };
    await this.etcd.put(key, JSON.stringify(stored), `storing CA generation ${id}`);
  }

  async readGeneration(id: string): Promise<GenerationFiles> {
    const key = GENERATIONS + id;
    const raw = await this.etcd.read(key, `reading CA generation ${id}`);
    if (!raw) throw new Error(`etcd has no ${key}`);
    const parsed = storedGeneration.safeParse(JSON.parse(raw.value));
    if (!parsed.success) throw new Error(`etcd ${key}: ${parsed.error.issues[0]?.message}`);
    return {
      ...parsed.data,
      caKey: open(this.envelopeKey, `${key}/ca.key`, parsed.data.caKey),
      jwtKey: open(this.envelopeKey, `${key}/jwt.key`, parsed.data.jwtKey),
    };
  }

  async removeGeneration(id: string): Promise<void> {
    await this.etcd.write(`removing CA generation ${id}`, () =>
      this.etcd.kv
        .delete()
        .key(GENERATIONS + id)
        .exec(),
    );
  }
}
