import * as grpc from "@grpc/grpc-js";
import type { PeerCertificate, SecureContextOptions } from "node:tls";
import { LISTENER_TLS_OPTIONS } from "../core/tls-policy.ts";

/** TLS material of the gRPC listener. */
export interface GrpcTlsOptions {
  readonly keyPem: string;
  /** Serving certificate, followed by any intermediates. */
  readonly certPem: string;
  /** Roots client certificates are checked against (required unless clientCerts is "none"). */
  readonly clientCaPem?: string;
  /**
   * "none": no client certificate is asked for. "require": the handshake fails without one that
   * chains to clientCaPem. "request": one is asked for but not required, so a workload without an
   * identity yet can still call the signing service; handlers then decide, and a NodeAuthorizer
   * must verify the certificate it is given itself (the transport does not reject bad ones).
   * Default: "require" when clientCaPem is set, else "none".
   */
  readonly clientCerts?: "none" | "request" | "require";
}

export interface GrpcServerOptions {
  readonly host: string;
  /** 0 picks an ephemeral port. */
  readonly port: number;
  readonly tls: GrpcTlsOptions;
  /**
   * Optional second, plaintext listener for clients that cannot speak TLS to an xDS server (the
   * proxyless gRPC client only supports `insecure` or Google default credentials). Only loopback
   * addresses are accepted, so the plaintext channel never leaves the host.
   */
  readonly plaintext?: { readonly host: string; readonly port: number };
}

/** What a service handler learns about the transport of the call it serves. */
export interface CallPeer {
  /** `ip:port` as the server saw it. */
  readonly address: string;
  /** "ssl" on the TLS listener, undefined on the plaintext one. */
  readonly transportSecurity: string | undefined;
  /** The client's verified certificate when it presented one (TLS listener with clientCaPem). */
  readonly certificate: PeerCertificate | undefined;
}

export interface RunningGrpcServer {
  readonly port: number;
  /** Bound port of the plaintext listener, when one was requested. */
  readonly plaintextPort: number | undefined;
  /** Registers a service; calls for it are served on every listener from then on. */
  addService(definition: grpc.ServiceDefinition, implementation: grpc.UntypedServiceImplementation): void;
  /** Replaces the serving certificate and client roots; new connections use them at once. */
  updateTls(tls: GrpcTlsOptions): void;
  /** Stops accepting calls; streams still open after `graceMs` are cut. */
  close(graceMs?: number): Promise<void>;
}

export class GrpcServerError extends Error {}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

/**
 * The control plane's gRPC endpoint (default port 15010, TLS): it hosts the xDS ADS service and any
 * other control-plane service (identity signing, flow reports) registered through `addService`.
 */
export async function startGrpcServer(options: GrpcServerOptions): Promise<RunningGrpcServer> {
  if (options.plaintext && !LOOPBACK.has(options.plaintext.host)) {
    throw new GrpcServerError(
      `plaintext gRPC listener must bind a loopback address, got ${options.plaintext.host}`,
    );
  }
  const server = new grpc.Server({
    // Many sidecars keep one long-lived ADS stream each; do not cap concurrent streams per connection.
    "grpc.max_concurrent_streams": 0xffffffff,
    "grpc.keepalive_time_ms": 60_000,
    "grpc.keepalive_timeout_ms": 20_000,
  });
  const mode = clientCertMode(options.tls);
  const credentials = new ListenerCredentials(options.tls, mode);
  const port = await bind(server, hostPort(options.host, options.port), credentials);
  let plaintextPort: number | undefined;
  if (options.plaintext) {
    plaintextPort = await bind(
      server,
      hostPort(options.plaintext.host, options.plaintext.port),
      grpc.ServerCredentials.createInsecure(),
    );
  }
  return {
    port,
    plaintextPort,
    addService: (definition, implementation) => server.addService(definition, implementation),
    updateTls: (tls) => {
      if (clientCertMode(tls) !== mode)
        throw new GrpcServerError("the client certificate mode cannot change while running");
      credentials.update(tls);
    },
    close: (graceMs = 2_000) =>
      new Promise<void>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        const done = () => {
          if (timer) clearTimeout(timer);
          resolve();
        };
        server.tryShutdown(done);
        // Long-lived streams (ADS) would keep a graceful shutdown waiting forever.
        const force = () => {
          server.forceShutdown();
          done();
        };
        if (graceMs <= 0) force();
        else timer = setTimeout(force, graceMs);
      }),
  };
}

/** Reads the transport facts of a server call (works for every call kind grpc-js hands a handler). */
export function callPeer(call: {
  getPeer(): string;
  getAuthContext(): { transportSecurityType?: string; sslPeerCertificate?: PeerCertificate };
}): CallPeer {
  const auth = call.getAuthContext();
  const certificate = auth.sslPeerCertificate;
  return {
    address: call.getPeer(),
    transportSecurity: auth.transportSecurityType,
    certificate: certificate && Object.keys(certificate).length > 0 ? certificate : undefined,
  };
}

function clientCertMode(tls: GrpcTlsOptions): "none" | "request" | "require" {
  const mode = tls.clientCerts ?? (tls.clientCaPem ? "require" : "none");
  if (mode !== "none" && !tls.clientCaPem)
    throw new GrpcServerError(`client certificate mode "${mode}" needs clientCaPem`);
  return mode;
}

/**
 * The listener's TLS: the current key pair and client roots, replaceable at run time, always with
 * Sigil's listener protocol versions and suites. grpc-js hands each replacement to the server's
 * `setSecureContext`, which rebuilds the context from those options alone, so the versions and
 * suites travel with every replacement or a renewal would quietly bring back OpenSSL's defaults.
 */
class ListenerCredentials extends grpc.ServerCredentials {
  constructor(
    tls: GrpcTlsOptions,
    private readonly mode: "none" | "request" | "require",
  ) {
    super(
      { ...LISTENER_TLS_OPTIONS, requestCert: mode !== "none", rejectUnauthorized: mode === "require" },
      contextOf(tls),
    );
  }

  update(tls: GrpcTlsOptions): void {
    this.updateSecureContextOptions(contextOf(tls));
  }

  /** Each listener's material changes on its own, so only the same object is equal. */
  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

function contextOf(tls: GrpcTlsOptions): SecureContextOptions {
  return {
    ...LISTENER_TLS_OPTIONS,
    cert: tls.certPem,
    key: tls.keyPem,
    ...(tls.clientCaPem ? { ca: tls.clientCaPem } : {}),
  };
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function bind(server: grpc.Server, address: string, credentials: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, credentials, (err, port) => {
      if (err) reject(new GrpcServerError(`cannot bind gRPC listener ${address}: ${err.message}`));
      else resolve(port);
    });
  });
}
