import { createHash } from "node:crypto";
import { workloadOf } from "../../core/identity.ts";
import type { Labels } from "../../core/labels.ts";
import { httpRulesOnPort, peerAuthenticationMode } from "../../core/policy/index.ts";
import type { CompiledPolicySet, PolicySetContent } from "../../core/policy/index.ts";
import type { WorkloadSpec } from "../xds/sigil.ts";
import type { Registration } from "../../core/registration.ts";

/**
 * Pure translation of what the control plane knows (compiled policies, a workload's labels and
 * registration) into the bodies of Sigil's xDS resources; a PolicySet's body is the policy codec's
 * (core/policy/codec.ts `encodePolicySet`). No I/O, no state: the mesh publisher decides when to
 * call it and what to share.
 */

/** A stable digest of a PolicySet's content: equal content, equal key. */
export function contentKey(content: PolicySetContent): string {
  return digest(content).slice(0, 20);
}

/**
 * The generation a resource carries, derived from its content (48 bits of its digest, exact in a JS
 * number). A counter would make every republish a new resource version, and differ between
 * replicas, so a sidecar that moves to another replica would download again what it already holds.
 */
export function contentGeneration(content: PolicySetContent | readonly WorkloadSpec[]): number {
  return Number.parseInt(digest(content).slice(0, 12), 16);
}

function digest(value: unknown): string {
  return createHash("sha256").update(JSON.stringify(value)).digest("hex");
}

/**
 * A workload's entry in the peer directory. Each registered app port says how callers reach it: the
 * L4 fast path only where the sidecar enforces it in the handshake and policy needs neither HTTP
 * rules nor a STRICT mTLS hop on that port (the same rule as the sidecar's own port choice),
 * otherwise through the sidecars' mTLS proxy.
 */
export function workloadSpec(
  set: CompiledPolicySet,
  w: { name: string; spiffeId: string; labels: Labels; registration: Registration | null },
): WorkloadSpec {
  const r = w.registration;
  return {
    name: w.name,
    spiffe_id: w.spiffeId,
    labels: { ...w.labels },
    addresses: r?.addresses ?? [],
    inbound_port: r?.inboundPort ?? 0,
    ports: (r?.appPorts ?? []).map((port) => {
      const http = httpRulesOnPort(set, w.labels, port, "ingress");
      const mtls = peerAuthenticationMode(set, w.labels, port);
      const fast = r?.fastPathPorts.includes(port) === true && !http && mtls !== "STRICT";
      return {
        port,
        protocol: http ? "HTTP" : "TCP",
        data_path: fast ? "L4_FAST_PATH" : "L7_PROXY",
        mtls,
      };
    }),
  };
}

/** The directory name of a workload: the last segment(s) of its SPIFFE ID path. */
export function workloadName(spiffeId: string): string {
  const { name, namespace } = workloadOf(spiffeId);
  return namespace === "" ? name : `${name}.${namespace}`;
}
