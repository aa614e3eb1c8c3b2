import { createHash, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { z } from "zod";
import type { AttestedLabel } from "../../core/labels.ts";
import { labelKeyProblem, labelValueProblem } from "../../core/labels.ts";
import { reservedKeyProblem } from "../../core/label-provenance.ts";
import { writePrivateFile } from "../ca/secret-files.ts";
import { AttestationError } from "./errors.ts";

/** What a join token proves once it is redeemed. */
export interface JoinTokenGrant {
  readonly name: string;
  readonly labels: readonly AttestedLabel[];
  /**
   * The addresses the operator registered for the workload (its VM's IPs): the workload owns them
   * in the peer directory whoever else claims them.
   */
  readonly addresses: readonly string[];
}

export interface CreatedJoinToken {
  /** The secret; shown once, stored only as a hash. */
  readonly token: string;
  readonly name: string;
  readonly expiresAt: Date;
  readonly labels: Readonly<Record<string, string>>;
  readonly addresses: readonly string[];
}

const NAME = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;
const TOKEN_PREFIX = "sgjt_";

export const storedTokenSchema = z.object({
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  name: z.string(),
  labels: z.record(z.string(), z.string()),
  addresses: z.array(z.string()).default([]),
  createdAtMs: z.number(),
  expiresAtMs: z.number(),
  usedAtMs: z.number().nullable(),
});
const storedSchema = z.array(storedTokenSchema);
export type StoredToken = z.infer<typeof storedTokenSchema>;

/** What issuance needs of a join-token store, wherever the tokens are kept. */
export interface JoinTokens {
  create(request: JoinTokenRequest): Promise<CreatedJoinToken>;
  /** What `token` would grant, without using it up; throws as `redeem` would. */
  peek(token: string, now?: Date): JoinTokenGrant | Promise<JoinTokenGrant>;
  /** Redeems a token exactly once: refuses unknown, used and expired ones, naming which. */
  redeem(token: string, now?: Date): Promise<JoinTokenGrant>;
}

export interface JoinTokenRequest {
  name: string;
  labels: Readonly<Record<string, string>>;
  /** The workload's IP addresses, registered by the operator (optional). */
  addresses?: readonly string[];
  ttlSeconds: number;
  now?: Date;
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/** Validates a creation request and mints the secret and the record kept of it (its hash only). */
export function mintJoinToken(request: JoinTokenRequest): { created: CreatedJoinToken; stored: StoredToken } {
  if (!NAME.test(request.name)) {
    throw new Error(
      `workload name "${request.name}" must be 1-63 lower-case letters, digits, '.', '_' or '-'`,
    );
  }
  if (!(
    Number.isInteger(request.ttlSeconds) &&
    request.ttlSeconds > 0 &&
    request.ttlSeconds <= 30 * 24 * 3600
  )) {
    throw new Error(
      `token TTL ${request.ttlSeconds}s must be a whole number of seconds between 1 and 30 days`,
    );
  }
  for (const [key, value] of Object.entries(request.labels)) {
    const problem = labelKeyProblem(key) ?? reservedKeyProblem(key) ?? labelValueProblem(key, value);
    if (problem) throw new Error(problem);
  }
  const addresses = [...new Set((request.addresses ?? []).map((a) => a.toLowerCase()))];
  for (const address of addresses) {
    if (isIP(address) === 0) throw new Error(`workload address "${address}" is not an IP address`);
  }
  const now = (request.now ?? new Date()).getTime();
  const token = TOKEN_PREFIX + randomBytes(32).toString("base64url");
  const stored: StoredToken = {
    hash: hashToken(token),
    name: request.name,
    labels: { ...request.labels },
    addresses,
    createdAtMs: now,
    expiresAtMs: now + request.ttlSeconds * 1000,
    usedAtMs: null,
  };
  const created = {
    token,
    name: stored.name,
    expiresAt: new Date(stored.expiresAtMs),
    labels: stored.labels,
    addresses: stored.addresses,
  };
  return { created, stored };
}

/** The stored token if it can still be redeemed at `now`; otherwise the reason, as an AttestationError. */
export function usableToken(stored: StoredToken | undefined, now: Date): StoredToken {
  if (!stored) throw new AttestationError("unknown-token", "join token is not known to this control plane");
  if (stored.usedAtMs !== null) {
    throw new AttestationError(
      "token-used",
      `join token for "${stored.name}" was already used at ${new Date(stored.usedAtMs).toISOString()}`,
    );
  }
  if (now.getTime() >= stored.expiresAtMs) {
    throw new AttestationError(
      "token-expired",
      `join token for "${stored.name}" expired at ${new Date(stored.expiresAtMs).toISOString()}`,
    );
  }
  return stored;
}

export function grantOf(stored: StoredToken): JoinTokenGrant {
  return {
    name: stored.name,
    labels: Object.entries(stored.labels).map(([key, value]) => ({
      key,
      value,
      provenance: "join-token" as const,
    })),
    addresses: stored.addresses,
  };
}

/**
 * One-time, expiring join tokens scoped to a label set (for VM processes). Tokens are random 256-bit
 * secrets kept only as SHA-256 hashes in `<dataDir>/identity/join-tokens.json` (0600). Redeeming
 * marks the token used before any I/O, so two concurrent redemptions cannot both succeed.
 */
export class JoinTokenStore implements JoinTokens {
  private constructor(
    private readonly path: string,
    private readonly tokens: Map<string, StoredToken>,
  ) {}

  static async open(dataDir: string): Promise<JoinTokenStore> {
    const path = join(dataDir, "identity", "join-tokens.json");
    let stored: StoredToken[] = [];
    try {
      const parsed = storedSchema.safeParse(JSON.parse(await readFile(path, "utf8")));
      if (!parsed.success) throw new Error(`${path}: ${parsed.error.issues[0]?.message}`);
      stored = parsed.data;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    return new JoinTokenStore(path, new Map(stored.map((t) => [t.hash, t])));
  }

  async create(request: JoinTokenRequest): Promise<CreatedJoinToken> {
    const { created, stored } = mintJoinToken(request);
    this.tokens.set(stored.hash, stored);
    this.prune(stored.createdAtMs);
    await this.save();
    return created;
  }

  /** What `token` would grant, without using it up; throws as `redeem` would. */
  peek(token: string, now = new Date()): JoinTokenGrant {
    return grantOf(this.usable(token, now));
  }

  /** Redeems a token: refuses unknown, used and expired ones, naming which. */
  async redeem(token: string, now = new Date()): Promise<JoinTokenGrant> {
    const stored = this.usable(token, now);
    stored.usedAtMs = now.getTime();
    await this.save();
    return grantOf(stored);
  }

  private usable(token: string, now: Date): StoredToken {
    return usableToken(this.tokens.get(hashToken(token)), now);
  }

  /** Forgets tokens that can no longer be redeemed and are older than a day past expiry. */
  private prune(nowMs: number): void {
    for (const [hash, t] of this.tokens) if (t.expiresAtMs + 24 * 3600_000 < nowMs) this.tokens.delete(hash);
  }

  private saving: Promise<void> = Promise.resolve();

  private save(): Promise<void> {
    const snapshot = JSON.stringify([...this.tokens.values()], null, 2);
    this.saving = this.saving.catch(() => undefined).then(() => writePrivateFile(this.path, snapshot));
    return this.saving;
  }
}
