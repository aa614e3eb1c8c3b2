import type { PeerCertificate } from "node:tls";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import type { RevocationIndex } from "../../core/svid/revocation.ts";
import { chainOfPeerCertificate } from "../../core/svid/tls.ts";
import { SvidVerificationError, verifySvid } from "../../core/svid/verify.ts";
import type { VerifiedSvid } from "../../core/svid/verify.ts";

/**
 * Verifies a gRPC client's certificate as a Sigil workload SVID against the current trust bundle and
 * revocations. The TLS listener only *requests* client certificates (a workload without an SVID yet
 * must reach the signing service), so this is the check that decides; it throws
 * `SvidVerificationError` with the reason.
 */
export function verifyPeerWorkload(
  cert: PeerCertificate | undefined,
  trust: { bundle: TrustBundle; revocations: RevocationIndex },
): VerifiedSvid {
  if (!cert)
    throw new SvidVerificationError("malformed", "no client certificate: present the workload's SVID");
  const chain = chainOfPeerCertificate(cert);
  if (chain.length === 0) throw new SvidVerificationError("malformed", "client certificate is empty");
  return verifySvid(chain, { bundle: trust.bundle, purpose: "client", revocations: trust.revocations });
}
