import type { Socket } from "node:net";
import { TLSSocket } from "node:tls";
import type { Logger } from "pino";
import type { Peer } from "../../core/identity.ts";
import type { Authorizer } from "../authz/authorize.ts";
import type { ProxiedConnection } from "../upstream/proxied-connection.ts";
import type { OpenTunnels } from "./open-tunnels.ts";
import { splice } from "./splice.ts";
import type { Upstreams } from "../upstream/upstreams.ts";

/** Refuses a connection: a TCP reset where the socket is plain TCP, else an immediate close. */
export function refuseConnection(socket: Socket): void {
  if (socket instanceof TLSSocket || socket.destroyed) socket.destroy();
  else socket.resetAndDestroy();
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
    readonly openTunnels?: OpenTunnels;
  },
  socket: Socket,
  conn: ProxiedConnection,
  head: Buffer,
  peer: Peer = conn.facts.peer,
): void {
  const startedAt = Date.now();
  const decision = deps.authorizer.decide(conn.facts, undefined, peer);
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
      deps.openTunnels?.add(
        socket,
        () => deps.authorizer.decide(conn.facts, undefined, peer),
        () => refuseConnection(socket),
      );
      socket.resume();
    },
    (err: Error) => {
      deps.log.info({ err: err.message, port: conn.facts.port }, "TCP upstream unreachable");
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
