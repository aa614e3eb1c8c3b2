import type { Logger } from "pino";
import type { MeshTls } from "../tls/mtls.ts";
import type { CredentialSource, PolicySource } from "../inputs/sources.ts";
import type { Upstreams } from "./upstreams.ts";

/**
 * A pooled mTLS connection carries the certificate it was opened with: peers decide its requests by
 * the labels in that certificate, and refuse them all once that certificate is revoked. The pooled
 * and multiplexed upstream connections are retired when a renewal changes the workload's labels (a
 * quarantine label, a scanner's finding), and when a certificate they may still present is revoked
 * by serial: checked on each rotation and each revocation list, since the list naming a replaced
 * certificate may arrive after its replacement. The next request opens a connection that presents
 * the current certificate; requests in flight finish on the old ones. Returns the function that
 * stops watching.
 */
export function retireConnectionsOnIdentityChange(
  credentials: CredentialSource,
  tls: MeshTls,
  policy: PolicySource,
  upstreams: Upstreams,
  log: Logger,
): () => void {
  // MeshTls keeps the labels object while the labels stay the same (core/policy caches by it).
  let labels = tls.identity.identity.labels;
  // Certificates that connections opened since the last retirement may present, with their notAfter:
  // an expired one leaves the revocation lists, so it is forgotten here too.
  const presented = new Map<string, number>();
  const present = (): void => {
    const { identity } = tls.identity;
    presented.set(identity.serial, identity.notAfter.getTime());
  };
  present();
  const retire = (why: string): void => {
    const { identity } = tls.identity;
    presented.clear();
    present();
    log.info(
      { labels: identity.labels, serial: identity.serial },
      `${why}: retiring pooled upstream connections`,
    );
    upstreams.close().catch((err: Error) => log.warn({ err: err.message }, "retiring upstream connections"));
  };
  const revokedPresented = (): boolean => {
    const { identity } = tls.identity;
    const revocations = policy.current().revocations;
    const now = Date.now();
    let revoked = false;
    for (const [serial, notAfterMs] of presented) {
      if (notAfterMs <= now) presented.delete(serial);
      else if (serial !== identity.serial && revocations.revoking({ spiffeId: identity.spiffeId, serial }))
        revoked = true;
    }
    return revoked;
  };
  const onRotate = (): void => {
    present();
    if (tls.identity.identity.labels !== labels) {
      labels = tls.identity.identity.labels;
      retire("own labels changed");
    } else if (revokedPresented()) retire("an earlier certificate of this workload is revoked");
  };
  const onPolicy = (): void => {
    if (revokedPresented()) retire("an earlier certificate of this workload is revoked");
  };
  credentials.on("rotate", onRotate);
  policy.on?.("change", onPolicy);
  return () => {
    credentials.off("rotate", onRotate);
    policy.off?.("change", onPolicy);
  };
}
