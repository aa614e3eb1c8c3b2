import type { Labels } from "./labels.ts";

/** A verified workload identity: what a peer proved with a CA-signed SVID (or token). */
export interface WorkloadIdentity {
  /** `spiffe://<trust-domain>/<path>` */
  readonly spiffeId: string;
  readonly trustDomain: string;
  /** Labels carried in the CA-signed certificate extension. */
  readonly labels: Labels;
  /** Certificate serial (hex), used by revocation and flow records. */
  readonly serial: string;
  readonly notAfter: Date;
}

/** The other end of a connection as the enforcement point saw it. */
export type Peer =
  | { readonly kind: "workload"; readonly identity: WorkloadIdentity; readonly address?: string }
  /** A plaintext client outside the mesh (PERMISSIVE ports) or a non-mesh destination (egress). */
  | { readonly kind: "external"; readonly address: string; readonly dnsName?: string };

const SPIFFE_ID = /^spiffe:\/\/([a-z0-9._-]+)(\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$/;

/** Splits a SPIFFE ID into trust domain and path; null if it is not a valid SPIFFE ID. */
export function parseSpiffeId(id: string): { trustDomain: string; path: string } | null {
  const m = SPIFFE_ID.exec(id);
  if (!m || !m[1]) return null;
  const path = m[2] ?? "";
  if (path.includes("//") || path.endsWith("/") || /\/\.\.?(\/|$)/.test(path)) return null;
  return { trustDomain: m[1], path };
}

/**
 * The workload a SPIFFE ID names, as Sigil issues them: `ns/<namespace>/sa/<account>` (Kubernetes)
 * names the account in its namespace, `workload/<name>` the joined workload; any other path is
 * its own name, in no namespace.
 */
export function workloadOf(spiffeId: string): { readonly name: string; readonly namespace: string } {
  const path = spiffeId.replace(/^spiffe:\/\/[^/]+\//, "");
  const k8s = /^ns\/([^/]+)\/sa\/([^/]+)$/.exec(path);
  if (k8s) return { name: k8s[2] as string, namespace: k8s[1] as string };
  const join = /^workload\/([^/]+)$/.exec(path);
  return { name: join?.[1] ?? path, namespace: "" };
}
