import { X509Certificate } from "node:crypto";
import tls from "node:tls";
import net from "node:net";
import type { Socket } from "node:net";
import type { SecureContext, TLSSocket } from "node:tls";
import type { Logger } from "pino";
import { ioDeadline } from "../../core/io-deadline.ts";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import type { VerifiedSvid } from "../../core/svid/verify.ts";
import { SvidVerificationError, verifySvid } from "../../core/svid/verify.ts";
import type { TunnelTarget } from "./alpn.ts";
import { encodeMeshAlpn, selectMeshAlpn } from "./alpn.ts";
import type { SidecarMetrics } from "../admin/metrics.ts";
import { PeerVerifier } from "./peer-cache.ts";
import type { CredentialSource, MeshDestination, PolicySource, TlsCredentials } from "../inputs/sources.ts";

/**
 * The mutual-TLS hop between sidecars. Both ends present the workload's current SVID and verify the
 * other against the trust bundle, then against Sigil's SVID rules (SPIFFE ID, labels extension,
 * revocation) through core/svid. A rotation swaps the secure context for new handshakes only;
 * established connections keep theirs, so none is dropped.
 */

export class PeerRejectedError extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

function chainDer(pem: string): Buffer[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((block) => new X509Certificate(block).raw);
}

function contextOptions(creds: TlsCredentials): tls.SecureContextOptions {
  return {
    key: creds.privateKeyPem,
    cert: creds.certChainPem,
    ca: bundleRootsPem(creds.bundle),
    minVersion: "TLSv1.3",
  };
}

export class MeshTls {
  private clientContext: SecureContext;
  private own: VerifiedSvid;
  private readonly server: tls.Server;
  private readonly pending = new Map<
    string,
    { settle: (outcome: { socket: TLSSocket } | { error: Error }) => void }
  >();
  private readonly onRotate = (): void => this.reload();
  private readonly peers = new PeerVerifier();
  /** The identity each open client hop's server proved, certificate serial included. */
  private readonly servers = new WeakMap<Socket, VerifiedSvid>();

  constructor(
    private readonly credentials: CredentialSource,
    private readonly policy: PolicySource,
    private readonly metrics: SidecarMetrics,
    private readonly log: Logger,
  ) {
    this.own = this.verifyOwn(credentials.current());
    this.clientContext = tls.createSecureContext(contextOptions(credentials.current()));
    this.server = tls.createServer({
      ...contextOptions(credentials.current()),
      requestCert: true,
      rejectUnauthorized: true,
      allowHalfOpen: true,
      ALPNCallback: ({ protocols }) => selectMeshAlpn(protocols),
    });
    const keyOf = (s: TLSSocket): string => `${s.remoteAddress}|${s.remotePort}`;
    this.server.on("secureConnection", (s: TLSSocket) => this.pending.get(keyOf(s))?.settle({ socket: s }));
    this.server.on("tlsClientError", (err: Error, s: TLSSocket) => {
      this.metrics.tlsHandshakes.inc({ side: "server", result: "error" });
      this.pending.get(keyOf(s))?.settle({ error: err });
    });
    credentials.on("rotate", this.onRotate);
  }

  /** The workload's own verified identity (from its current SVID). */
  get identity(): VerifiedSvid {
    return this.own;
  }

  /** Refuses to run with an SVID that peers would refuse: fail closed at start and on rotation. */
  private verifyOwn(creds: TlsCredentials): VerifiedSvid {
    const chain = chainDer(creds.certChainPem);
    return verifySvid(chain, { bundle: creds.bundle, purpose: "client" });
  }

  private reload(): void {
    const creds = this.credentials.current();
    let own: VerifiedSvid;
    try {
      own = this.verifyOwn(creds);
    } catch (err) {
      this.log.error({ err }, "rotated credentials are not a valid SVID; keeping the previous ones");
      return;
    }
    // Keep the labels object when unchanged: core/policy caches per labels object.
    const sameLabels =
      JSON.stringify(own.identity.labels) === JSON.stringify(this.own.identity.labels) &&
      own.identity.spiffeId === this.own.identity.spiffeId;
    this.own = sameLabels ? { ...own, identity: { ...own.identity, labels: this.own.identity.labels } } : own;
    this.clientContext = tls.createSecureContext(contextOptions(creds));
    this.server.setSecureContext(contextOptions(creds));
    this.log.info(
      { spiffeId: own.identity.spiffeId, serial: own.identity.serial, notAfter: own.identity.notAfter },
      "credentials rotated",
    );
  }

  /**
   * Terminates mesh mTLS on an accepted socket (its ClientHello may already sit in the socket's
   * buffer) and verifies the client. Rejects with PeerRejectedError or the handshake error.
   */
  accept(socket: Socket, handshakeTimeoutMs: number): Promise<{ socket: TLSSocket; peer: VerifiedSvid }> {
    // The TLS server (never listening itself) wraps the socket synchronously; its events name the
    // TLS socket, which shares the TCP connection's remote address and port.
    const key = `${socket.remoteAddress}|${socket.remotePort}`;
    if (socket.remoteAddress === undefined || socket.remotePort === undefined) {
      socket.destroy();
      return Promise.reject(
        new PeerRejectedError("untrusted", "connection closed before the mTLS handshake"),
      );
    }
    return new Promise((resolve, reject) => {
      // Each handshake settles exactly once, on its own timer or close even if another socket has
      // since taken its key, so no accepted socket is ever left without an outcome.
      let settled = false;
      const settle = (outcome: { socket: TLSSocket } | { error: Error }): void => {
        if (settled) return;
        settled = true;
        if (this.pending.get(key) === handshake) this.pending.delete(key);
        deadline.cancel();
        socket.off("close", onClose);
        if ("error" in outcome) {
          socket.destroy();
          reject(outcome.error);
          return;
        }
        try {
          resolve({ socket: outcome.socket, peer: this.verifyClient(outcome.socket) });
        } catch (err) {
          outcome.socket.destroy();
          reject(err as Error);
        }
      };
      const handshake = { settle };
      const onClose = (): void =>
        settle({ error: new PeerRejectedError("untrusted", "connection closed during the mTLS handshake") });
      const deadline = ioDeadline(handshakeTimeoutMs, () =>
        settle({
          error: new PeerRejectedError(
            "handshake-timeout",
            `mTLS handshake not done in ${handshakeTimeoutMs} ms`,
          ),
        }),
      );
      this.pending.set(key, handshake);
      socket.once("close", onClose);
      this.server.emit("connection", socket);
    });
  }

  /** Verifies a client that completed the handshake; throws PeerRejectedError. */
  private verifyClient(socket: TLSSocket): VerifiedSvid {
    const creds = this.credentials.current();
    try {
      const peer = this.peers.verify(socket, {
        bundle: creds.bundle,
        purpose: "client",
        revocations: this.policy.current().revocations,
      });
      this.metrics.tlsHandshakes.inc({ side: "server", result: "ok" });
      return peer;
    } catch (err) {
      this.metrics.tlsHandshakes.inc({ side: "server", result: "rejected" });
      if (err instanceof SvidVerificationError) throw new PeerRejectedError(err.reason, err.message);
      throw err;
    }
  }

  /**
   * Opens the mTLS hop to a destination's sidecar, announcing `target` in ALPN, and verifies that the
   * server proves exactly the destination's SPIFFE ID.
   */
  connect(dest: MeshDestination, target: TunnelTarget, timeoutMs: number): Promise<TLSSocket> {
    const alpn = encodeMeshAlpn(target);
    return new Promise((resolve, reject) => {
      // Our own TCP socket so the TLS socket inherits half-close (an end keeps the other direction open).
      const raw = net.connect({ host: dest.sidecar.host, port: dest.sidecar.port, allowHalfOpen: true });
      raw.setNoDelay(true);
      const socket = tls.connect({
        socket: raw,
        secureContext: this.clientContext,
        ALPNProtocols: [alpn],
        rejectUnauthorized: true,
        // The server is identified by its SPIFFE ID (checked below), not by a DNS name.
        checkServerIdentity: () => undefined,
      });
      const fail = (err: Error): void => {
        deadline.cancel();
        socket.destroy();
        raw.destroy();
        reject(err);
      };
      raw.once("error", fail);
      const deadline = ioDeadline(timeoutMs, () =>
        fail(new Error(`mTLS to ${dest.sidecar.host}:${dest.sidecar.port} timed out after ${timeoutMs} ms`)),
      );
      socket.once("error", (err) => {
        this.metrics.tlsHandshakes.inc({ side: "client", result: "error" });
        fail(err);
      });
      let verified: VerifiedSvid | undefined;
      socket.once("secureConnect", () => {
        deadline.cancel();
        socket.removeAllListeners("error");
        raw.removeListener("error", fail);
        raw.on("error", () => socket.destroy());
        try {
          if (socket.alpnProtocol !== alpn) {
            throw new PeerRejectedError(
              "alpn",
              `peer selected ALPN ${String(socket.alpnProtocol)}, expected ${alpn}`,
            );
          }
          const peer = this.peers.verify(socket, {
            bundle: this.credentials.current().bundle,
            purpose: "server",
            revocations: this.policy.current().revocations,
          });
          verified = peer;
          if (peer.identity.spiffeId !== dest.identity.spiffeId) {
            throw new PeerRejectedError(
              "unexpected-peer",
              `server proved ${peer.identity.spiffeId}, expected ${dest.identity.spiffeId}`,
            );
          }
        } catch (err) {
          this.metrics.tlsHandshakes.inc({ side: "client", result: "rejected" });
          const e =
            err instanceof SvidVerificationError
              ? new PeerRejectedError(err.reason, err.message)
              : (err as Error);
          socket.destroy();
          reject(e);
          return;
        }
        this.metrics.tlsHandshakes.inc({ side: "client", result: "ok" });
        this.servers.set(socket, verified);
        resolve(socket);
      });
    });
  }

  /** What the server of a hop `connect` opened proved (its certificate's serial among it). */
  serverOf(socket: Socket): VerifiedSvid | undefined {
    return this.servers.get(socket);
  }

  close(): void {
    this.credentials.off("rotate", this.onRotate);
  }
}
