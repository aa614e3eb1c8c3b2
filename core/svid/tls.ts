import type { DetailedPeerCertificate, PeerCertificate, TLSSocket } from "node:tls";
import type { SvidPurpose, SvidVerifyOptions, VerifiedSvid } from "./verify.ts";
import { SvidVerificationError, verifySvid } from "./verify.ts";

const MAX_CHAIN = 8;

/**
 * The chain behind a peer certificate, DER, leaf first: the issuers Node attached, bounded and
 * stopped at the first repeat (a self-signed root names itself as its issuer).
 */
export function chainOfPeerCertificate(cert: PeerCertificate | DetailedPeerCertificate): Buffer[] {
  const chain: Buffer[] = [];
  const seen = new Set<string>();
  let current: PeerCertificate | DetailedPeerCertificate | undefined = cert;
  while (current?.raw && chain.length < MAX_CHAIN && !seen.has(current.fingerprint256)) {
    seen.add(current.fingerprint256);
    chain.push(current.raw);
    current = (current as Partial<DetailedPeerCertificate>).issuerCertificate;
  }
  return chain;
}

/** The certificate chain the peer of a TLS socket presented, DER, leaf first. */
export function peerChain(socket: TLSSocket): Buffer[] {
  return chainOfPeerCertificate(socket.getPeerCertificate(true));
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
