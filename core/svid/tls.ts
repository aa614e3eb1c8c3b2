import type { DetailedPeerCertificate, TLSSocket } from "node:tls";
import type { SvidPurpose, SvidVerifyOptions, VerifiedSvid } from "./verify.ts";
import { SvidVerificationError, verifySvid } from "./verify.ts";

const MAX_CHAIN = 8;

/** The certificate chain the peer of a TLS socket presented, DER, leaf first. */
export function peerChain(socket: TLSSocket): Buffer[] {
  const chain: Buffer[] = [];
  let cert = socket.getPeerCertificate(true) as DetailedPeerCertificate | Record<string, never>;
  const seen = new Set<string>();
  while (cert && "raw" in cert && cert.raw && chain.length < MAX_CHAIN) {
    if (seen.has(cert.fingerprint256)) break;
    seen.add(cert.fingerprint256);
    chain.push(cert.raw);
    cert = cert.issuerCertificate;
  }
  return chain;
}

/**
 * Verifies the peer of an established TLS socket as a Sigil workload. Call it in `secureConnect`
 * (client, purpose "server") or `secureConnection` (server, purpose "client") before any
 * application byte is read or written; on failure destroy the socket.
 */
export function verifyTlsPeer(
  socket: TLSSocket,
  options: Omit<SvidVerifyOptions, "purpose"> & { readonly purpose: SvidPurpose },
): VerifiedSvid {
  const chain = peerChain(socket);
  if (chain.length === 0) throw new SvidVerificationError("malformed", "peer presented no certificate");
  return verifySvid(chain, options);
}
