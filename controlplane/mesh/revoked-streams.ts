import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Revocation, RevocableCertificate, RevocationIndex } from "../../core/svid/revocation.ts";
import { describeRevocation, isCertificateRevocation } from "../../core/svid/revocation.ts";
import { SvidVerificationError } from "../../core/svid/verify.ts";
import { ProtocolError } from "../../xds/stream.ts";
import type { OpenStreamEvent } from "../../xds/stream.ts";
import type { AdsServer, StreamEnd } from "../../xds/server.ts";

/** The credential an ADS stream runs on: the SPIFFE ID it was authorized as and its certificate's serial. */
function credentialOf(stream: OpenStreamEvent): RevocableCertificate {
  return { spiffeId: stream.key, serial: stream.certificate?.serialNumber ?? "" };
}

/**
 * How a stream of a revoked credential ends: a revoked workload with PERMISSION_DENIED (it gets
 * nothing more), a revoked certificate with UNAUTHENTICATED, which tells its sidecar to renew (by
 * attesting again) and come back on a new connection.
 */
function streamEnd(entry: Revocation): string | StreamEnd {
  const details = describeRevocation(entry);
  return isCertificateRevocation(entry) ? { code: grpc.status.UNAUTHENTICATED, details } : details;
}

/**
 * An ADS authorizer's refusal of a certificate revoked on its own is UNAUTHENTICATED, as when its
 * stream is ended; every other refusal stays as thrown (PERMISSION_DENIED).
 */
export function authorizerRefusal(nodeId: string, err: unknown): unknown {
  if (err instanceof SvidVerificationError && err.revocation && isCertificateRevocation(err.revocation))
    return new ProtocolError(grpc.status.UNAUTHENTICATED, `node ${nodeId} refused: ${err.message}`);
  return err;
}

/**
 * Ends the control-plane streams of revoked credentials: the ADS streams and the other long-lived
 * streams (flow reports) of a revoked workload, or of a connection authenticated with a revoked
 * certificate. A stream is authorized once, when it opens, and its connection keeps the certificate
 * it presented then: without this, a revocation would only refuse the next stream.
 */
export class RevokedStreams {
  /** Long-lived streams other than ADS, each with the credential it proved and how to end it. */
  private readonly held = new Map<(reason: string) => void, RevocableCertificate>();

  constructor(
    private readonly ads: AdsServer,
    private readonly revocations: () => RevocationIndex,
    private readonly log: Logger,
  ) {}

  /** A stream authorized just before a revocation took effect may register just after it. */
  readonly onStreamOpen = (opened: OpenStreamEvent): void => {
    const index = this.revocations();
    if (!index.revoking(credentialOf(opened))) return;
    this.ads.endStreams((s) => {
      if (s.key !== opened.key) return undefined;
      const entry = index.revoking(credentialOf(s));
      return entry ? streamEnd(entry) : undefined;
    });
  };

  /**
   * Registers a long-lived stream opened with `credential` (already verified), so that revoking the
   * workload or the certificate ends it with `end(reason)`. Returns the release to call when the
   * stream closes. A credential already revoked is ended at once.
   */
  hold(credential: RevocableCertificate, end: (reason: string) => void): () => void {
    const revoked = this.revocations().revoking(credential);
    if (revoked) {
      end(describeRevocation(revoked));
      return () => undefined;
    }
    this.held.set(end, credential);
    return () => {
      this.held.delete(end);
    };
  }

  /**
   * Ends every open stream whose credential the current revocations refuse: ADS streams with
   * PERMISSION_DENIED or UNAUTHENTICATED (see streamEnd) naming the revocation, and the held ones. Reconnecting with the same
   * certificate is refused by the authorizers, which verify against the revocations.
   */
  endRevoked(): void {
    const index = this.revocations();
    const ended = this.ads.endStreams((s) => {
      const entry = index.revoking(credentialOf(s));
      return entry ? streamEnd(entry) : undefined;
    });
    let others = 0;
    for (const [end, credential] of [...this.held]) {
      const entry = index.revoking(credential);
      if (entry === undefined) continue;
      this.held.delete(end);
      others++;
      end(describeRevocation(entry));
    }
    if (ended + others > 0)
      this.log.info({ adsStreams: ended, otherStreams: others }, "ended streams of revoked credentials");
  }
}
