import net from "node:net";
import type { OpenConnections } from "../authz/open-connections.ts";
import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { Peer, WorkloadIdentity } from "../../core/identity.ts";
import type { Authorizer, ConnectionFacts } from "../authz/authorize.ts";
import type { Detection } from "./detect.ts";
import { detectProtocol, takeBuffered } from "./detect.ts";
import type { Http1Proxy } from "../http/http1/proxy.ts";
import type { ProxiedConnection } from "../upstream/proxied-connection.ts";
import type { Http2Proxy } from "../http/http2/proxy.ts";
import type { MeshDestination, PeerDirectory } from "../inputs/sources.ts";
import type { ConnectionTracker } from "./tracker.ts";
import { tunnel } from "../tunnel/tunnel.ts";
import type { UpstreamRoute, Upstreams } from "../upstream/upstreams.ts";

/**
 * The outbound (egress) side: connections the local application opens. The destination is either a
 * mesh workload (found in the peer directory; the hop goes over mTLS to its sidecar) or outside the
 * mesh (connected directly). The caller's egress policy decides each HTTP request, or the connection
 * for anything else; non-mesh destinations are matched by address and by the name the application
 * used (the explicit target's host name, else the Host header or TLS SNI); a name only allows a
 * connection to an address it resolves to (`egress-dns.ts`).
 */

export interface OutboundDeps {
  readonly authorizer: Authorizer;
  /** Open TCP tunnels, re-decided when the policy changes. */
  readonly openConnections?: OpenConnections;
  readonly peers: PeerDirectory;
  readonly upstreams: Upstreams;
  readonly http1: Http1Proxy;
  readonly http2: Http2Proxy;
  readonly tracker: ConnectionTracker;
  readonly detectTimeoutMs: number;
  readonly log: Logger;
}

/** How the application's traffic to a destination is framed; "auto" sniffs the first bytes. */
export type DeclaredProtocol = "auto" | "http1" | "h2" | "tcp";

function hostName(hostHeader: string | undefined): string | undefined {
  if (hostHeader === undefined || hostHeader === "") return undefined;
  if (hostHeader.startsWith("[")) return undefined; // an IPv6 literal names no DNS name
  const name = hostHeader.replace(/:\d+$/, "");
  return net.isIP(name) ? undefined : name;
}

/** The Host header of the first HTTP/1 request, when the bytes read so far already hold it. */
function firstHost(head: Buffer): string | undefined {
  const text = head.toString("latin1");
  const end = text.indexOf("\r\n\r\n");
  const match = /\r\nhost:[ \t]*([^\r\n]*)/i.exec(end >= 0 ? text.slice(0, end + 2) : text);
  return hostName(match?.[1]?.trim());
}

/**
 * One identity object per directory entry: what is remembered per identity (the metrics' series,
 * the identity's labels) is then found again on the next request instead of rebuilt every time.
 */
const destinationIdentities = new WeakMap<MeshDestination, WorkloadIdentity>();

function meshPeer(dest: MeshDestination, address: string): Peer {
  let identity = destinationIdentities.get(dest);
  if (identity === undefined) {
    // Egress is decided on what the directory says the destination is; the handshake then makes the
    // destination prove that SPIFFE ID, so serial and expiry are those of the certificate it presents.
    identity = { ...dest.identity, serial: "", notAfter: new Date(0) };
    destinationIdentities.set(dest, identity);
  }
  return { kind: "workload", identity, address };
}

function externalPeer(address: string, dnsName: string | undefined): Peer {
  return dnsName === undefined ? { kind: "external", address } : { kind: "external", address, dnsName };
}

export class OutboundHandler {
  constructor(private readonly deps: OutboundDeps) {}

  /**
   * Handles one connection from the application to `destination`. With a declared `protocol` the
   * first bytes are not sniffed, so a client that is slow to send cannot be mistaken for another
   * protocol.
   */
  async handle(
    socket: Socket,
    destination: { host: string; port: number },
    protocol: DeclaredProtocol = "auto",
  ): Promise<void> {
    const { deps } = this;
    deps.tracker.add(socket, "egress");
    socket.on("error", (err) => deps.log.debug({ err: err.message }, "outbound downstream error"));
    socket.setNoDelay(true);
    const detection: Detection =
      protocol === "auto"
        ? await detectProtocol(socket, deps.detectTimeoutMs)
        : {
            protocol: protocol === "tcp" ? { kind: "tcp", reason: "unrecognised" } : { kind: protocol },
            head: Buffer.alloc(0),
          };
    if (socket.destroyed) return;
    const mesh = deps.peers.lookup(destination.host, destination.port);
    const namedTarget = net.isIP(destination.host) === 0 ? destination.host : undefined;
    const route: UpstreamRoute = mesh
      ? { kind: "mesh", dest: mesh, port: destination.port }
      : { kind: "direct", host: destination.host, port: destination.port };
    let head = detection.head;
    if (!mesh) {
      // Names decide egress only for addresses they resolve to: resolve before the first decision.
      head = takeBuffered(socket, head);
      const sni = detection.protocol.kind === "tls" ? detection.protocol.hello.serverName : undefined;
      const host = detection.protocol.kind === "http1" ? firstHost(head) : undefined;
      await deps.authorizer.prepareEgress(destination.host, [sni, host]);
      if (socket.destroyed) return;
    }
    const peerFor = (requestedName: string | undefined): Peer => {
      if (!mesh) return externalPeer(destination.host, namedTarget ?? requestedName);
      // Each request is decided with the directory's current labels for the workload the hop is
      // pinned to; an entry that now names another workload does not change where the bytes go.
      const current = deps.peers.lookup(destination.host, destination.port);
      return meshPeer(
        current?.identity.spiffeId === mesh.identity.spiffeId ? current : mesh,
        destination.host,
      );
    };
    const facts: ConnectionFacts = {
      direction: "egress",
      port: destination.port,
      peer: peerFor(undefined),
      encrypted: mesh?.mtls ?? false,
    };
    const conn: ProxiedConnection = { facts, route, peerFor: (host) => peerFor(hostName(host)) };
    switch (detection.protocol.kind) {
      case "http1":
        deps.http1.accept(socket, conn, takeBuffered(socket, head));
        return;
      case "h2":
        deps.http2.accept(socket, conn, takeBuffered(socket, head));
        return;
      default: {
        const sni = detection.protocol.kind === "tls" ? detection.protocol.hello.serverName : undefined;
        tunnel(deps, socket, conn, takeBuffered(socket, head), conn.peerFor(sni));
      }
    }
  }
}
