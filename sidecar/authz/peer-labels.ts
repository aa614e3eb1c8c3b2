import type { Peer } from "../../core/identity.ts";
import type { Decision } from "../../core/policy/index.ts";
import type { Labels } from "../../core/labels.ts";
import type { DirectoryLabels } from "../inputs/directory-labels.ts";
import { sameLabels } from "../inputs/directory-labels.ts";

/**
 * The labels a peer workload is decided with. A peer proves its labels with its certificate, signed
 * when it was issued; the control plane's peer directory (pushed over xDS, trusted like the policy
 * set) says what they are now. Between a label change at the control plane and the peer's renewal
 * the two differ: a quarantined workload still holds a certificate without its `vuln.critical`, and
 * a directory that has not caught up still lists an old label set. A decision is therefore made
 * under both and the stricter one stands, so neither a stale certificate nor a stale directory can
 * widen access. A peer the directory does not list (one issued a moment ago, another trust domain)
 * is decided by its certificate alone; a removed workload is refused by revocation, not here.
 */

/**
 * The directory's view of each peer seen, by peer object: an enforcement point keeps one Peer per
 * connection, so its requests compare the labels once per directory, not once per request.
 */
const directoryViews = new WeakMap<Peer, { labels: Labels; peer: Peer | null }>();

/** `peer` as the directory sees it, or null when the directory does not list it or agrees with it. */
function directoryView(peer: Peer, directory: DirectoryLabels): Peer | null {
  if (peer.kind !== "workload") return null;
  const labels = directory.labelsOf(peer.identity.spiffeId);
  if (labels === undefined) return null;
  const known = directoryViews.get(peer);
  if (known?.labels === labels) return known.peer;
  const view: Peer | null = sameLabels(labels, peer.identity.labels)
    ? null
    : { ...peer, identity: { ...peer.identity, labels } };
  directoryViews.set(peer, { labels, peer: view });
  return view;
}

/** Deny over observe mode's would-deny over allow. */
function strictness(d: Decision): number {
  return d.verdict === "deny" ? 2 : d.wouldDeny ? 1 : 0;
}

/**
 * Decides `peer` under its own labels and, when the directory lists it with others, under the
 * directory's; the stricter decision stands (the certificate's on a tie). A denial that only the
 * directory's labels give says so in its reason.
 */
export function decideStricter(
  peer: Peer,
  directory: DirectoryLabels,
  decide: (peer: Peer) => Decision,
): Decision {
  const own = decide(peer);
  if (own.verdict === "deny") return own;
  const view = directoryView(peer, directory);
  if (view === null) return own;
  const current = decide(view);
  if (strictness(current) <= strictness(own)) return own;
  return { ...current, reason: `${current.reason} (the peer's labels in the control plane's directory)` };
}
