import type { AttestedLabel } from "../../core/labels.ts";
import { labelsWithProvenance } from "../../core/label-provenance.ts";
import { EventEmitter } from "node:events";
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { decodePolicySet, emptyPolicySet } from "../../core/policy/index.ts";
import type { DecodedPolicySet } from "../../core/policy/index.ts";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import { revocationListFromResource, trustBundleFromResource } from "../../core/svid/xds-resources.ts";
import { XdsClient } from "../../xds/client.ts";
import type { TypeUpdate } from "../../xds/client.ts";
import { defaultTypeRegistry } from "../../xds/registry.ts";
import {
  PEER_DIRECTORY,
  POLICY_SET,
  REVOCATION_LIST,
  TRUST_BUNDLE,
  WORKLOAD_IDENTITY,
} from "../../xds/type-urls.ts";
import type { NodeSpec } from "../../xds/wire.ts";
import type { PeerDirectoryHolder, PolicyHolder } from "../inputs/state.ts";
import { DirectoryLabels } from "../inputs/directory-labels.ts";
import { decodePeerDirectory } from "./peer-directory.ts";
import type { DirectoryEntry } from "./peer-directory.ts";
import { labelKey, wantedLabelKey } from "./own-identity.ts";

/**
 * The sidecar's five xDS subscriptions over one ADS stream. Each handler validates the whole new
 * state before touching anything: a bad resource throws (the client NACKs with the message) and
 * the last good state stays in force. Accepted state goes straight into the holders the data path
 * reads, so the next connection or request sees it.
 */

export interface SubscriptionTargets {
  readonly trustDomain: string;
  /** The workload's SPIFFE ID and name: which PolicySet is its own. */
  readonly spiffeId: string;
  readonly workloadName: string;
  readonly policy: PolicyHolder;
  readonly peers: PeerDirectoryHolder;
  /** Receives the trust bundle of the workload's own trust domain. */
  readonly setTrustBundle: (bundle: TrustBundle) => void;
  /** The labels in the workload's current certificate. */
  readonly ownLabels: () => readonly AttestedLabel[];
  /** Called when the labels the control plane wants for this workload differ from the certificate's. */
  readonly renewIdentity: () => void;
  readonly peerInboundPort: number;
}

export interface SubscriptionOptions extends SubscriptionTargets {
  /** One control plane, or several replicas to fail over between. */
  readonly target: string | readonly string[];
  /** Index in `target` of the replica to open the first stream to (default: a random one). */
  readonly firstTarget?: number;
  readonly credentials: grpc.ChannelCredentials;
  readonly node: NodeSpec;
  readonly log: Logger;
}

export interface SubscriptionEvents {
  /** The first own PolicySet was accepted. */
  policy: [DecodedPolicySet];
  /**
   * A policy set, revocation list or new peer labels were applied (what the fast path's enforcers
   * and data-path workers must hear about).
   */
  changed: [];
  /** A peer directory was applied: every destination now in force (what data-path workers must hear about). */
  peers: [readonly DirectoryEntry[]];
}

export class SidecarSubscriptions extends EventEmitter<SubscriptionEvents> {
  readonly client: XdsClient;
  private policySet: DecodedPolicySet | null = null;
  private revocationSequence = -1;
  /** The wanted label set a renewal was last asked for, so a lasting mismatch asks only once. */
  private renewedFor = "";

  constructor(private readonly o: SubscriptionOptions) {
    super();
    this.client = new XdsClient({
      target: o.target,
      ...(o.firstTarget !== undefined ? { firstTarget: o.firstTarget } : {}),
      credentials: o.credentials,
      node: o.node,
      protocol: "sotw",
      registry: defaultTypeRegistry(),
    });
    this.client.subscribe(TRUST_BUNDLE, { handler: (u) => this.onTrustBundle(u) });
    this.client.subscribe(POLICY_SET, { handler: (u) => this.onPolicySet(u) });
    this.client.subscribe(PEER_DIRECTORY, { handler: (u) => this.onPeerDirectory(u) });
    this.client.subscribe(REVOCATION_LIST, { handler: (u) => this.onRevocations(u) });
    this.client.subscribe(WORKLOAD_IDENTITY, { handler: (u) => this.onOwnIdentity(u) });
    this.client.on("nack", (n) => o.log.warn({ typeUrl: n.typeUrl, error: n.error }, "xDS resource refused"));
    this.client.on("disconnected", (d) =>
      o.log.warn({ code: d.code, details: d.details, retryInMs: d.retryInMs }, "xDS stream lost"),
    );
    this.client.on("connected", () => o.log.info({ target: this.client.target }, "xDS stream up"));
  }

  /** The policy set in force, or null before the first one arrived. */
  get current(): DecodedPolicySet | null {
    return this.policySet;
  }

  start(): void {
    this.client.start();
  }

  close(): void {
    this.client.close();
  }

  private onTrustBundle(update: TypeUpdate): void {
    let own: TrustBundle | null = null;
    for (const r of update.resources.values()) {
      const bundle = trustBundleFromResource(r.message);
      if (bundle.trustDomain === this.o.trustDomain) own = bundle;
    }
    // No bundle for our trust domain leaves the one from issuance in force (the CA's roots).
    if (own) this.o.setTrustBundle(own);
  }

  private onPolicySet(update: TypeUpdate): void {
    const all = [...update.resources.values()];
    const mine = all.filter(
      (r) =>
        (r.message as { workload?: unknown }).workload === this.o.spiffeId ||
        (r.message as { workload?: unknown }).workload === this.o.workloadName,
    );
    const chosen = mine.length > 0 ? mine : all.length === 1 ? all : [];
    if (chosen.length > 1)
      throw new Error(
        `${chosen.length} PolicySets name this workload: ${chosen.map((r) => r.name).join(", ")}`,
      );
    const resource = chosen[0];
    if (!resource) {
      if (all.length > 1)
        throw new Error(
          `none of ${all.length} PolicySets names ${this.o.spiffeId} or ${this.o.workloadName}`,
        );
      if (this.policySet) {
        // The control plane withdrew this workload's policy: fall back to default deny, not to the old rules.
        this.o.log.warn({ previous: this.policySet.name }, "policy set withdrawn: default deny");
        this.o.policy.update({ policies: emptyPolicySet(), mode: "enforce" });
        this.policySet = { ...this.policySet, policies: emptyPolicySet(), documents: [], mode: "enforce" };
        this.emit("changed");
      }
      return;
    }
    const decoded = decodePolicySet(resource.message);
    const first = this.policySet === null;
    this.policySet = decoded;
    this.o.policy.update({ policies: decoded.policies, mode: decoded.mode });
    this.o.log.info(
      {
        policySet: decoded.name,
        generation: decoded.generation,
        mode: decoded.mode,
        documents: decoded.documents.length,
      },
      "policy set applied",
    );
    if (first) this.emit("policy", decoded);
    this.emit("changed");
  }

  private onPeerDirectory(update: TypeUpdate): void {
    // Several resources are one directory: an address:port two of them give to different
    // identities is left out for both, as within one resource.
    const resources = [...update.resources.values()];
    const { entries, labels, rejected } = decodePeerDirectory(
      {
        name: resources.map((r) => r.name).join("+") || "(none)",
        workloads: resources.flatMap((r) => workloadsOf(r.message)),
      },
      { trustDomain: this.o.trustDomain, sidecarPort: this.o.peerInboundPort },
    );
    for (const reason of rejected) this.o.log.warn({ reason }, "peer directory entry left out");
    this.o.peers.replace(entries);
    this.emit("peers", entries);
    // A peer's labels changing at the control plane re-decides its open connections here at once,
    // before the peer renews its certificate (authz/peer-labels.ts).
    if (!labels.equals(this.o.policy.current().peerLabels ?? DirectoryLabels.empty())) {
      this.o.policy.update({ peerLabels: labels });
      this.emit("changed");
    }
    this.o.log.debug({ destinations: entries.length }, "peer directory applied");
  }

  private onOwnIdentity(update: TypeUpdate): void {
    const resource = update.resources.get(this.o.spiffeId);
    if (!resource) return;
    const wanted = wantedLabelKey(resource.message, this.o.spiffeId);
    // The control plane's labels carry the derived provenance keys (core/label-provenance.ts).
    const held = labelKey(Object.entries(labelsWithProvenance(this.o.ownLabels())));
    if (wanted === held || wanted === this.renewedFor) return;
    this.renewedFor = wanted;
    this.o.renewIdentity();
  }

  private onRevocations(update: TypeUpdate): void {
    let own = null;
    for (const r of update.resources.values()) {
      const list = revocationListFromResource(r.message);
      if (list.trustDomain === this.o.trustDomain) own = list;
    }
    if (!own) return;
    if (own.sequence < this.revocationSequence)
      throw new Error(`RevocationList sequence ${own.sequence} is older than ${this.revocationSequence}`);
    this.revocationSequence = own.sequence;
    this.o.policy.update({ revocations: new RevocationIndex(own) });
    this.o.log.info({ sequence: own.sequence, revoked: own.entries.length }, "revocation list applied");
    this.emit("changed");
  }
}

/** The workload entries of a decoded PeerDirectory message (validated by the directory decoder). */
function workloadsOf(message: unknown): unknown[] {
  const workloads = (message as { workloads?: unknown } | null)?.workloads;
  return Array.isArray(workloads) ? workloads : [];
}
