import type { Logger } from "pino";
import type { Labels } from "../../core/labels.ts";
import { encodePolicySet } from "../../core/policy/index.ts";
import type { CompiledPolicySet } from "../../core/policy/index.ts";
import type { RevocableCertificate } from "../../core/svid/revocation.ts";
import { revocationListSpec, trustBundleSpec } from "../../core/svid/xds-resources.ts";
import type { NodeInfo } from "../../xds/wire.ts";
import type { NodeAuthorizer, StreamPeer } from "../../xds/server.ts";
import type { XdsResource } from "../../xds/registry.ts";
import { ResourceSet } from "../../xds/snapshot.ts";
import {
  PEER_DIRECTORY,
  POLICY_SET,
  REVOCATION_LIST,
  TRUST_BUNDLE,
  WORKLOAD_IDENTITY,
} from "../../xds/type-urls.ts";
import type { IdentityPlane } from "../identity/plane.ts";
import { labelsWithProvenance } from "../../core/label-provenance.ts";
import { effectiveLabels } from "../identity/registry.ts";
import type { WorkloadRecord } from "../identity/registry.ts";
import type { ModeStore } from "../visibility/mode.ts";
import type { ControlPlaneMetrics } from "../metrics/metrics.ts";
import type { ServiceEndpoints } from "../xds/envoy.ts";
import type { XdsService } from "../xds/service.ts";
import {
  peerDirectoryResource,
  policySetResource,
  revocationListResource,
  trustBundleResource,
} from "../xds/sigil.ts";
import { verifyPeerWorkload } from "./node-auth.ts";
import type { AddressClaim, AddressClaims, AddressConflict } from "./address-ownership.ts";
import { decideAddressOwnership, peerIp } from "./address-ownership.ts";
import { OwnIdentityResources } from "./own-identity.ts";
import { authorizerRefusal, RevokedStreams } from "./revoked-streams.ts";
import { registrationFromMetadata } from "../../core/registration.ts";
import type { Registration } from "../../core/registration.ts";
import { contentGeneration, contentKey, workloadName, workloadSpec } from "./translate.ts";

/** Where the mesh publisher reads policy from: the active compiled set and its revision. */
export interface PolicySource {
  current(): { readonly set: CompiledPolicySet; readonly revision: number };
  onChange(listener: () => void): () => void;
}

export interface MeshOptions {
  readonly xds: XdsService;
  readonly identity: IdentityPlane;
  readonly policies: PolicySource;
  readonly modes: ModeStore;
  readonly metrics?: ControlPlaneMetrics;
  readonly log: Logger;
  /**
   * Serve the mesh-wide resources to unauthenticated streams from loopback addresses (set when the
   * loopback plaintext listener for proxyless gRPC clients is on; it exposes exactly that anyway).
   */
  readonly anonymousLoopback?: boolean;
  /**
   * Whether an address a sidecar registers without evidence (neither attested nor the address its
   * stream comes from) is published: "evidence" (default) never, "first-claim" to its first claimant.
   */
  readonly addressClaims?: AddressClaims;
  /** Where registrations are kept; default this process's memory. Replicas share one in etcd. */
  readonly registrations?: RegistrationBook;
}

/** A sidecar's registration with what the control plane saw of it. */
export interface RegistrationRecord {
  readonly registration: Registration;
  /** The address its ADS stream came from. */
  readonly observed: string | undefined;
  /**
   * Registration order, for first-claimant ties: milliseconds since the epoch, kept strictly
   * increasing on each replica, so replicas sharing records through etcd order them alike.
   */
  readonly order: number;
}

/** The registration each workload's sidecar made, by SPIFFE ID. */
export interface RegistrationBook {
  get(spiffeId: string): RegistrationRecord | undefined;
  set(spiffeId: string, record: RegistrationRecord): unknown;
  /** Registrations made through other replicas: calls `listener` after each. */
  onChange?(listener: () => void): () => void;
}

/** Node keys of streams that authenticated without TLS (the loopback plaintext listener). */
const PLAINTEXT_NODE_PREFIX = "plaintext/";
const DIRECTORY_NAME = "mesh";

interface SharedPolicySet {
  readonly resource: XdsResource;
  readonly set: ResourceSet;
}

/**
 * Turns the control plane's state into xDS and keeps it current. Mesh-wide: the TrustBundle (on
 * every CA change), the RevocationList (pushed the moment a workload is revoked), the PeerDirectory
 * (every issued, unrevoked workload with its labels, registered addresses and ports, and each port's
 * data path) and Envoy services per `app` label and port. Per workload: its PolicySet, one resource
 * per distinct content, so workloads selecting the same policies in the same mode share one
 * encoding and one snapshot.
 *
 * Re-issuance: each workload gets its own WorkloadIdentity resource with the labels its certificate
 * should carry (its effective labels). When an operator changes them, that resource is republished at
 * once; the sidecar sees it differ from its SVID's labels and renews, with or without ports.
 */
export class MeshPublisher {
  private readonly registrations: RegistrationBook;
  private lastOrder = 0;
  /** Claims refused at the last publish (see address-ownership.ts). */
  private addressConflicts: readonly AddressConflict[] = [];
  /** PolicySet resources by content key, kept while some workload uses them. */
  private policySets = new Map<string, SharedPolicySet>();
  private readonly unsubscribe: (() => void)[] = [];
  /** When each type last changed, for push latency (change → ACK). */
  private readonly changedAt = new Map<string, number>();
  private readonly acked = new Map<string, string>();
  /** The labels each workload was last published with (JSON), to skip no-op renewals. */
  private published = new Map<string, string>();
  private readonly revokedStreams: RevokedStreams;
  private readonly ownIdentities: OwnIdentityResources;

  constructor(private readonly options: MeshOptions) {
    this.registrations = options.registrations ?? new Map<string, RegistrationRecord>();
    this.ownIdentities = new OwnIdentityResources(options.xds.registry);
    this.revokedStreams = new RevokedStreams(
      options.xds.ads,
      () => options.identity.registry.revocationIndex(),
      options.log,
    );
  }

  /** Publishes everything now and republishes on every change of its inputs. */
  start(): void {
    const { identity, modes, policies, xds, metrics } = this.options;
    const onBundle = () => this.publishTrustBundle();
    const onRevocations = () => {
      this.publishRevocations();
      this.revokedStreams.endRevoked();
    };
    const onWorkloads = () => this.publishWorkloads();
    const onStreamOpen = this.revokedStreams.onStreamOpen;
    // A renewal that changes nothing the mesh sees (same workload, same labels) republishes nothing.
    const onIssued = (w: WorkloadRecord) => {
      if (this.published.get(w.spiffeId) !== JSON.stringify(labelsOf(w))) this.publishWorkloads();
    };
    identity.ca.on("bundle", onBundle);
    identity.registry.on("revocations", onRevocations);
    identity.registry.on("reissue-required", onWorkloads);
    identity.registry.on("issued", onIssued);
    modes.on("change", onWorkloads);
    xds.ads.on("stream-open", onStreamOpen);
    this.unsubscribe.push(
      () => xds.ads.off("stream-open", onStreamOpen),
      () => identity.ca.off("bundle", onBundle),
      () => identity.registry.off("revocations", onRevocations),
      () => identity.registry.off("reissue-required", onWorkloads),
      () => identity.registry.off("issued", onIssued),
      () => modes.off("change", onWorkloads),
      policies.onChange(onWorkloads),
      this.registrations.onChange?.(onWorkloads) ?? (() => undefined),
    );
    if (metrics) this.instrument(metrics);
    xds.publisher.batch(() => {
      this.publishTrustBundle();
      this.publishRevocations();
      this.publishWorkloads();
    });
  }

  stop(): void {
    for (const off of this.unsubscribe.splice(0)) off();
  }

  /**
   * The ADS node authorizer. On the TLS listener a stream is served only as the workload its client
   * certificate proves (verified against the bundle and revocations here, since the listener merely
   * requests certificates): the node id must be that SPIFFE ID, and the node metadata may register
   * the workload's addresses and ports. A stream from the loopback plaintext listener (proxyless
   * gRPC clients) is served the mesh-wide resources only, never a workload's policy.
   */
  readonly authorizeNode: NodeAuthorizer = (node: NodeInfo, peer: StreamPeer): string => {
    // grpc-js shows no transport facts for a connection without a client certificate that chains to
    // the bundle, whichever listener it came in on; the plaintext listener only binds loopback.
    if (peer.transportSecurity !== "ssl") {
      if (this.options.anonymousLoopback && isLoopbackPeer(peer.address))
        return `${PLAINTEXT_NODE_PREFIX}${node.id}`;
      throw new Error("no client certificate chaining to the trust bundle: present the workload's SVID");
    }
    const { identity } = this.options;
    let verified;
    try {
      verified = verifyPeerWorkload(peer.certificate, {
        bundle: identity.ca.bundle(),
        revocations: identity.registry.revocationIndex(),
      });
    } catch (err) {
      throw authorizerRefusal(node.id, err);
    }
    const spiffeId = verified.identity.spiffeId;
    if (node.id !== spiffeId)
      throw new Error(`the client certificate proves ${spiffeId}, not the claimed node ${node.id}`);
    const registration = registrationFromMetadata(node.metadata);
    const previous = this.registrations.get(spiffeId);
    const observed = peerIp(peer.address);
    if (
      registration &&
      (JSON.stringify(registration) !== JSON.stringify(previous?.registration) ||
        observed !== previous?.observed)
    ) {
      // A workload keeps its place in the claim order when it reconnects or re-registers.
      const order = previous?.order ?? this.nextOrder();
      this.registrations.set(spiffeId, { registration, observed, order });
      this.options.log.info({ spiffeId, observed, ...registration }, "workload registered");
      this.publishWorkloads();
    }
    return spiffeId;
  };

  /**
   * Registers a long-lived stream opened with `credential` (its verified SPIFFE ID and certificate
   * serial), so that revoking the workload or the certificate ends it with `end(reason)`. Returns the
   * release to call when the stream closes.
   */
  holdStream(credential: RevocableCertificate, end: (reason: string) => void): () => void {
    return this.revokedStreams.hold(credential, end);
  }

  private nextOrder(): number {
    this.lastOrder = Math.max(Date.now(), this.lastOrder + 1);
    return this.lastOrder;
  }

  /** The registered addresses and ports of a workload, if its sidecar sent any. */
  registration(spiffeId: string): Registration | undefined {
    return this.registrations.get(spiffeId)?.registration;
  }

  /** The registered addresses refused at the last publish, and who keeps each. */
  conflicts(): readonly AddressConflict[] {
    return this.addressConflicts;
  }

  private publishTrustBundle(): void {
    const { xds, identity } = this.options;
    const resource = trustBundleResource(xds.registry, trustBundleSpec(identity.ca.bundle()));
    this.publishShared(TRUST_BUNDLE, [resource]);
  }

  private publishRevocations(): void {
    const { xds, identity } = this.options;
    const list = identity.registry.revocationList();
    const resource = revocationListResource(xds.registry, revocationListSpec(list));
    xds.publisher.batch(() => {
      this.publishShared(REVOCATION_LIST, [resource]);
      // A revoked workload leaves the directory and loses its policy at the same time.
      this.publishWorkloads();
    });
  }

  /** Directory, Envoy services and every workload's PolicySet, in one republish. */
  private publishWorkloads(): void {
    const { xds, identity, policies, modes, log } = this.options;
    const { set, revision } = policies.current();
    const workloads = identity.registry.list().filter((w) => !w.revoked);
    const owned = this.decideAddresses(workloads);
    const nextSets = new Map<string, SharedPolicySet>();
    const published = new Map<string, string>();
    const assignments: [string, ResourceSet, ResourceSet][] = [];
    const entries = workloads.map((w) => {
      const labels = labelsOf(w);
      published.set(w.spiffeId, JSON.stringify(labels));
      const mode = modes.modeFor({ spiffeId: w.spiffeId, labels }).mode;
      const content = encodePolicySet(set, labels, mode);
      const key = contentKey(content);
      let shared = nextSets.get(key) ?? this.policySets.get(key);
      if (!shared) {
        const resource = policySetResource(xds.registry, {
          ...content,
          name: `policy-${key}`,
          generation: contentGeneration(content),
        });
        shared = { resource, set: new ResourceSet(POLICY_SET, [resource]) };
      }
      nextSets.set(key, shared);
      assignments.push([w.spiffeId, shared.set, this.ownIdentities.setFor(w.spiffeId, labels)]);
      return workloadSpec(set, {
        name: workloadName(w.spiffeId),
        spiffeId: w.spiffeId,
        labels,
        registration: owned.get(w.spiffeId) ?? null,
      });
    });
    this.policySets = nextSets;
    this.published = published;
    this.ownIdentities.retain(new Set(published.keys()));
    const directory = peerDirectoryResource(xds.registry, {
      name: DIRECTORY_NAME,
      workloads: entries,
      generation: contentGeneration(entries),
    });
    const revoked = identity.registry.list().filter((w) => w.revoked);
    xds.publisher.batch(() => {
      this.publishShared(PEER_DIRECTORY, [directory]);
      xds.publisher.setServices(servicesOf(entries));
      for (const [spiffeId, resources, own] of assignments) {
        const before = xds.cache.get(spiffeId)?.set(POLICY_SET);
        xds.publisher.setNodeResources(spiffeId, POLICY_SET, resources);
        if (before !== resources) this.changedAt.set(`${spiffeId} ${POLICY_SET}`, Date.now());
        if (xds.cache.get(spiffeId)?.set(WORKLOAD_IDENTITY) !== own)
          xds.publisher.setNodeResources(spiffeId, WORKLOAD_IDENTITY, own);
      }
      for (const w of revoked) xds.publisher.clearNode(w.spiffeId);
    });
    log.debug(
      { workloads: entries.length, policySets: nextSets.size, revision },
      "published workloads and policy sets",
    );
  }

  /**
   * Each workload's registration with only the addresses it owns; reports claims newly refused.
   * Nothing published ever gives one address:port to two workloads.
   */
  private decideAddresses(workloads: readonly WorkloadRecord[]): Map<string, Registration> {
    const claims: AddressClaim[] = [];
    for (const w of workloads) {
      const r = this.registrations.get(w.spiffeId);
      if (!r) continue;
      claims.push({
        spiffeId: w.spiffeId,
        addresses: r.registration.addresses,
        ports: r.registration.appPorts,
        attested: w.attestedAddresses,
        observed: r.observed,
        order: r.order,
      });
    }
    const { owned, conflicts } = decideAddressOwnership(claims, this.options.addressClaims ?? "evidence");
    const known = new Set(this.addressConflicts.map((c) => JSON.stringify(c)));
    for (const c of conflicts)
      if (!known.has(JSON.stringify(c))) this.options.log.warn(c, "address claim refused");
    this.addressConflicts = conflicts;
    const out = new Map<string, Registration>();
    for (const claim of claims) {
      const r = this.registrations.get(claim.spiffeId)?.registration;
      if (r) out.set(claim.spiffeId, { ...r, addresses: owned.get(claim.spiffeId) ?? [] });
    }
    return out;
  }

  private publishShared(typeUrl: string, resources: XdsResource[]): void {
    this.changedAt.set(typeUrl, Date.now());
    this.options.xds.publisher.setShared(typeUrl, resources);
  }

  /** Connected sidecars, and pushes with their latency from change to ACK, per resource type. */
  private instrument(metrics: ControlPlaneMetrics): void {
    const { ads } = this.options.xds;
    const onOpen = ({ key }: { key: string }) => {
      if (!key.startsWith(PLAINTEXT_NODE_PREFIX)) metrics.connectedSidecars.inc();
    };
    const onClose = ({ key }: { key: string }) => {
      if (!key.startsWith(PLAINTEXT_NODE_PREFIX)) metrics.connectedSidecars.dec();
    };
    const onAck = (e: { nodeId: string; typeUrl: string; version: string }) => {
      const ackKey = `${e.nodeId} ${e.typeUrl}`;
      if (e.version === "" || this.acked.get(ackKey) === e.version) return;
      this.acked.set(ackKey, e.version);
      const type = e.typeUrl.slice(e.typeUrl.lastIndexOf(".") + 1);
      metrics.pushes.inc({ type });
      const since = this.changedAt.get(ackKey) ?? this.changedAt.get(e.typeUrl);
      if (since !== undefined) metrics.pushLatency.observe({ type }, (Date.now() - since) / 1000);
    };
    ads.on("stream-open", onOpen);
    ads.on("stream-close", onClose);
    ads.on("ack", onAck);
    this.unsubscribe.push(
      () => ads.off("stream-open", onOpen),
      () => ads.off("stream-close", onClose),
      () => ads.off("ack", onAck),
    );
  }
}

/** Whether a grpc-js peer string (`ip:port`, `[v6]:port`, `ipv4:...`) names a loopback address. */
function isLoopbackPeer(address: string): boolean {
  const host = peerIp(address);
  return host !== undefined && (/^127\./.test(host) || host === "::1");
}

/**
 * The labels a workload's certificate should carry now, with their provenance classes: what policy
 * selects it by, as peers read them from its certificate.
 */
function labelsOf(w: WorkloadRecord): Labels {
  return labelsWithProvenance(effectiveLabels(w));
}

/** One Envoy service `<app>:<port>` per `app` label and registered port, for proxyless gRPC clients. */
function servicesOf(entries: readonly ReturnType<typeof workloadSpec>[]): ServiceEndpoints[] {
  const services = new Map<string, { address: string; port: number }[]>();
  for (const w of entries) {
    const app = w.labels.app;
    if (!app || !/^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/.test(app)) continue;
    for (const p of w.ports) {
      const name = `${app}:${p.port}`;
      const list = services.get(name) ?? [];
      for (const address of w.addresses) list.push({ address, port: p.port });
      services.set(name, list);
    }
  }
  return [...services]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, endpoints]) => ({ name, endpoints }));
}
