import { X509Certificate } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { describeRevocation, isCertificateRevocation } from "../../core/svid/revocation.ts";
import type { RevocationIndex } from "../../core/svid/revocation.ts";
import type { WorkloadCredentials } from "../identity/rotation.ts";

export interface RefusedCertificateDeps {
  readonly rotation: {
    current(): WorkloadCredentials;
    renewNow(): Promise<WorkloadCredentials>;
    on(event: "rotated", listener: (c: WorkloadCredentials) => void): unknown;
    off(event: "rotated", listener: (c: WorkloadCredentials) => void): unknown;
  };
  /** The ADS client: its stream ending, and the move to new connections once renewed. */
  readonly xds: {
    on(event: "disconnected", listener: (d: { code: number; details: string }) => void): unknown;
    off(event: "disconnected", listener: (d: { code: number; details: string }) => void): unknown;
    renewConnections(): void;
  };
  /** The revocation list in force (it may name this workload's own certificate). */
  readonly revocations: () => RevocationIndex;
  readonly log: Logger;
}

/**
 * Gets a new certificate when the control plane stops accepting the workload's own: revoked by
 * serial, it ends (or refuses) the ADS stream with UNAUTHENTICATED, and the revocation list names
 * the serial. The SVID is renewed at once (the renewal, proved by the revoked certificate, is refused
 * and the rotation manager attests again), then the ADS client moves to a new connection, since the
 * one it has was authenticated with the revoked certificate for as long as it lasts. A workload
 * revoked as a whole is refused PERMISSION_DENIED and gets nothing more: nothing to do here.
 * Returns the function that stops watching; `check()` looks at the revocation list again.
 */
export function renewOnRefusedCertificate(deps: RefusedCertificateDeps): {
  check: () => void;
  stop: () => void;
} {
  const { rotation, xds, log } = deps;
  // Set from the refusal until the next rotation: then the ADS client moves to a new connection.
  let waiting = false;
  const renew = (why: string): void => {
    if (waiting) return;
    waiting = true;
    log.warn({ reason: why }, "the control plane no longer accepts this certificate: attesting again");
    // A failure is retried by the rotation manager's own backoff; the next rotation completes this.
    rotation.renewNow().catch(() => undefined);
  };
  const onDisconnected = (d: { code: number; details: string }): void => {
    if (d.code === grpc.status.UNAUTHENTICATED) renew(d.details);
  };
  const onRotated = (): void => {
    if (!waiting) return;
    waiting = false;
    xds.renewConnections();
  };
  const check = (): void => {
    const own = rotation.current();
    const leaf = own.certChain[0];
    if (!leaf) return;
    const serial = new X509Certificate(leaf).serialNumber;
    const entry = deps.revocations().revoking({ spiffeId: own.spiffeId, serial });
    if (entry && isCertificateRevocation(entry)) renew(describeRevocation(entry));
  };
  xds.on("disconnected", onDisconnected);
  rotation.on("rotated", onRotated);
  return {
    check,
    stop: () => {
      xds.off("disconnected", onDisconnected);
      rotation.off("rotated", onRotated);
    },
  };
}
