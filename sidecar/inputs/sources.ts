import type { FlowRecord } from "../../core/flow.ts";
import type { WorkloadIdentity } from "../../core/identity.ts";
import type { CompiledPolicySet, EnforcementMode } from "../../core/policy/index.ts";
import type { RevocationIndex } from "../../core/svid/revocation.ts";
import type { WorkloadCredentials } from "../identity/rotation.ts";
import type { DirectoryLabels } from "./directory-labels.ts";

/**
 * What the data path consumes from the rest of the sidecar. Each is a narrow, synchronous read of
 * the latest state, so a change (rotation, new policy, new bundle) applies to the next connection or
 * request without restarting anything.
 */

/**
 * What the data path's handshakes need of the workload's credentials: its key, its X.509-SVID chain
 * and the trust bundle peers are verified against.
 */
export type TlsCredentials = Pick<WorkloadCredentials, "privateKeyPem" | "certChainPem" | "bundle">;

export interface CredentialSource {
  current(): TlsCredentials;
  /** Emitted after `current()` changed (SVID rotation or a new trust bundle). */
  on(event: "rotate", listener: () => void): unknown;
  off(event: "rotate", listener: () => void): unknown;
}

/** The latest control-plane state that decisions depend on. */
export interface PolicySnapshot {
  readonly policies: CompiledPolicySet;
  /** This workload's enforcement mode, computed by the control plane. */
  readonly mode: EnforcementMode;
  readonly revocations: RevocationIndex;
  /**
   * Each mesh workload's labels as the control plane's peer directory lists them now, by SPIFFE ID:
   * a peer is decided under these and its certificate's, the stricter winning (`authz/peer-labels.ts`).
   * Absent: no directory held, peers are decided by their certificates.
   */
  readonly peerLabels?: DirectoryLabels;
}

export interface PolicySource {
  current(): PolicySnapshot;
  /** Told after every change, when the source can tell (open tunnels are then re-decided). */
  on?(event: "change", listener: () => void): unknown;
  off?(event: "change", listener: () => void): unknown;
}

/** A mesh workload reachable at a destination address, as the control plane's peer directory says. */
export interface MeshDestination {
  /** What the destination's certificate must prove, and the labels egress policy matches. */
  readonly identity: Pick<WorkloadIdentity, "spiffeId" | "trustDomain" | "labels">;
  /** Where the destination's sidecar accepts the mTLS hop (its inbound listener). */
  readonly sidecar: { readonly host: string; readonly port: number };
  /** False when the destination's port runs with peer authentication DISABLE: send plaintext. */
  readonly mtls: boolean;
}

export interface PeerDirectory {
  /** The mesh workload serving `address:port`, or null for a destination outside the mesh. */
  lookup(address: string, port: number): MeshDestination | null;
}

/** Receives one record per authorization decision (the visibility reporter batches them). */
export interface FlowSink {
  report(record: FlowRecord): void;
}
