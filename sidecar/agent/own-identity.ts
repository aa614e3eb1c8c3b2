import { z } from "zod";
import { byCodeUnits } from "../../core/code-unit-order.ts";

/**
 * Reads the workload's own `sigil.v1.WorkloadIdentity` (core/proto/sigil/v1/workload_identity.proto)
 * and decides whether its certificate is out of date. The control plane sends it to this workload alone,
 * so a label change (a quarantine label, a scanner's finding) reaches a client-only workload as surely
 * as one that serves ports.
 */

const ownIdentityMessage = z.object({
  spiffe_id: z.string().min(1, { error: "spiffe_id is empty" }),
  labels: z.record(z.string(), z.string()).default({}),
});

export class OwnIdentityError extends Error {
  override name = "OwnIdentityError";
}

/** The labels the control plane wants this workload's certificate to carry, as a comparable key. */
export function wantedLabelKey(message: unknown, spiffeId: string): string {
  const parsed = ownIdentityMessage.safeParse(message);
  if (!parsed.success)
    throw new OwnIdentityError(`WorkloadIdentity: ${parsed.error.issues.map((i) => i.message).join("; ")}`);
  if (parsed.data.spiffe_id !== spiffeId)
    throw new OwnIdentityError(
      `WorkloadIdentity names ${parsed.data.spiffe_id}, not this workload (${spiffeId})`,
    );
  return labelKey(Object.entries(parsed.data.labels));
}

/** A label set as an order-independent key. */
export function labelKey(pairs: readonly (readonly [string, string])[]): string {
  return JSON.stringify([...pairs].sort(([a], [b]) => byCodeUnits(a, b)));
}
