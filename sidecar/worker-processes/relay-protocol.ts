import { z } from "zod";
import type { FlowRecord } from "../../core/flow.ts";
import { compilePolicySet } from "../../core/policy/index.ts";
import type { PolicyDocument } from "../../core/policy/index.ts";
import { bundleToDocument, parseBundle } from "../../core/svid/bundle.ts";
import {
  RevocationIndex,
  revocationEntrySchema,
  revokedCertificateSchema,
} from "../../core/svid/revocation.ts";
import type { RevocationList } from "../../core/svid/revocation.ts";
import type { Labels } from "../../core/labels.ts";
import type { SidecarConfigInput } from "../config.ts";
import { DirectoryLabels } from "../inputs/directory-labels.ts";
import type { MeshDestination, PolicySnapshot, TlsCredentials } from "../inputs/sources.ts";
import type { MetricsJson } from "./metrics.ts";

/**
 * The messages between a sidecar's primary process and its data-path workers, over the cluster IPC
 * channel (a local socket pair, "advanced" serialization). The primary owns the control-plane
 * state and sends it whole on every change; a worker rebuilds its sources from it. Every message a
 * worker receives is validated before it applies, so a malformed one is refused with the field
 * named instead of half-applied.
 */

/** Credentials as they travel: the trust bundle as its SPIFFE document (X509Certificate objects do not clone). */
export interface WireCredentials {
  readonly trustDomain: string;
  readonly privateKeyPem: string;
  readonly certChainPem: string;
  readonly bundle: unknown;
}

/**
 * A policy snapshot as it travels: the documents (recompiled by the worker), mode, revocations and
 * the directory's labels of each peer.
 */
export interface WirePolicy {
  readonly documents: readonly PolicyDocument[];
  readonly mode: PolicySnapshot["mode"];
  readonly revocations: RevocationList;
  readonly peerLabels: readonly (readonly [string, Labels])[];
}

export type WirePeers = readonly (readonly [{ address: string; port: number }, MeshDestination])[];

export interface WorkerInit {
  readonly config: SidecarConfigInput;
  /** The primary's log level (its logger may differ from the configuration's). */
  readonly logLevel: string;
  /** Captured mode: ports besides the worker's own listeners that are the sidecar's (the primary's admin). */
  readonly loopGuard: {
    readonly advertised: readonly string[];
    readonly extraPorts: readonly number[];
  } | null;
  readonly credentials: WireCredentials;
  readonly policy: WirePolicy;
  readonly peers: WirePeers;
}

export type ToWorker =
  | { readonly t: "init"; readonly init: WorkerInit }
  | { readonly t: "credentials"; readonly credentials: WireCredentials }
  | { readonly t: "policy"; readonly policy: WirePolicy }
  | { readonly t: "peers"; readonly peers: WirePeers }
  | { readonly t: "stats"; readonly id: number }
  | { readonly t: "drain" };

export interface ListenerAddress {
  readonly address: string;
  readonly family: string;
  readonly port: number;
}

export type FromWorker =
  /** The worker's message handler is installed: the primary may send `init` (earlier messages would be lost). */
  | { readonly t: "hello" }
  | {
      readonly t: "listening";
      readonly inbound: ListenerAddress;
      readonly outbound: ListenerAddress | null;
      readonly outboundTargets: readonly ListenerAddress[];
    }
  | { readonly t: "failed"; readonly error: string }
  | { readonly t: "flows"; readonly records: readonly FlowRecord[] }
  | { readonly t: "stats"; readonly id: number; readonly metrics: MetricsJson }
  | { readonly t: "drained"; readonly clean: boolean };

export class RelayMessageError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`worker relay message ${field}: ${reason}`);
    this.name = "RelayMessageError";
  }
}

export function credentialsToWire(creds: TlsCredentials): WireCredentials {
  return {
    trustDomain: creds.bundle.trustDomain,
    privateKeyPem: creds.privateKeyPem,
    certChainPem: creds.certChainPem,
    bundle: bundleToDocument(creds.bundle),
  };
}

export function policyToWire(snapshot: PolicySnapshot): WirePolicy {
  return {
    documents: snapshot.policies.documents,
    mode: snapshot.mode,
    revocations: snapshot.revocations.list,
    peerLabels: snapshot.peerLabels?.entries() ?? [],
  };
}

const pem = (label: string): z.ZodString =>
  z.string().refine((v) => v.includes(`-----BEGIN ${label}`), { error: `expected a PEM ${label}` });

const wireCredentials = z.object({
  trustDomain: z.string().min(1),
  privateKeyPem: pem("PRIVATE KEY"),
  certChainPem: pem("CERTIFICATE"),
  bundle: z.unknown(),
});

const wirePolicy = z.object({
  documents: z.array(z.object({ kind: z.string(), metadata: z.object({ name: z.string() }) }).passthrough()),
  mode: z.enum(["enforce", "observe"]),
  revocations: z.object({
    trustDomain: z.string().min(1),
    sequence: z.number().int().nonnegative(),
    entries: z.array(revocationEntrySchema),
    certificates: z.array(revokedCertificateSchema).default([]),
  }),
  peerLabels: z.array(z.tuple([z.string().min(1), z.record(z.string(), z.string())])),
});

const wirePeers = z.array(
  z.tuple([
    z.object({ address: z.string().min(1), port: z.number().int().min(1).max(65535) }),
    z.object({
      identity: z.object({
        spiffeId: z.string().min(1),
        trustDomain: z.string().min(1),
        labels: z.record(z.string(), z.string()),
      }),
      sidecar: z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535) }),
      mtls: z.boolean(),
    }),
  ]),
);

const toWorker = z.discriminatedUnion("t", [
  z.object({
    t: z.literal("init"),
    init: z.object({
      config: z.record(z.string(), z.unknown()),
      logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
      loopGuard: z
        .object({ advertised: z.array(z.string()), extraPorts: z.array(z.number().int()) })
        .nullable(),
      credentials: wireCredentials,
      policy: wirePolicy,
      peers: wirePeers,
    }),
  }),
  z.object({ t: z.literal("credentials"), credentials: wireCredentials }),
  z.object({ t: z.literal("policy"), policy: wirePolicy }),
  z.object({ t: z.literal("peers"), peers: wirePeers }),
  z.object({ t: z.literal("stats"), id: z.number().int() }),
  z.object({ t: z.literal("drain") }),
]);

/** Validates a message from the primary; the error names the first bad field. */
export function parseToWorker(message: unknown): ToWorker {
  const r = toWorker.safeParse(message);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new RelayMessageError(issue?.path.join(".") || "message", issue?.message ?? "invalid");
  }
  return r.data as ToWorker;
}

/** Rebuilds usable credentials; a bundle that does not parse is refused here, before any context changes. */
export function credentialsFromWire(wire: WireCredentials): TlsCredentials {
  return {
    privateKeyPem: wire.privateKeyPem,
    certChainPem: wire.certChainPem,
    bundle: parseBundle(wire.trustDomain, wire.bundle),
  };
}

/** Recompiles the documents: the worker evaluates exactly what the primary holds. */
export function policyFromWire(wire: WirePolicy): PolicySnapshot {
  return {
    policies: compilePolicySet(wire.documents),
    mode: wire.mode,
    revocations: new RevocationIndex(wire.revocations),
    peerLabels: DirectoryLabels.of(wire.peerLabels),
  };
}
