import type { Logger } from "pino";
import type { MeshTls } from "../tls/mtls.ts";
import type { CredentialSource } from "../inputs/sources.ts";
import type { Upstreams } from "./upstreams.ts";

/**
 * A pooled mTLS connection carries the certificate it was opened with: peers decide its requests by the
 * labels in that certificate. When a renewal changes the workload's labels (a quarantine label, a
 * scanner's finding), its pooled and multiplexed upstream connections are retired, so that the next
 * request opens a connection that presents the new identity. Requests in flight finish on the old ones.
 * Returns the function that stops watching.
 */
export function retireConnectionsOnIdentityChange(
  credentials: CredentialSource,
  tls: MeshTls,
  upstreams: Upstreams,
  log: Logger,
): () => void {
  // MeshTls keeps the labels object while the labels stay the same (core/policy caches by it).
  let labels = tls.identity.identity.labels;
  const onRotate = (): void => {
    const now = tls.identity.identity.labels;
    if (now === labels) return;
    labels = now;
    log.info({ labels: now }, "own labels changed: retiring pooled upstream connections");
    upstreams.close().catch((err: Error) => log.warn({ err: err.message }, "retiring upstream connections"));
  };
  credentials.on("rotate", onRotate);
  return () => credentials.off("rotate", onRotate);
}
