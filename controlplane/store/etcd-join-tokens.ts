import type {
  CreatedJoinToken,
  JoinTokenGrant,
  JoinTokenRequest,
  JoinTokens,
} from "../attestation/join-tokens.ts";
import {
  grantOf,
  hashToken,
  mintJoinToken,
  storedTokenSchema,
  usableToken,
} from "../attestation/join-tokens.ts";
import { AttestationError } from "../attestation/errors.ts";
import type { EtcdState } from "./etcd-state.ts";

const PREFIX = "tokens/";

/**
 * Join tokens in etcd, one key per token hash. Redeeming is a compare-and-swap on the key's
 * modification revision: of two replicas redeeming the same token at once, etcd applies exactly one
 * transaction; the other finds the key changed and refuses the token as used.
 */
export class EtcdJoinTokens implements JoinTokens {
  constructor(private readonly etcd: EtcdState) {}

  async create(request: JoinTokenRequest): Promise<CreatedJoinToken> {
    const { created, stored } = mintJoinToken(request);
    await this.etcd.put(PREFIX + stored.hash, JSON.stringify(stored), "creating a join token");
    return created;
  }

  async peek(token: string, now = new Date()): Promise<JoinTokenGrant> {
    return grantOf(usableToken((await this.fetch(token)).stored, now));
  }

  async redeem(token: string, now = new Date()): Promise<JoinTokenGrant> {
    const { key, stored, raw } = await this.fetch(token);
    const usable = usableToken(stored, now);
    const used = { ...usable, usedAtMs: now.getTime() };
    if (!(await this.etcd.compareAndSwap(key, raw, JSON.stringify(used), "redeeming a join token"))) {
      // Another replica redeemed it between our read and our transaction: report what it recorded.
      const again = await this.fetch(token);
      usableToken(again.stored, now);
      throw new AttestationError("token-used", `join token for "${usable.name}" was redeemed concurrently`);
    }
    return grantOf(used);
  }

  private async fetch(token: string) {
    const key = PREFIX + hashToken(token);
    const raw = await this.etcd.read(key, "reading a join token");
    if (!raw) return { key, raw, stored: undefined };
    const parsed = storedTokenSchema.safeParse(JSON.parse(raw.value));
    if (!parsed.success) throw new Error(`etcd key ${key}: ${parsed.error.issues[0]?.message}`);
    return { key, raw, stored: parsed.data };
  }
}
