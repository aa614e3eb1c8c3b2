/**
 * Per-port choice between the fast path and the L7 proxy, from policy. A port goes through the
 * proxy when any rule on it (for this workload, in that direction) has HTTP conditions — only the
 * proxy can see methods and paths — or when its PeerAuthentication mode is STRICT, which promises
 * mutual TLS and therefore encryption, which the fast path does not provide (it authenticates both
 * ends in the handshake but leaves the payload as it is). Every other port may use the fast path;
 * an operator opts a port in by saying PERMISSIVE for it (examples/policies/README.md).
 */
import { httpRulesOnPort, peerAuthenticationMode } from "../../core/policy/index.ts";
import type { CompiledPolicySet } from "../../core/policy/index.ts";
import type { Labels } from "../../core/labels.ts";

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
