import { isIP } from "node:net";
import { checkServerIdentity as checkHostName } from "node:tls";
import type { PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { CallCredentials, ChannelOptions } from "@grpc/grpc-js";
import type { WorkloadCredentials } from "../identity/rotation.ts";

/**
 * TLS towards the control plane. Its serving certificate must chain to the bundle the operator
 * gave (`--control-plane-ca`), and name either the host the sidecar dialed or the control plane's
 * SPIFFE ID (`spiffe://<td>/sigil/controlplane`, what a Sigil-CA-issued serving certificate carries).
 * Once the workload has an SVID it is presented as the client certificate, the newest one on every
 * new connection.
 *
 * Dialed by IP address, the TLS server name (SNI) cannot be that address (RFC 6066; Node warns with
 * DEP0123 and will ignore it). The channel then sends a name standing for the address
 * (`127-0-0-1.ip.sigil.invalid`, under the reserved `.invalid` TLD so it never names a real host),
 * and the identity check maps it back: the certificate must still carry the SPIFFE ID or that
 * address as an IP SAN.
 */

export function controlPlaneSpiffeIdFor(trustDomain: string): string {
  return `spiffe://${trustDomain}/sigil/controlplane`;
}

export type ServerIdentityCheck = (host: string, cert: PeerCertificate) => Error | undefined;

const IP_SERVER_NAME_SUFFIX = ".ip.sigil.invalid";

/** The server name sent for a control plane dialed by `ip`; undefined when it has no such form. */
export function serverNameForIp(ip: string): string | undefined {
  if (isIP(ip) === 0 || !/^[0-9a-fA-F.:]+$/.test(ip)) return undefined;
  return `${ip.toLowerCase().replace(/\./g, "-").replace(/:/g, "x")}${IP_SERVER_NAME_SUFFIX}`;
}

/** The address a name made by `serverNameForIp` stands for. */
function ipOfServerName(name: string): string | undefined {
  if (!name.endsWith(IP_SERVER_NAME_SUFFIX)) return undefined;
  const ip = name.slice(0, -IP_SERVER_NAME_SUFFIX.length).replace(/-/g, ".").replace(/x/g, ":");
  return isIP(ip) === 0 ? undefined : ip;
}

export function controlPlaneIdentityCheck(trustDomain: string): ServerIdentityCheck {
  const expected = controlPlaneSpiffeIdFor(trustDomain);
  return (serverName, cert) => {
    const uris = (cert.subjectaltname ?? "")
      .split(", ")
      .filter((n) => n.startsWith("URI:"))
      .map((n) => n.slice(4));
    if (uris.includes(expected)) return undefined;
    const host = ipOfServerName(serverName) ?? serverName;
    const byName = checkHostName(host, cert);
    if (!byName) return undefined;
    return new Error(
      `control plane certificate names neither ${host} nor ${expected} (${cert.subjectaltname ?? "no SAN"})`,
    );
  };
}

/**
 * Channel credentials that, for a target given by IP address and no explicit server name, send the
 * name `serverNameForIp` makes instead of the address. Verification is the wrapped credentials'
 * own (its identity check sees that name and maps it back).
 */
class ControlPlaneChannelCredentials extends grpc.ChannelCredentials {
  constructor(private readonly inner: grpc.ChannelCredentials) {
    super();
  }

  _isSecure(): boolean {
    return this.inner._isSecure();
  }

  _equals(other: grpc.ChannelCredentials): boolean {
    return (
      other === this || (other instanceof ControlPlaneChannelCredentials && this.inner._equals(other.inner))
    );
  }

  _createSecureConnector(
    target: Parameters<grpc.ChannelCredentials["_createSecureConnector"]>[0],
    options: ChannelOptions,
    callCredentials?: CallCredentials,
  ): ReturnType<grpc.ChannelCredentials["_createSecureConnector"]> {
    const name = options["grpc.ssl_target_name_override"] ? undefined : serverNameForIp(hostOf(target.path));
    const effective = name ? { ...options, "grpc.ssl_target_name_override": name } : options;
    return this.inner._createSecureConnector(target, effective, callCredentials);
  }
}

/** The host of a `host:port`, `[v6]:port` or bare host target path. */
function hostOf(path: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(path);
  if (bracketed) return bracketed[1] as string;
  if (isIP(path) !== 0) return path;
  const colon = path.lastIndexOf(":");
  return colon >= 0 ? path.slice(0, colon) : path;
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
  return new ControlPlaneChannelCredentials(
    grpc.experimental.createCertificateProviderChannelCredentials(provider, provider, {
      checkServerIdentity: check,
    }),
  );
}

/** Server-authenticated credentials for calls made before the workload has an SVID. */
export function bootstrapChannelCredentials(
  caPem: string,
  check: ServerIdentityCheck,
): grpc.ChannelCredentials {
  return new ControlPlaneChannelCredentials(
    grpc.credentials.createSsl(Buffer.from(caPem), null, null, { checkServerIdentity: check }),
  );
}
