import { checkServerIdentity as checkHostName } from "node:tls";
import type { PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { WorkloadCredentials } from "../identity/rotation.ts";

/**
 * TLS towards the control plane. Its serving certificate must chain to the bundle the operator
 * gave (`--control-plane-ca`), and name either the host the sidecar dialed or the control plane's
 * SPIFFE ID (`spiffe://<td>/sigil/controlplane`, what a Sigil-CA-issued serving certificate carries).
 * Once the workload has an SVID it is presented as the client certificate, the newest one on every
 * new connection.
 */

export function controlPlaneSpiffeIdFor(trustDomain: string): string {
  return `spiffe://${trustDomain}/sigil/controlplane`;
}

export type ServerIdentityCheck = (host: string, cert: PeerCertificate) => Error | undefined;

export function controlPlaneIdentityCheck(trustDomain: string): ServerIdentityCheck {
  const expected = controlPlaneSpiffeIdFor(trustDomain);
  return (host, cert) => {
    const uris = (cert.subjectaltname ?? "")
      .split(", ")
      .filter((n) => n.startsWith("URI:"))
      .map((n) => n.slice(4));
    if (uris.includes(expected)) return undefined;
    const byName = checkHostName(host, cert);
    if (!byName) return undefined;
    return new Error(
      `control plane certificate names neither ${host} nor ${expected} (${cert.subjectaltname ?? "no SAN"})`,
    );
  };
}

/**
 * A grpc-js certificate provider fed from the rotation manager: every subscriber gets the current
 * SVID at once and each rotated one after, so channels built on it present the newest certificate
 * whenever they (re)connect while established streams keep theirs.
 */
export class SvidCertificateProvider implements grpc.experimental.CertificateProvider {
  private readonly identityListeners = new Set<grpc.experimental.IdentityCertificateUpdateListener>();
  private readonly caListeners = new Set<grpc.experimental.CaCertificateUpdateListener>();
  private identity: grpc.experimental.IdentityCertificateUpdate | null = null;

  constructor(private readonly caPem: string) {}

  update(credentials: WorkloadCredentials): void {
    this.identity = {
      certificate: Buffer.from(credentials.certChainPem),
      privateKey: Buffer.from(credentials.privateKeyPem),
    };
    for (const l of this.identityListeners) l(this.identity);
  }

  addCaCertificateListener(listener: grpc.experimental.CaCertificateUpdateListener): void {
    this.caListeners.add(listener);
    listener({ caCertificate: Buffer.from(this.caPem) });
  }
  removeCaCertificateListener(listener: grpc.experimental.CaCertificateUpdateListener): void {
    this.caListeners.delete(listener);
  }
  addIdentityCertificateListener(listener: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.identityListeners.add(listener);
    if (this.identity) listener(this.identity);
  }
  removeIdentityCertificateListener(listener: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.identityListeners.delete(listener);
  }
}

/** Channel credentials presenting the newest SVID (requires `provider.update()` to have run once). */
export function svidChannelCredentials(
  provider: SvidCertificateProvider,
  check: ServerIdentityCheck,
): grpc.ChannelCredentials {
  return grpc.experimental.createCertificateProviderChannelCredentials(provider, provider, {
    checkServerIdentity: check,
  });
}

/** Server-authenticated credentials for calls made before the workload has an SVID. */
export function bootstrapChannelCredentials(
  caPem: string,
  check: ServerIdentityCheck,
): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(Buffer.from(caPem), null, null, { checkServerIdentity: check });
}
