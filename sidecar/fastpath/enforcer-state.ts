/** What the enforcer is given and shares: its identity, policy and settings, and the servers it learns. */
import type { KeyObject } from "node:crypto";
import type { WorkloadIdentity } from "../../core/identity.ts";
import type { CompiledPolicySet, EnforcementMode } from "../../core/policy/index.ts";

export interface LocalIdentity {
  readonly identity: WorkloadIdentity;
  /** SVID chain, leaf first, DER. */
  readonly chain: readonly Buffer[];
  readonly privateKey: KeyObject;
}

export interface PolicyState {
  readonly set: CompiledPolicySet;
  readonly mode: EnforcementMode;
}

export interface EnforcerSettings {
  /** First NFQUEUE number and how many (the rules spread connections over them by client port). */
  readonly queueFirst: number;
  readonly queueCount: number;
  /** RFC 6994 ExID that marks our token option. */
  readonly exid: number;
  /** Token timestamp tolerance, either way. */
  readonly windowMs: number;
  /** Largest token this side will send; chosen to fit a SYN under the path MSS. */
  readonly maxTokenBytes: number;
  readonly identityCacheEntries?: number;
  readonly replayCacheEntries?: number;
  readonly queueLength?: number;
}

/**
 * A server identity this enforcer verified in a SYN-ACK, in a form another thread can take: the
 * workers share them so a connection that lands on another queue is a warm handshake too.
 */
export interface LearnedServer {
  readonly address: string;
  readonly port: number;
  /** Digest of the server's verified certificate chain. */
  readonly digest: string;
  /** Its leaf public key, SPKI DER. */
  readonly publicKeyDer: Buffer;
}
