import type { Labels } from "../labels.ts";
import type { CompiledPolicySet } from "./compile.ts";
import type { MtlsMode, PolicyDocument } from "./schema.ts";

/** With no PeerAuthentication selecting a workload, its ports accept mutual TLS only. */
export const DEFAULT_MTLS_MODE: MtlsMode = "STRICT";

/** The mTLS mode for a workload's port (see README "PeerAuthentication"). */
export function peerAuthenticationMode(set: CompiledPolicySet, labels: Labels, port: number): MtlsMode {
  const pa = set.viewFor(labels).peerAuthentication;
  if (pa === null) return DEFAULT_MTLS_MODE;
  return pa.portLevel.get(port) ?? pa.mode;
}

/** Every document (AuthorizationPolicy and PeerAuthentication) whose selector selects the workload. */
export function policiesFor(set: CompiledPolicySet, labels: Labels): readonly PolicyDocument[] {
  return set.viewFor(labels).documents;
}
