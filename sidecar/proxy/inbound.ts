import type { Socket } from "node:net";
import type { OpenConnections } from "../authz/open-connections.ts";
import type { Logger } from "pino";
import type { Peer } from "../../core/identity.ts";
import type { Labels } from "../../core/labels.ts";
import { peerAuthenticationMode } from "../../core/policy/index.ts";
import type { TunnelTarget } from "../tls/alpn.ts";
import { decodeMeshAlpn, selectMeshAlpn } from "../tls/alpn.ts";
import type { Authorizer, ConnectionFacts } from "../authz/authorize.ts";
import type { ForwardClientCert } from "../http/client-cert.ts";
import { forwardedClientCert } from "../http/client-cert.ts";
import { refused, refusalText } from "../authz/refusal.ts";
import { tlsFailureReason } from "../tls/failure-reason.ts";
import type { Refusal } from "../authz/refusal.ts";
import type { Detection } from "./detect.ts";
import { detectProtocol, takeBuffered } from "./detect.ts";
import type { Http1Proxy } from "../http/http1/proxy.ts";
import type { ProxiedConnection } from "../upstream/proxied-connection.ts";
import type { Http2Proxy } from "../http/http2/proxy.ts";
import type { MeshTls } from "../tls/mtls.ts";
import { PeerRejectedError } from "../tls/mtls.ts";
import type { PolicySource } from "../inputs/sources.ts";
import type { ConnectionTracker } from "./tracker.ts";
import { refuseConnection, tunnel } from "../tunnel/tunnel.ts";
import type { UpstreamRoute, Upstreams } from "../upstream/upstreams.ts";
import type { UserAccessGate } from "../user-access/gate.ts";

/**
 * The inbound (ingress) side: connections arriving for the local application. A hello offering the
 * mesh ALPN is terminated as mTLS and the caller is identified by its SVID; anything else is a
 * plaintext client outside the mesh, accepted only where the port's peer authentication is
 * PERMISSIVE or DISABLE and then decided by address. Allowed traffic goes to the application on
 * the port the caller meant (from ALPN, or the original destination for plaintext).
 */

export interface InboundDeps {
  readonly authorizer: Authorizer;
  /** Open tunnels and mesh HTTP connections, re-decided when the policy or a peer's labels change. */
  readonly openConnections?: OpenConnections;
  readonly tls: MeshTls;
  readonly policy: PolicySource;
  readonly selfLabels: () => Labels;
  readonly upstreams: Upstreams;
  readonly http1: Http1Proxy;
  readonly http2: Http2Proxy;
  readonly tracker: ConnectionTracker;
  readonly appHost: string;
  /** The application port a plaintext connection was meant for, or null when there is none. */
  readonly plaintextPort: (socket: Socket) => number | null;
  /** Ports a peer may not name as its target (the sidecar's own listeners). */
  readonly reservedPorts: ReadonlySet<number>;
  /** Application ports served as HTTP only, never as opaque TCP. */
  readonly httpPorts: ReadonlySet<number>;
  readonly detectTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
  /** Whether HTTP requests from a caller verified by mTLS carry its identity to the application. */
  readonly forwardClientCert: ForwardClientCert;
  /** Ports served to people (`user-access/`): sign-in, sessions, bearer tokens. Null: none. */
  readonly userAccess: UserAccessGate | null;
  readonly log: Logger;
}

export class InboundHandler {
  constructor(private readonly deps: InboundDeps) {}

  async handle(socket: Socket): Promise<void> {
    const { deps } = this;
    deps.tracker.add(socket, "ingress");
    socket.on("error", (err) => deps.log.debug({ err: err.message }, "inbound downstream error"));
    socket.setNoDelay(true);
    // Waiting briefly for a silent client only helps where a plaintext (server-speaks-first) client
    // could be served; everywhere else the client must send a mesh hello, however slow it is.
    const plainPort = deps.plaintextPort(socket);
    const plaintextPossible =
      plainPort !== null &&
      peerAuthenticationMode(deps.policy.current().policies, deps.selfLabels(), plainPort) !== "STRICT";
    const detection = await detectProtocol(
      socket,
      plaintextPossible ? deps.detectTimeoutMs : deps.handshakeTimeoutMs,
    );
    if (socket.destroyed) return;
    const alpn =
      detection.protocol.kind === "tls" ? selectMeshAlpn(detection.protocol.hello.alpn) : undefined;
    const target = alpn === undefined ? null : decodeMeshAlpn(alpn);
    if (target) await this.mesh(socket, detection, target);
    else if (
      !plaintextPossible &&
      detection.protocol.kind === "tcp" &&
      detection.protocol.reason !== "unrecognised"
    )
      // Where only mesh callers are served, silence until the deadline (or a client leaving first) is
      // a mesh handshake that did not happen, not a plaintext client: said as such, not "mtls-required".
      this.refuse(socket, plainPort ?? 0, {
        kind: "peer-rejected",
        reason: detection.protocol.reason === "timeout" ? "handshake-timeout" : "closed-before-hello",
        message:
          detection.protocol.reason === "timeout"
            ? `no complete TLS ClientHello within ${deps.handshakeTimeoutMs} ms`
            : "the client closed the connection before its TLS ClientHello was complete",
      });
    else this.plaintext(socket, detection, plainPort);
  }

  private refuse(socket: Socket, port: number, refusal: Refusal, peer?: Peer): void {
    const address = socket.remoteAddress ?? "";
    refuseConnection(socket);
    const facts: ConnectionFacts = {
      direction: "ingress",
      port,
      peer: peer ?? { kind: "external", address },
      encrypted: false,
    };
    const decision = refused(refusal);
    this.deps.authorizer.tcpOpened(facts, decision);
    this.deps.authorizer.record(facts, decision, {
      protocol: "tcp",
      bytesSent: 0,
      bytesReceived: 0,
      startedAt: Date.now(),
    });
  }

  private route(port: number): UpstreamRoute {
    return { kind: "direct", host: this.deps.appHost, port };
  }

  /** The gate of a user-access port, to put on its connections; undefined elsewhere. */
  private gateFor(port: number): { userAccess: UserAccessGate } | undefined {
    const gate = this.deps.userAccess;
    return gate !== null && gate.ports.has(port) ? { userAccess: gate } : undefined;
  }

  private async mesh(socket: Socket, detection: Detection, target: TunnelTarget): Promise<void> {
    const { deps } = this;
    if (deps.reservedPorts.has(target.port)) {
      this.refuse(socket, target.port, { kind: "reserved-port", port: target.port });
      return;
    }
    const mode = peerAuthenticationMode(deps.policy.current().policies, deps.selfLabels(), target.port);
    if (mode === "DISABLE") {
      this.refuse(socket, target.port, { kind: "mtls-disabled", port: target.port });
      return;
    }
    const remote = socket.remoteAddress ?? "";
    socket.unshift(takeBuffered(socket, detection.head));
    let accepted;
    try {
      accepted = await deps.tls.accept(socket, deps.handshakeTimeoutMs);
    } catch (err) {
      const refusal: Refusal =
        err instanceof PeerRejectedError
          ? { kind: "peer-rejected", reason: err.reason, message: err.message }
          : { kind: "tls-error", message: (err as Error).message };
      // `reason` is a stable code to group by; `detail` the text, OpenSSL's own for a TLS failure.
      deps.log.info(
        {
          remote: socket.remoteAddress,
          port: target.port,
          reason: err instanceof PeerRejectedError ? err.reason : tlsFailureReason(err),
          detail: refusalText(refusal),
        },
        "mesh handshake refused",
      );
      this.refuse(socket, target.port, refusal, { kind: "external", address: remote });
      return;
    }
    const tlsSocket = accepted.socket;
    tlsSocket.on("error", (err) =>
      deps.log.debug({ reason: tlsFailureReason(err), detail: err.message }, "inbound mTLS error"),
    );
    const facts: ConnectionFacts = {
      direction: "ingress",
      port: target.port,
      peer: { kind: "workload", identity: accepted.peer.identity, address: remote },
      encrypted: true,
    };
    // Refused after the handshake, so the flow record names the workload that asked.
    if (target.protocol === "tcp" && deps.httpPorts.has(target.port)) {
      this.refuse(
        tlsSocket,
        target.port,
        { kind: "http-only", port: target.port, offered: "tunnel" },
        facts.peer,
      );
      return;
    }
    const route = this.route(target.port);
    const conn: ProxiedConnection =
      deps.forwardClientCert === "sanitize_set" && target.protocol !== "tcp"
        ? {
            facts,
            route,
            peerFor: () => facts.peer,
            forwardedClientCert: forwardedClientCert(
              deps.tls.identity.identity.spiffeId,
              accepted.peer.leaf.raw,
              accepted.peer.identity.spiffeId,
            ),
            ...this.gateFor(target.port),
          }
        : { facts, route, peerFor: () => facts.peer, ...this.gateFor(target.port) };
    if (target.protocol === "tcp") {
      tunnel(deps, tlsSocket, conn, Buffer.alloc(0));
      return;
    }
    // A kept-alive connection, an HTTP/2 session or an upgraded stream of a peer that policy or a
    // relabelling now refuses everything is closed, not left to carry what is already in flight.
    deps.openConnections?.add(
      tlsSocket,
      () => deps.authorizer.decideConnection(facts),
      () => tlsSocket.destroy(),
    );
    if (target.protocol === "http1") deps.http1.accept(tlsSocket, conn, Buffer.alloc(0));
    else deps.http2.accept(tlsSocket, conn, Buffer.alloc(0));
  }

  private plaintext(socket: Socket, detection: Detection, port: number | null): void {
    const { deps } = this;
    if (port === null) {
      this.refuse(socket, 0, { kind: "mtls-required", port: null });
      return;
    }
    if (deps.reservedPorts.has(port)) {
      this.refuse(socket, port, { kind: "reserved-port", port });
      return;
    }
    const mode = peerAuthenticationMode(deps.policy.current().policies, deps.selfLabels(), port);
    if (mode === "STRICT") {
      this.refuse(socket, port, { kind: "mtls-required", port });
      return;
    }
    const kind = detection.protocol.kind;
    if (kind !== "http1" && kind !== "h2" && deps.httpPorts.has(port)) {
      this.refuse(socket, port, {
        kind: "http-only",
        port,
        offered: "not-http",
        detectTimeoutMs: deps.detectTimeoutMs,
      });
      return;
    }
    // People reach a user-access port with browsers, which speak HTTP/1.1 without TLS; HTTP/2 in the
    // clear there would pass no sign-in, so it is refused rather than let through without a user.
    if (kind !== "http1" && this.gateFor(port) !== undefined) {
      this.refuse(socket, port, {
        kind: "user-access",
        problem: `port ${port} serves people over HTTP/1.1 only`,
      });
      return;
    }
    const facts: ConnectionFacts = {
      direction: "ingress",
      port,
      peer: { kind: "external", address: socket.remoteAddress ?? "" },
      encrypted: false,
    };
    const conn: ProxiedConnection = {
      facts,
      route: this.route(port),
      peerFor: () => facts.peer,
      ...this.gateFor(port),
    };
    const head = takeBuffered(socket, detection.head);
    switch (detection.protocol.kind) {
      case "http1":
        deps.http1.accept(socket, conn, head);
        return;
      case "h2":
        deps.http2.accept(socket, conn, head);
        return;
      default:
        tunnel(deps, socket, conn, head);
    }
  }
}
