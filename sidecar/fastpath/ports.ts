/**
 * Per-port choice between the fast path and the L7 proxy, from policy. A port goes through the
 * proxy when any rule on it (for this workload, in that direction) has HTTP conditions — only the
 * proxy can see methods and paths — or when its PeerAuthentication mode is STRICT, which promises
 * mutual TLS and therefore encryption, which the fast path does not provide (it authenticates both
 * ends in the handshake but leaves the payload as it is). Every other port may use the fast path;
 * an operator opts a port in by saying PERMISSIVE for it (examples/policies/README.md).
 *
 * Outbound, the destination has the last word: a port is only a candidate on the client's side, and
 * a SYN gets a token only to a mesh destination whose peer-directory entry says L4_FAST_PATH for
 * that port (`outboundFastPathDestinations`). A mesh destination on L7_PROXY (STRICT, HTTP rules,
 * no enforcer on that port) expects the caller's sidecar to open mTLS, and a destination outside
 * the mesh has no enforcer to take a token: both stay on the proxy path, which decides them with
 * the same egress policy (labels for mesh peers, CIDR rules for the others).
 */
import { httpRulesOnPort, peerAuthenticationMode } from "../../core/policy/index.ts";
import type { CompiledPolicySet } from "../../core/policy/index.ts";
import type { Labels } from "../../core/labels.ts";
import { MAX_OUTBOUND_DESTINATIONS } from "./rules.ts";
import type { OutboundDestination } from "./rules.ts";
import { byCodeUnits } from "../../core/code-unit-order.ts";

export interface PortChoice {
  readonly port: number;
  readonly path: "fastpath" | "proxy";
  readonly why: string;
}

/** Decides each candidate local (inbound) port of the workload with `labels`. */
export function chooseInboundPaths(
  set: CompiledPolicySet,
  labels: Labels,
  ports: readonly number[],
): PortChoice[] {
  return ports.map((port) => {
    if (httpRulesOnPort(set, labels, port, "ingress")) {
      return { port, path: "proxy", why: "ingress rules on this port have HTTP conditions" };
    }
    const mode = peerAuthenticationMode(set, labels, port);
    if (mode === "STRICT") {
      return {
        port,
        path: "proxy",
        why: "mTLS mode STRICT requires an encrypted hop (a PeerAuthentication portLevel PERMISSIVE lets the port take the unencrypted fast path)",
      };
    }
    return { port, path: "fastpath", why: `plain L4 port, mTLS mode ${mode}` };
  });
}

/** Decides each candidate destination port for the workload's own outbound connections. */
export function chooseOutboundPaths(
  set: CompiledPolicySet,
  labels: Labels,
  ports: readonly number[],
): PortChoice[] {
  return ports.map((port) =>
    httpRulesOnPort(set, labels, port, "egress")
      ? { port, path: "proxy", why: "egress rules on this port have HTTP conditions" }
      : { port, path: "fastpath", why: "no HTTP egress rules on this port" },
  );
}

export function fastPathPorts(choices: readonly PortChoice[]): number[] {
  return choices.filter((c) => c.path === "fastpath").map((c) => c.port);
}

/** One peer-directory port: `fastPath` when the destination says L4_FAST_PATH for it. */
export interface DirectoryPort {
  readonly address: string;
  readonly port: number;
  readonly fastPath: boolean;
}

export interface OutboundDestinations {
  /** Sorted by address, ports ascending: equal directories give equal lists. */
  readonly destinations: OutboundDestination[];
  /** Addresses left on the proxy path because the list is full (MAX_OUTBOUND_DESTINATIONS). */
  readonly overflow: number;
}

/**
 * The destinations the workload's outbound SYNs may take the fast path to: every directory address
 * with an L4_FAST_PATH port among `ports` (the outbound choice's fast-path ports). Past the limit,
 * further addresses stay on the proxy path, which is always correct, only slower.
 */
export function outboundFastPathDestinations(
  ports: readonly number[],
  directory: readonly DirectoryPort[],
  limit = MAX_OUTBOUND_DESTINATIONS,
): OutboundDestinations {
  const wanted = new Set(ports);
  const byAddress = new Map<string, Set<number>>();
  for (const d of directory) {
    if (!d.fastPath || !wanted.has(d.port)) continue;
    const set = byAddress.get(d.address) ?? new Set<number>();
    set.add(d.port);
    byAddress.set(d.address, set);
  }
  const all = [...byAddress.entries()]
    .sort(([a], [b]) => byCodeUnits(a, b))
    .map(([address, set]) => ({ address, ports: [...set].sort((a, b) => a - b) }));
  return { destinations: all.slice(0, limit), overflow: Math.max(0, all.length - limit) };
}
