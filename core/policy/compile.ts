import type { Labels } from "../labels.ts";
import type { UserIdentity } from "../user.ts";
import { CidrSet, parseCidr } from "./address.ts";
import type { CidrBlock, IpAddress } from "./address.ts";
import { NameMatcher } from "./dns.ts";
import { PathMatcher } from "./path-pattern.ts";
import { compileSelector, selectorSpecificity } from "./selector.ts";
import type { LabelTest } from "./selector.ts";
import { compileUserTest } from "./user-match.ts";
import type {
  AuthorizationPolicy,
  EgressRule,
  HeaderMatch,
  HttpMatch,
  IngressRule,
  MtlsMode,
  PeerAuthentication,
  PeerMatch,
  PolicyDocument,
  RuleAction,
} from "./schema.ts";
import { byCodeUnits } from "../code-unit-order.ts";

/**
 * Compilation: validated documents become matchers built once (selectors as predicates, paths as sets and
 * globs, CIDRs as sorted ranges), so evaluating a request does no parsing. A compiled set is immutable;
 * a policy change produces a new set.
 */

/** What is known about the peer during one evaluation. The address is parsed at most once, on demand. */
export interface PeerFacts {
  readonly labels: Labels | null;
  readonly external: boolean;
  readonly address: () => IpAddress | null;
  readonly dnsName: string | null;
  /** The person the request carries a verified token or session of, if any. */
  readonly user: UserIdentity | null;
}

export type PeerTest = (peer: PeerFacts) => boolean;

export type Headers = Readonly<Record<string, string | readonly string[] | undefined>>;

export interface HttpFacts {
  readonly method: string;
  /** Every reading of the path (one, or two when `;` parameters make servers disagree). */
  readonly paths: readonly string[];
  /** Every reading of the host (Host header and absolute-form authority), canonical. */
  readonly hosts: readonly string[];
  readonly headers: Headers;
}

export interface CompiledHttp {
  /** Whether the request's readings satisfy the rule's HTTP conditions. */
  readonly matches: (http: HttpFacts) => boolean;
}

export interface CompiledRule {
  readonly id: string;
  readonly action: RuleAction;
  readonly peer: PeerTest | null;
  readonly ports: ReadonlySet<number> | null;
  readonly http: CompiledHttp | null;
}

export interface RuleLists {
  readonly log: readonly CompiledRule[];
  readonly deny: readonly CompiledRule[];
  readonly allow: readonly CompiledRule[];
}

interface CompiledAuthorization {
  readonly document: AuthorizationPolicy;
  readonly selects: LabelTest;
  readonly ingress: readonly CompiledRule[];
  readonly egress: readonly CompiledRule[];
  readonly restrictsEgress: boolean;
}

interface CompiledPeerAuthentication {
  readonly document: PeerAuthentication;
  readonly selects: LabelTest;
  readonly specificity: number;
  readonly mode: MtlsMode;
  readonly portLevel: ReadonlyMap<number, MtlsMode>;
}

/** Everything about one workload that the set decides, computed once per labels object. */
export interface WorkloadView {
  readonly documents: readonly PolicyDocument[];
  readonly ingress: RuleLists;
  readonly egress: RuleLists;
  readonly egressRestricted: boolean;
  readonly peerAuthentication: CompiledPeerAuthentication | null;
}

export class PolicySetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PolicySetError";
  }
}

/** An entry's workload or address test, AND its user test when it has one. */
function peerTest(entry: PeerMatch, action: RuleAction): PeerTest {
  if (entry.user === undefined) return peerBaseTest(entry, action);
  const user = compileUserTest(entry.user);
  const labelled = entry.matchLabels !== undefined || entry.matchExpressions !== undefined;
  const addressed = entry.cidrs !== undefined || entry.dnsNames !== undefined;
  if (!labelled && !addressed) return (p) => user(p.user);
  const base = peerBaseTest(entry, action);
  return (p) => user(p.user) && base(p);
}

function peerBaseTest(entry: PeerMatch, action: RuleAction): PeerTest {
  if (entry.matchLabels !== undefined || entry.matchExpressions !== undefined) {
    const selects = compileSelector(entry);
    return (p) => p.labels !== null && selects(p.labels);
  }
  const cidrs = entry.cidrs
    ? new CidrSet(
        entry.cidrs.map((c) => {
          const parsed = parseCidr(c);
          if (!parsed.ok) throw new PolicySetError(parsed.reason);
          return parsed.block as CidrBlock;
        }),
      )
    : null;
  const names = entry.dnsNames ? new NameMatcher(entry.dnsNames) : null;
  // An address that cannot be parsed is taken to be inside a deny rule's blocks and outside an allow rule's.
  const unparsable = action === "deny";
  return (p) => {
    if (!p.external) return false;
    if (names && (p.dnsName === null || !names.matches(p.dnsName))) return false;
    if (cidrs) {
      const addr = p.address();
      return addr === null ? unparsable : cidrs.contains(addr);
    }
    return true;
  };
}

function headerTest(h: HeaderMatch, action: RuleAction): (headers: Headers) => boolean {
  const name = h.name.toLowerCase();
  if (h.value === undefined) {
    const wantPresent = h.present === true;
    return (headers) => (headers[name] !== undefined) === wantPresent;
  }
  const value = h.value;
  const deny = action === "deny";
  // Repeated headers: a deny needs one matching occurrence, an allow needs all of them to match.
  return (headers) => {
    const v = headers[name];
    if (v === undefined) return false;
    if (typeof v === "string") return v === value;
    if (v.length === 0) return false;
    for (let i = 0; i < v.length; i++) if ((v[i] === value) === deny) return deny;
    return !deny;
  };
}

/**
 * Readings (path and host variants): a deny matches if any reading does, allow/log only if all do.
 * A plain loop, not some()/every() with a closure: this runs for every rule on every request.
 */
function readingsMatch(
  matcher: { matches(x: string): boolean },
  readings: readonly string[],
  deny: boolean,
): boolean {
  for (let i = 0; i < readings.length; i++) {
    if (matcher.matches(readings[i] as string) === deny) return deny;
  }
  return !deny;
}

function compileHttp(http: HttpMatch, action: RuleAction): CompiledHttp {
  const deny = action === "deny";
  // Method case: allow is exact; deny ignores case so `delete` cannot slip past a DELETE deny.
  const methods = http.methods ? new Set(http.methods.map((m) => (deny ? m.toUpperCase() : m))) : null;
  const paths = http.paths ? new PathMatcher(http.paths) : null;
  const hosts = http.hosts ? new NameMatcher(http.hosts) : null;
  const headers = (http.headers ?? []).map((h) => headerTest(h, action));
  return {
    matches(req) {
      if (methods && !methods.has(deny ? req.method.toUpperCase() : req.method)) return false;
      if (paths && !readingsMatch(paths, req.paths, deny)) return false;
      // No host at all: the server picks its default, which may be the denied one.
      if (hosts && (req.hosts.length === 0 ? !deny : !readingsMatch(hosts, req.hosts, deny))) return false;
      for (const test of headers) if (!test(req.headers)) return false;
      return true;
    },
  };
}

function compileRule(
  rule: IngressRule | EgressRule,
  peers: readonly PeerMatch[] | undefined,
  id: string,
): CompiledRule {
  const tests = peers?.map((p) => peerTest(p, rule.action)) ?? null;
  const peer: PeerTest | null =
    tests === null
      ? null
      : tests.length === 1
        ? (tests[0] as PeerTest)
        : (p) => {
            for (const t of tests) if (t(p)) return true;
            return false;
          };
  return {
    id,
    action: rule.action,
    peer,
    ports: rule.ports ? new Set(rule.ports) : null,
    http: rule.http ? compileHttp(rule.http, rule.action) : null,
  };
}

function compileAuthorization(doc: AuthorizationPolicy): CompiledAuthorization {
  const name = doc.metadata.name;
  return {
    document: doc,
    selects: compileSelector(doc.spec.selector),
    ingress: (doc.spec.ingress ?? []).map((r, i) => compileRule(r, r.from, `${name}/ingress/${i}`)),
    egress: (doc.spec.egress ?? []).map((r, i) => compileRule(r, r.to, `${name}/egress/${i}`)),
    restrictsEgress: doc.spec.egress !== undefined,
  };
}

function compilePeerAuthentication(doc: PeerAuthentication): CompiledPeerAuthentication {
  const portLevel = new Map<number, MtlsMode>();
  for (const [port, mode] of Object.entries(doc.spec.portLevel ?? {})) portLevel.set(Number(port), mode);
  return {
    document: doc,
    selects: compileSelector(doc.spec.selector),
    specificity: selectorSpecificity(doc.spec.selector),
    mode: doc.spec.mode,
    portLevel,
  };
}

const STRICTNESS: Record<MtlsMode, number> = { STRICT: 2, PERMISSIVE: 1, DISABLE: 0 };

function split(rules: readonly CompiledRule[]): RuleLists {
  return {
    log: rules.filter((r) => r.action === "log"),
    deny: rules.filter((r) => r.action === "deny"),
    allow: rules.filter((r) => r.action === "allow"),
  };
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** An immutable, compiled policy set. Build with compilePolicySet(); swap the reference to update. */
export class CompiledPolicySet {
  /** Every document in the set, sorted by kind then name. */
  readonly documents: readonly PolicyDocument[];
  private readonly authorizations: readonly CompiledAuthorization[];
  private readonly peerAuthentications: readonly CompiledPeerAuthentication[];
  private readonly views = new WeakMap<Labels, WorkloadView>();

  constructor(documents: readonly PolicyDocument[]) {
    const seen = new Set<string>();
    for (const d of documents) {
      if (seen.has(d.metadata.name))
        throw new PolicySetError(`policy name "${d.metadata.name}" is used by more than one document`);
      seen.add(d.metadata.name);
    }
    const sorted = deepFreeze(
      structuredClone([...documents]).sort(
        (a, b) => byCodeUnits(a.kind, b.kind) || byCodeUnits(a.metadata.name, b.metadata.name),
      ),
    );
    this.documents = sorted;
    this.authorizations = sorted
      .filter((d): d is AuthorizationPolicy => d.kind === "AuthorizationPolicy")
      .map(compileAuthorization);
    this.peerAuthentications = sorted
      .filter((d): d is PeerAuthentication => d.kind === "PeerAuthentication")
      .map(compilePeerAuthentication);
    Object.freeze(this);
  }

  /** The rules and settings that apply to a workload; cached per labels object. */
  viewFor(labels: Labels): WorkloadView {
    const cached = this.views.get(labels);
    if (cached) return cached;
    const selected = this.authorizations.filter((a) => a.selects(labels));
    let peerAuthentication: CompiledPeerAuthentication | null = null;
    for (const pa of this.peerAuthentications) {
      if (!pa.selects(labels)) continue;
      if (
        peerAuthentication === null ||
        pa.specificity > peerAuthentication.specificity ||
        (pa.specificity === peerAuthentication.specificity &&
          STRICTNESS[pa.mode] > STRICTNESS[peerAuthentication.mode])
      )
        peerAuthentication = pa;
    }
    const view: WorkloadView = {
      documents: [
        ...selected.map((a) => a.document),
        ...this.peerAuthentications.filter((p) => p.selects(labels)).map((p) => p.document),
      ],
      ingress: split(selected.flatMap((a) => a.ingress)),
      egress: split(selected.flatMap((a) => a.egress)),
      egressRestricted: selected.some((a) => a.restrictsEgress),
      peerAuthentication,
    };
    this.views.set(labels, view);
    return view;
  }
}

/** Compiles validated documents. Throws PolicySetError when two documents share a name. */
export function compilePolicySet(documents: readonly PolicyDocument[]): CompiledPolicySet {
  return new CompiledPolicySet(documents);
}

export function emptyPolicySet(): CompiledPolicySet {
  return new CompiledPolicySet([]);
}
