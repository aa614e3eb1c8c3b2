/**
 * Everything an enforcer needs, as plain data that can cross a worker-thread boundary: the SVID and
 * key PEMs, the trust bundle and revocation list documents, and the policy documents as the policy
 * codec decoded them (validated already; each worker compiles them, since a compiled set does not
 * cross threads). `buildState` turns them into the enforcer's state.
 */
import { compilePolicySet } from "../../core/policy/index.ts";
import type { EnforcementMode, PolicyDocument } from "../../core/policy/index.ts";
import { parseBundle } from "../../core/svid/bundle.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import type { RevocationEntry, RevokedCertificate } from "../../core/svid/revocation.ts";
import type { LocalIdentity, PolicyState } from "./enforcer-state.ts";
import { loadLocalIdentity } from "./local-identity.ts";
import type { TrustState } from "./verifier.ts";

export interface EnforcerSources {
  readonly svidPem: string;
  readonly keyPem: string;
  readonly trustDomain: string;
  readonly bundleJson: string;
  readonly revocations: {
    readonly sequence: number;
    readonly entries: readonly RevocationEntry[];
    readonly certificates?: readonly RevokedCertificate[];
  };
  readonly policyDocuments: readonly PolicyDocument[];
  readonly mode: EnforcementMode;
}

export function buildState(s: EnforcerSources): {
  local: LocalIdentity;
  trust: TrustState;
  policy: PolicyState;
} {
  const local = loadLocalIdentity(s.svidPem, s.keyPem);
  const trust: TrustState = {
    bundle: parseBundle(s.trustDomain, s.bundleJson),
    revocations: new RevocationIndex({
      trustDomain: s.trustDomain,
      sequence: s.revocations.sequence,
      entries: s.revocations.entries,
      certificates: s.revocations.certificates ?? [],
    }),
  };
  return { local, trust, policy: { set: compilePolicySet(s.policyDocuments), mode: s.mode } };
}

/** Which parts of the enforcer's state differ between two sets of sources. */
export function changedParts(
  before: EnforcerSources,
  after: EnforcerSources,
): { identity: boolean; trust: boolean; policy: boolean } {
  return {
    identity: before.svidPem !== after.svidPem || before.keyPem !== after.keyPem,
    trust:
      before.trustDomain !== after.trustDomain ||
      before.bundleJson !== after.bundleJson ||
      JSON.stringify(before.revocations) !== JSON.stringify(after.revocations),
    policy:
      before.mode !== after.mode ||
      JSON.stringify(before.policyDocuments) !== JSON.stringify(after.policyDocuments),
  };
}
