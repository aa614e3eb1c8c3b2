import type { Peer } from "../identity.ts";
import type { Labels } from "../labels.ts";
import type { UserIdentity } from "../user.ts";
import { parseIpAddress } from "./address.ts";
import type { IpAddress } from "./address.ts";
import type { CompiledPolicySet, CompiledRule, HttpFacts, PeerFacts, RuleLists } from "./compile.ts";
import { canonicalHost, canonicalName } from "./dns.ts";
import { normalizeRequestPath } from "./path.ts";

/** The decision procedure shared by every enforcement point (see README "Actions" and "Defaults"). */

export type Direction = "ingress" | "egress";
export type EnforcementMode = "enforce" | "observe";

export interface HttpRequestFacts {
  readonly method: string;
  /** The raw request-target as received. */
  readonly path: string;
  /** Host header or :authority, if any. */
  readonly host?: string;
  /** Lower-cased header names. */
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
}

export interface AuthzRequest {
  readonly direction: Direction;
  /** The workload the enforcement point protects. */
  readonly local: { readonly labels: Labels };
  readonly peer: Peer;
  /** Ingress: the person the request carries a verified session or bearer token of. */
  readonly user?: UserIdentity;
  /** Ingress: the local workload's port. Egress: the destination port. */
  readonly port: number;
  /** Absent for non-HTTP (L4) traffic. */
  readonly http?: HttpRequestFacts;
  readonly mode: EnforcementMode;
}

export interface Decision {
  readonly verdict: "allow" | "deny";
  /** True when policy denies but observe mode let the traffic through. */
  readonly wouldDeny: boolean;
  /** The deciding rule id, or null for defaults and malformed requests. */
  readonly policy: string | null;
  readonly reason: string;
  /** Ids of matching log rules. */
  readonly logged: readonly string[];
  /** 400 when the request path was rejected by normalization. */
  readonly status?: 400;
  /** The normalized path that was matched (HTTP only). */
  readonly path?: string;
}

/**
 * A denial an enforcement point makes itself, without a deciding rule (bad framing, mTLS required,
 * revoked peer, an engine failure): enforced in every mode, since no policy could allow it.
 */
export function refusalDecision(reason: string): Decision {
  return { verdict: "deny", wouldDeny: false, policy: null, reason, logged: [] };
}

/**
 * Parsed peer addresses, per peer object: an enforcement point keeps one Peer per connection, so a
 * connection's address is parsed once however many requests it carries.
 */
const parsedAddresses = new WeakMap<Peer, IpAddress | null>();

/** Peer facts for one evaluation; an external peer's address is parsed only if a CIDR rule asks. */
class EvaluatedPeer implements PeerFacts {
  readonly labels: Labels | null;
  readonly external: boolean;
  readonly dnsName: string | null;
  readonly user: UserIdentity | null;

  constructor(
    private readonly peer: Peer,
    user: UserIdentity | undefined,
  ) {
    this.user = user ?? null;
    if (peer.kind === "workload") {
      this.labels = peer.identity.labels;
      this.external = false;
      this.dnsName = null;
    } else {
      this.labels = null;
      this.external = true;
      this.dnsName = peer.dnsName === undefined ? null : canonicalName(peer.dnsName);
    }
  }

  address(): IpAddress | null {
    const peer = this.peer;
    if (peer.kind !== "external") return null;
    let parsed = parsedAddresses.get(peer);
    if (parsed === undefined) {
      parsed = parseIpAddress(peer.address);
      parsedAddresses.set(peer, parsed);
    }
    return parsed;
  }
}

function ruleMatches(rule: CompiledRule, peer: PeerFacts, port: number, http: HttpFacts | null): boolean {
  if (rule.ports !== null && !rule.ports.has(port)) return false;
  if (rule.peer !== null && !rule.peer(peer)) return false;
  if (rule.http === null) return true;
  // Non-HTTP traffic on the port of an HTTP rule: a deny still applies, an allow (or log) cannot.
  if (http === null) return rule.action === "deny";
  return rule.http.matches(http);
}

const NONE: readonly string[] = Object.freeze([]);
const DEFAULT_DENY: Record<Direction, string> = {
  ingress: "no rule allows this ingress (default deny)",
  egress: "no rule allows this egress (default deny)",
};
const UNRESTRICTED_EGRESS = "egress is not restricted for this workload";

function finish(
  mode: EnforcementMode,
  denied: boolean,
  policy: string | null,
  reason: string,
  logged: readonly string[],
  path: string | undefined,
): Decision {
  // One object shape for every decision keeps this call site monomorphic on the hot path.
  if (!denied) return { verdict: "allow", wouldDeny: false, policy, reason, logged, path };
  if (mode === "observe")
    return {
      verdict: "allow",
      wouldDeny: true,
      policy,
      reason: `observe mode, would deny: ${reason}`,
      logged,
      path,
    };
  return { verdict: "deny", wouldDeny: false, policy, reason, logged, path };
}

function addHostReadings(hosts: string[], authority: string): void {
  const h = canonicalHost(authority);
  if (!hosts.includes(h)) hosts.push(h);
  // `user@host`: servers differ on whether that names `host`; keep the unstripped reading too, which no
  // allow pattern matches, so only a deny can act on it.
  if (authority.includes("@")) {
    const raw = authority.toLowerCase();
    if (!hosts.includes(raw)) hosts.push(raw);
  }
}

/**
 * The readings rules are matched on. Headers are read from the request only when a rule tests one:
 * an enforcement point may build them on first use (most policies test none).
 */
class HttpReadings implements HttpFacts {
  constructor(
    readonly method: string,
    readonly paths: readonly string[],
    readonly hosts: readonly string[],
    private readonly request: HttpRequestFacts,
  ) {}

  get headers(): HttpFacts["headers"] {
    return this.request.headers;
  }
}

function httpFacts(http: HttpRequestFacts): HttpFacts | { malformed: string } {
  const n = normalizeRequestPath(http.path);
  if (!n.ok) return { malformed: n.reason };
  const paths = n.withoutParams === undefined ? [n.path] : [n.path, n.withoutParams];
  const hosts: string[] = [];
  if (http.host !== undefined) addHostReadings(hosts, http.host);
  if (n.authority !== undefined) addHostReadings(hosts, n.authority);
  return new HttpReadings(http.method, paths, hosts, http);
}

function decide(
  rules: RuleLists,
  request: AuthzRequest,
  peer: PeerFacts,
  http: HttpFacts | null,
  path: string | undefined,
): Decision {
  let logged = NONE;
  for (const r of rules.log) {
    if (ruleMatches(r, peer, request.port, http)) logged = logged === NONE ? [r.id] : [...logged, r.id];
  }
  for (const r of rules.deny) {
    if (ruleMatches(r, peer, request.port, http))
      return finish(request.mode, true, r.id, `denied by ${r.id}`, logged, path);
  }
  for (const r of rules.allow) {
    if (ruleMatches(r, peer, request.port, http))
      return finish(request.mode, false, r.id, `allowed by ${r.id}`, logged, path);
  }
  return finish(request.mode, true, null, DEFAULT_DENY[request.direction], logged, path);
}

/** Decides one request or, without `http`, one non-HTTP connection. Never throws on request input. */
export function evaluate(set: CompiledPolicySet, request: AuthzRequest): Decision {
  const view = set.viewFor(request.local.labels);
  if (request.direction === "egress" && !view.egressRestricted)
    return finish(request.mode, false, null, UNRESTRICTED_EGRESS, NONE, undefined);
  const rules = request.direction === "ingress" ? view.ingress : view.egress;
  let http: HttpFacts | null = null;
  if (request.http !== undefined) {
    const facts = httpFacts(request.http);
    if ("malformed" in facts)
      return {
        verdict: "deny",
        wouldDeny: false,
        policy: null,
        reason: `malformed request path: ${facts.malformed}`,
        logged: NONE,
        path: undefined,
        status: 400,
      };
    http = facts;
  }
  return decide(rules, request, new EvaluatedPeer(request.peer, request.user), http, http?.paths[0]);
}

/**
 * Early check for an HTTP connection before its first request: denies only when no request on it could
 * be allowed (an L4 deny matches the peer and port, or no allow rule of any kind could).
 */
export function connectionPrecheck(set: CompiledPolicySet, request: Omit<AuthzRequest, "http">): Decision {
  const view = set.viewFor(request.local.labels);
  if (request.direction === "egress" && !view.egressRestricted)
    return finish(request.mode, false, null, UNRESTRICTED_EGRESS, NONE, undefined);
  const rules = request.direction === "ingress" ? view.ingress : view.egress;
  const peer = new EvaluatedPeer(request.peer, request.user);
  const reachable = (r: CompiledRule): boolean =>
    (r.ports === null || r.ports.has(request.port)) && (r.peer === null || r.peer(peer));
  for (const r of rules.deny) {
    if (r.http === null && reachable(r))
      return finish(request.mode, true, r.id, `denied by ${r.id}`, NONE, undefined);
  }
  for (const r of rules.allow) {
    if (reachable(r))
      return finish(request.mode, false, r.id, `requests may be allowed by ${r.id}`, NONE, undefined);
  }
  return finish(request.mode, true, null, DEFAULT_DENY[request.direction], NONE, undefined);
}

/** Whether any rule on this port (in the given direction) has HTTP conditions, i.e. needs the L7 proxy. */
export function httpRulesOnPort(
  set: CompiledPolicySet,
  labels: Labels,
  port: number,
  direction: Direction = "ingress",
): boolean {
  const view = set.viewFor(labels);
  if (direction === "egress" && !view.egressRestricted) return false;
  const rules = direction === "ingress" ? view.ingress : view.egress;
  const onPort = (r: CompiledRule): boolean => r.http !== null && (r.ports === null || r.ports.has(port));
  return rules.log.some(onPort) || rules.deny.some(onPort) || rules.allow.some(onPort);
}
