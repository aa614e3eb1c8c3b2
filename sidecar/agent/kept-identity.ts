import type { Logger } from "pino";
import { IdentityStoreError, type IdentityStore } from "../identity/identity-store.ts";
import type { RenewalProof, WorkloadCredentials } from "../identity/rotation.ts";

/**
 * The SVID an earlier run kept in the identity directory, as the proof of the first renewal. A
 * stored identity that cannot be used (unreadable, not matching its key) is reported and left
 * aside: the sidecar then bootstraps, which fails with its own reason if the join token is spent.
 */
export async function storedIdentity(
  store: IdentityStore | undefined,
  log: Logger,
): Promise<RenewalProof | undefined> {
  if (!store) return undefined;
  try {
    const stored = await store.load();
    if (stored) {
      log.info(
        { spiffeId: stored.spiffeId, notAfter: stored.notAfter.toISOString(), dir: store.directory },
        "renewing with the SVID kept from the last run",
      );
      return stored;
    }
    log.info({ dir: store.directory }, "no unexpired SVID kept from an earlier run; bootstrapping");
  } catch (err) {
    if (!(err instanceof IdentityStoreError)) throw err;
    log.warn({ err: err.message }, "the kept SVID cannot be used; bootstrapping");
  }
  return undefined;
}

/** Keeps each new SVID for the next start; a failure to write is logged, never fatal to the sidecar. */
export async function keepIdentity(
  store: IdentityStore | undefined,
  creds: WorkloadCredentials,
  log: Logger,
): Promise<void> {
  if (!store) return;
  try {
    await store.save(creds.certChainPem, creds.privateKeyPem);
  } catch (err) {
    log.error({ err: (err as Error).message, dir: store.directory }, "cannot keep the SVID for a restart");
  }
}
