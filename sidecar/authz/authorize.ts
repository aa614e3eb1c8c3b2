import { randomUUID } from "node:crypto";
import net from "node:net";
import type { Logger } from "pino";
import type { FlowEndpoint, FlowRecord } from "../../core/flow.ts";
import type { Peer, WorkloadIdentity } from "../../core/identity.ts";
import type { AuthzRequest, Decision, EnforcementMode, HttpRequestFacts } from "../../core/policy/index.ts";
import type { UserIdentity } from "../../core/user.ts";
import {
  connectionPrecheck,
  evaluate,
  normalizeRequestPath,
  peerAuthenticationMode,
} from "../../core/policy/index.ts";
import { canonicalName } from "../../core/policy/dns.ts";
import { isCertificateRevocation } from "../../core/svid/revocation.ts";
import type { EgressNameResolver, NameBinding } from "../egress/dns.ts";
import { bindingProblem } from "../egress/dns.ts";
import { egressNamesOf } from "../egress/names.ts";
import type { SidecarMetrics } from "../admin/metrics.ts";
import type { MeshObservation } from "../admin/mesh-metrics.ts";
import type { FlowSink, PolicySnapshot, PolicySource } from "../inputs/sources.ts";
import { DirectoryLabels } from "../inputs/directory-labels.ts";
import { AccessLog } from "./access-log.ts";
import { decideStricter } from "./peer-labels.ts";
import { denialCategory, refused } from "./refusal.ts";
import type { RefusedDecision } from "./refusal.ts";

/**
 * The sidecar's enforcement step: builds the request core/policy decides on, and turns every decision
 * into metrics, a log line and a flow record. Policy is read at every call, so a new policy set
 * applies to the next request on an existing connection.
 */

export type FlowProtocol = FlowRecord["protocol"];

/** What one downstream connection is, as far as authorization is concerned. */
export interface ConnectionFacts {
  readonly direction: "ingress" | "egress";
  /** Ingress: the local application port. Egress: the destination port. */
  readonly port: number;
  /** Ingress: who connected. Egress: where the workload is going. */
  readonly peer: Peer;
  /** Whether the hop between the two workloads is (or will be) mutually authenticated. */
  readonly encrypted: boolean;
}

export interface FlowOutcome {
  readonly protocol: FlowProtocol;
  readonly http?: { readonly method: string; readonly path: string; readonly status?: number };
  /** gRPC: the status the stream ended with, when one was seen. */
  readonly grpcStatus?: number;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly startedAt: number;
}

/** The path a flow record shows: the one policy matched, else the normalized one, never the query. */
export function reportedPath(decision: Decision, rawTarget: string): string {
  if (decision.path !== undefined) return decision.path;
  const n = normalizeRequestPath(rawTarget);
  return n.ok ? n.path : (rawTarget.split("?")[0] ?? "");
}

/**
 * Flow ids: a random prefix drawn once per process and a counter. The control plane de-duplicates
 * by id across every reporter and restart, so the prefix is a fresh random UUID (122 random bits)
 * in each process; the counter keeps ids apart inside it. A record re-sent after a reconnect keeps
 * its id, which is what the de-duplication is for.
 */
const FLOW_ID_PREFIX = `${randomUUID()}-`;
let flowIdCounter = 0;

function nextFlowId(): string {
  return FLOW_ID_PREFIX + (flowIdCounter++).toString(36);
}

function endpointOf(peer: Peer, user: UserIdentity | null): FlowEndpoint {
  const end = peerEndpoint(peer);
  return user === null ? end : { ...end, user: { issuer: user.issuer, sub: user.sub } };
}

function peerEndpoint(peer: Peer): FlowEndpoint {
  if (peer.kind === "workload") {
    return peer.address === undefined
      ? { spiffeId: peer.identity.spiffeId, labels: peer.identity.labels }
      : { spiffeId: peer.identity.spiffeId, labels: peer.identity.labels, address: peer.address };
  }
  return { labels: {}, address: peer.dnsName ?? peer.address };
}

/** The refusal of a workload peer whose identity or certificate the revocation list names. */
function revokedRefusal(snapshot: PolicySnapshot, peer: Peer): RefusedDecision | null {
  if (peer.kind !== "workload") return null;
  const revoked = snapshot.revocations.revoking(peer.identity);
  if (!revoked) return null;
  return refused({
    kind: "revoked",
    spiffeId: peer.identity.spiffeId,
    serial: isCertificateRevocation(revoked) ? revoked.serial : null,
    reason: revoked.reason,
  });
}

export class Authorizer {
  constructor(
    private readonly self: () => WorkloadIdentity,
    private readonly policy: PolicySource,
    private readonly flows: FlowSink,
    private readonly metrics: SidecarMetrics,
    private readonly log: Logger,
    private readonly names?: EgressNameResolver,
    /** Which decisions become log lines, per port; by default denials only. */
    private readonly accessLog: AccessLog = new AccessLog([], log),
  ) {}

  /**
   * Before an egress connection to a non-mesh `address` is decided: resolves the names it may be
   * decided on (those the application claimed so far, and the exact names in this workload's egress
   * rules), so the synchronous decisions find current answers.
   */
  async prepareEgress(address: string, claimed: readonly (string | undefined)[]): Promise<void> {
    if (this.names === undefined || net.isIP(address) === 0) return;
    const fromPolicy = egressNamesOf(this.policy.current().policies, this.self().labels);
    if (fromPolicy.length === 0) return;
    const names = new Set(fromPolicy);
    for (const name of claimed) if (name !== undefined) names.add(name);
    await this.names.prepare(names, address);
  }

  /**
   * Never throws: a failure inside the engine is a denial (fail closed), logged with its cause.
   * `user`: the person a user-access port verified for this request (`user-access/`).
   */
  decide(
    conn: ConnectionFacts,
    http?: HttpRequestFacts,
    peer: Peer = conn.peer,
    user: UserIdentity | null = null,
  ): Decision {
    const snapshot = this.policy.current();
    // A revocation also ends connections that were authenticated before it arrived, request by
    // request, in both directions: pooled egress connections to a revoked destination included.
    const revoked = revokedRefusal(snapshot, peer);
    if (revoked) return revoked;
    try {
      // Built once per decision, in one of two fixed shapes (no spread), since this runs per request.
      const { direction, port } = conn;
      const local = this.self();
      // A plaintext connection accepted while its port allowed it carries no request once the port
      // turns STRICT (the mode is read again on every request, like revocation).
      if (
        direction === "ingress" &&
        !conn.encrypted &&
        peerAuthenticationMode(snapshot.policies, local.labels, port) === "STRICT"
      )
        return refused({ kind: "mtls-required", port });
      const mode = snapshot.mode;
      if (peer.kind === "workload")
        return decideStricter(peer, snapshot.peerLabels ?? DirectoryLabels.empty(), (p) =>
          evaluate(
            snapshot.policies,
            user !== null
              ? { direction, local, peer: p, port, mode, http, user }
              : http === undefined
                ? { direction, local, peer: p, port, mode }
                : { direction, local, peer: p, port, mode, http },
          ),
        );
      const request: AuthzRequest =
        user !== null
          ? { direction, local, peer, port, mode, http, user }
          : http === undefined
            ? { direction, local, peer, port, mode }
            : { direction, local, peer, port, mode, http };
      const decision = evaluate(snapshot.policies, request);
      if (direction === "egress" && peer.dnsName !== undefined)
        return this.bindName(decision, mode, peer.address, peer.dnsName, () =>
          evaluate(snapshot.policies, { ...request, peer: { kind: "external", address: peer.address } }),
        );
      return decision;
    } catch (err) {
      this.log.error(
        { err, direction: conn.direction, port: conn.port },
        "policy evaluation failed; denying",
      );
      return refused({ kind: "internal-error", message: (err as Error).message });
    }
  }

  /**
   * Whether an open mesh HTTP connection may go on carrying requests, re-decided when the policy or a
   * peer's labels change: refused when its peer is revoked or no request from it on this port could
   * be allowed any more (core/policy `connectionPrecheck`), under its certificate's labels and the
   * directory's. Requests on a connection it keeps are still decided one by one.
   */
  decideConnection(conn: ConnectionFacts): Decision {
    const snapshot = this.policy.current();
    const { direction, port, peer } = conn;
    const revoked = revokedRefusal(snapshot, peer);
    if (revoked) return revoked;
    try {
      const local = this.self();
      const mode = snapshot.mode;
      return decideStricter(peer, snapshot.peerLabels ?? DirectoryLabels.empty(), (p) =>
        connectionPrecheck(snapshot.policies, { direction, local, peer: p, port, mode }),
      );
    } catch (err) {
      this.log.error({ err, direction, port }, "policy evaluation failed; denying");
      return refused({ kind: "internal-error", message: (err as Error).message });
    }
  }

  /**
   * A claimed name only counts for an allow when the destination address is one it resolves to.
   * Denials stand as they are (a name can only make them apply); an allow that holds without the name
   * (by address, or egress unrestricted) needs no check. An explicit target named by host name is
   * bound already: the sidecar itself resolves and connects to it.
   */
  private bindName(
    decision: Decision,
    mode: EnforcementMode,
    address: string,
    name: string,
    withoutName: () => Decision,
  ): Decision {
    if (decision.verdict === "deny" || decision.wouldDeny) return decision;
    if (net.isIP(address) === 0 && canonicalName(address) === canonicalName(name)) return decision;
    const unnamed = withoutName();
    if (unnamed.verdict === "allow" && !unnamed.wouldDeny) return decision;
    const problem =
      this.names === undefined
        ? `dns-binding: ${name} cannot be checked against ${address} (no resolver)`
        : bindingProblem(name, address, this.checkName(this.names, name, address));
    if (problem === null) return decision;
    const denial: RefusedDecision = {
      ...decision,
      verdict: "deny",
      wouldDeny: false,
      policy: null,
      reason: problem,
      refusal: { kind: "dns-binding", problem },
    };
    return mode === "observe"
      ? { ...denial, verdict: "allow", wouldDeny: true, reason: `observe mode, would deny: ${problem}` }
      : denial;
  }

  /**
   * The lookup a request's decision waits for: a name the application claims for a destination
   * outside the mesh (another Host on a keep-alive connection, an HTTP/2 :authority) that this
   * workload's egress rules may allow by name and that has no current answer. Null when the
   * decision needs none; the promise never rejects and is bounded by the resolver's timeout.
   */
  nameLookup(conn: ConnectionFacts, peer: Peer): Promise<void> | null {
    if (this.names === undefined || conn.direction !== "egress" || peer.kind !== "external") return null;
    const name = peer.dnsName;
    if (name === undefined || net.isIP(peer.address) === 0) return null;
    if (this.names.check(name, peer.address).kind !== "unresolved") return null;
    if (egressNamesOf(this.policy.current().policies, this.self().labels).length === 0) return null;
    return this.names.prepare([name], peer.address);
  }

  /** A name that had no answer when decided is denied (not waited for) and looked up for the next try. */
  private checkName(names: EgressNameResolver, name: string, address: string): NameBinding {
    const binding = names.check(name, address);
    if (binding.kind === "unresolved") void names.prepare([name], address);
    return binding;
  }

  /** Counts a TCP connection whose decision was just made; `record` counts its end. */
  tcpOpened(conn: ConnectionFacts, decision: Decision, peer: Peer = conn.peer): void {
    this.metrics.mesh.tcpOpened(this.observation(conn, decision, peer, "tcp"));
  }

  private observation(
    conn: ConnectionFacts,
    decision: Decision,
    peer: Peer,
    protocol: FlowProtocol,
  ): MeshObservation {
    return {
      direction: conn.direction,
      self: this.self(),
      peer,
      encrypted: conn.encrypted,
      protocol,
      verdict: decision.verdict === "deny" ? "deny" : decision.wouldDeny ? "would_deny" : "allow",
      policy: decision.policy,
    };
  }

  private recordMesh(
    conn: ConnectionFacts,
    decision: Decision,
    outcome: FlowOutcome,
    peer: Peer,
    seconds: number,
  ): void {
    const o = this.observation(conn, decision, peer, outcome.protocol);
    if (outcome.protocol === "tcp") {
      this.metrics.mesh.tcpClosed(o, outcome.bytesSent, outcome.bytesReceived);
      return;
    }
    this.metrics.mesh.request(o, {
      status: outcome.http?.status ?? 0,
      grpcStatus: outcome.grpcStatus,
      seconds,
      requestBytes: outcome.bytesReceived,
      responseBytes: outcome.bytesSent,
    });
  }

  /** Records one decided request or connection once its outcome is known. */
  record(
    conn: ConnectionFacts,
    decision: Decision,
    outcome: FlowOutcome,
    peer: Peer = conn.peer,
    user: UserIdentity | null = null,
  ): void {
    const now = Date.now();
    const self = this.self();
    const selfEnd: FlowEndpoint = { spiffeId: self.spiffeId, labels: self.labels };
    const other = endpointOf(peer, user);
    const durationMs = now - outcome.startedAt;
    this.metrics.recordDecision(
      conn.direction,
      outcome.protocol,
      decision.verdict,
      durationMs / 1000,
      decision.verdict === "deny" ? denialCategory(decision) : null,
    );
    this.recordMesh(conn, decision, outcome, peer, durationMs / 1000);
    const record: FlowRecord = {
      id: nextFlowId(),
      time: outcome.startedAt,
      reporter: { spiffeId: self.spiffeId, kind: "sidecar" },
      direction: conn.direction,
      source: conn.direction === "ingress" ? other : selfEnd,
      destination: conn.direction === "ingress" ? selfEnd : other,
      port: conn.port,
      protocol: outcome.protocol,
      // Set even when undefined: a spread in the middle of the literal would build every record
      // through V8's slow property definition and leave it in dictionary mode.
      http: outcome.http,
      verdict: decision.verdict,
      wouldDeny: decision.wouldDeny,
      policy: decision.policy,
      reason: decision.reason,
      encrypted: conn.encrypted,
      bytesSent: outcome.bytesSent,
      bytesReceived: outcome.bytesReceived,
      durationMs,
    };
    this.accessLog.write({
      port: conn.port,
      verdict: decision.verdict,
      wouldDeny: decision.wouldDeny,
      fields: () => ({
        direction: conn.direction,
        peer: other.spiffeId ?? other.address,
        user: other.user?.sub,
        port: conn.port,
        http: outcome.http,
        verdict: decision.verdict,
        wouldDeny: decision.wouldDeny,
        policy: decision.policy,
        reason: decision.reason,
        durationMs,
        bytesSent: outcome.bytesSent,
        bytesReceived: outcome.bytesReceived,
      }),
    });
    try {
      this.flows.report(record);
    } catch (err) {
      this.log.warn({ err }, "flow sink refused a record");
    }
  }
}
