import { isIP } from "node:net";

/**
 * Who owns each address:port of the peer directory. A sidecar registers the addresses and ports of
 * its workload itself, so a registration alone proves nothing: any workload could claim another's
 * address (every sidecar would then see two owners) or an address outside the mesh (callers would
 * take an external host for it). Ownership is decided here, from the strongest evidence:
 *
 * 1. attested — the operator registered the address for this workload (its join token), so it is
 *    this workload's on every port, whoever else claims it;
 * 2. observed — the workload's ADS stream comes from that address (a TCP peer address cannot be
 *    forged without being on the path; on Kubernetes this is the pod IP);
 * 3. claimed — neither: published only when the operator trusts claims (`addressClaims:
 *    "first-claim"`, for sidecars that reach the control plane through NAT), never otherwise.
 *
 * Between claimants with the same evidence the first to register keeps the address:port. A claimant
 * that loses an address:port loses that address from its entry altogether (an entry pairs every
 * address with every port), and each refused claim is reported as a conflict. Pure: no I/O.
 */

export type AddressEvidence = "attested" | "observed" | "claimed";
export type AddressClaims = "evidence" | "first-claim";

export interface AddressClaim {
  readonly spiffeId: string;
  readonly addresses: readonly string[];
  readonly ports: readonly number[];
  /** Addresses attested for this workload (lower case, as registrations are). */
  readonly attested: readonly string[];
  /** The address its ADS stream came from, when known. */
  readonly observed: string | undefined;
  /** Registration order: lower registered first. */
  readonly order: number;
}

export interface AddressConflict {
  readonly address: string;
  /** The port in dispute, or null when the address itself was refused. */
  readonly port: number | null;
  readonly claimant: string;
  /** Who keeps it, or null when nobody is published for it. */
  readonly owner: string | null;
  readonly reason: string;
}

export interface AddressOwnership {
  /** The addresses published for each workload. */
  readonly owned: ReadonlyMap<string, readonly string[]>;
  readonly conflicts: readonly AddressConflict[];
}

const RANK: Record<AddressEvidence, number> = { attested: 0, observed: 1, claimed: 2 };

function evidenceOf(claim: AddressClaim, address: string): AddressEvidence {
  if (claim.attested.includes(address)) return "attested";
  if (claim.observed !== undefined && claim.observed === address) return "observed";
  return "claimed";
}

interface Holder {
  readonly claim: AddressClaim;
  readonly evidence: AddressEvidence;
}

function stronger(a: Holder, b: Holder): boolean {
  const rank = RANK[a.evidence] - RANK[b.evidence];
  return rank < 0 || (rank === 0 && a.claim.order < b.claim.order);
}

export function decideAddressOwnership(
  claims: readonly AddressClaim[],
  mode: AddressClaims,
): AddressOwnership {
  const conflicts: AddressConflict[] = [];
  const refused = new Map<string, Set<string>>();
  const refuse = (c: AddressConflict): void => {
    conflicts.push(c);
    const set = refused.get(c.claimant) ?? new Set<string>();
    set.add(c.address);
    refused.set(c.claimant, set);
  };
  const ordered = [...claims].sort((a, b) => a.order - b.order);
  // An attested address belongs to its workload on every port: the first attestation wins it.
  const attestedTo = new Map<string, AddressClaim>();
  for (const claim of ordered)
    for (const address of claim.attested) if (!attestedTo.has(address)) attestedTo.set(address, claim);

  const holders = new Map<string, Holder>();
  for (const claim of ordered) {
    for (const address of claim.addresses) {
      const evidence = evidenceOf(claim, address);
      const attestedOwner = attestedTo.get(address);
      if (attestedOwner && attestedOwner !== claim) {
        refuse({
          address,
          port: null,
          claimant: claim.spiffeId,
          owner: attestedOwner.spiffeId,
          reason: `${address} is attested to ${attestedOwner.spiffeId}`,
        });
        continue;
      }
      if (evidence === "claimed" && mode === "evidence") {
        refuse({
          address,
          port: null,
          claimant: claim.spiffeId,
          owner: null,
          reason: `${address} is neither attested nor observed for ${claim.spiffeId} (its stream comes from ${claim.observed ?? "an unknown address"}); register it on the join token`,
        });
        continue;
      }
      for (const port of claim.ports) {
        const key = `${address}|${port}`;
        const held = holders.get(key);
        const candidate = { claim, evidence };
        if (!held) {
          holders.set(key, candidate);
          continue;
        }
        const [winner, loser] = stronger(candidate, held) ? [candidate, held] : [held, candidate];
        holders.set(key, winner);
        refuse({
          address,
          port,
          claimant: loser.claim.spiffeId,
          owner: winner.claim.spiffeId,
          reason:
            winner.evidence === loser.evidence
              ? `${address}:${port} was ${winner.evidence} for ${winner.claim.spiffeId} first`
              : `${address}:${port} is ${winner.evidence} for ${winner.claim.spiffeId}, only ${loser.evidence} for ${loser.claim.spiffeId}`,
        });
      }
    }
  }
  const owned = new Map<string, readonly string[]>();
  for (const claim of claims) {
    const lost = refused.get(claim.spiffeId);
    owned.set(
      claim.spiffeId,
      claim.addresses.filter((a) => !lost?.has(a)),
    );
  }
  return { owned, conflicts };
}

/** The IP address of a grpc-js peer string (`ipv4:1.2.3.4:5`, `[v6]:port`, `1.2.3.4:5`), lower case. */
export function peerIp(peer: string): string | undefined {
  const host = peer
    .replace(/^ipv[46]:/, "")
    .replace(/:\d+$/, "")
    .replace(/^\[(.*)\]$/, "$1")
    .replace(/^::ffff:(?=\d+\.)/, "")
    .toLowerCase();
  return isIP(host) === 0 ? undefined : host;
}
