import type { Socket } from "node:net";
import { TLSSocket } from "node:tls";
import type { Logger } from "pino";
import type { Peer, WorkloadIdentity } from "../../core/identity.ts";
import type { Authorizer } from "../authz/authorize.ts";
import type { ProxiedConnection } from "../upstream/proxied-connection.ts";
import type { OpenConnections } from "../authz/open-connections.ts";
import { splice } from "./splice.ts";
import type { Upstreams } from "../upstream/upstreams.ts";
import { PeerRejectedError } from "../tls/mtls.ts";
import { tlsFailureReason } from "../tls/failure-reason.ts";

/** Refuses a connection: a TCP reset where the socket is plain TCP, else an immediate close. */
export function refuseConnection(socket: Socket): void {
  if (socket instanceof TLSSocket || socket.destroyed) socket.destroy();
  else socket.resetAndDestroy();
}

/** The peer with the certificate serial its sidecar proved on the mTLS hop, when there is one. */
function provenPeer(peer: Peer, server: WorkloadIdentity | undefined): Peer {
  if (peer.kind !== "workload" || server === undefined || server.spiffeId !== peer.identity.spiffeId)
    return peer;
  return { ...peer, identity: { ...peer.identity, serial: server.serial } };
}

/**
 * Opaque TCP: one decision for the whole connection, then bytes both ways with half-close. A denied
 * or unreachable connection is reset, so the client sees a refusal rather than an empty success.
 */
export function tunnel(
  deps: {
    readonly authorizer: Authorizer;
    readonly upstreams: Upstreams;
    readonly log: Logger;
    /** Where an allowed tunnel is kept to be re-decided when the policy changes. */
    readonly openConnections?: OpenConnections;
  },
  socket: Socket,
  conn: ProxiedConnection,
  head: Buffer,
  peer: Peer = conn.facts.peer,
): void {
  const startedAt = Date.now();
  const decision = deps.authorizer.decide(conn.facts, undefined, peer);
  deps.authorizer.tcpOpened(conn.facts, decision, peer);
  if (decision.verdict === "deny") {
    refuseConnection(socket);
    deps.authorizer.record(
      conn.facts,
      decision,
      { protocol: "tcp", bytesSent: 0, bytesReceived: 0, startedAt },
      peer,
    );
    return;
  }
  deps.upstreams.socket(conn.route, "tcp").then(
    (up) => {
      if (socket.destroyed) {
        up.destroy();
        return;
      }
      splice(
        socket,
        up,
        (t) =>
          deps.authorizer.record(
            conn.facts,
            decision,
            { protocol: "tcp", bytesSent: t.bToA, bytesReceived: t.aToB, startedAt },
            peer,
          ),
        head,
      );
      // Re-decided on the certificate the destination's sidecar proved on this hop, so revoking it
      // by serial cuts the tunnel as revoking its workload does.
      const proven = provenPeer(peer, deps.upstreams.serverOf(up)?.identity);
      deps.openConnections?.add(
        socket,
        () => deps.authorizer.decide(conn.facts, undefined, proven),
        () => refuseConnection(socket),
      );
      socket.resume();
    },
    (err: Error) => {
      deps.log.info(
        { reason: upstreamFailureReason(err), detail: err.message, port: conn.facts.port },
        "TCP upstream unreachable",
      );
      refuseConnection(socket);
      deps.authorizer.record(
        conn.facts,
        decision,
        { protocol: "tcp", bytesSent: 0, bytesReceived: 0, startedAt },
        peer,
      );
    },
  );
}

/** The mesh's own rejection code (wrong peer, ALPN), else the TLS or socket failure's code. */
function upstreamFailureReason(err: Error): string {
  return err instanceof PeerRejectedError ? err.reason : tlsFailureReason(err);
}
