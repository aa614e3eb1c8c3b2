import type { Peer } from "../../core/identity.ts";
import type { ConnectionFacts } from "../authz/authorize.ts";
import type { UserAccessGate } from "../user-access/gate.ts";
import type { UpstreamRoute } from "./upstreams.ts";

/**
 * A downstream connection as the protocol handlers (HTTP/1.1, HTTP/2, opaque TCP) receive it from the
 * listener that accepted it: what authorization knows of it and where its bytes go next.
 */
export interface ProxiedConnection {
  readonly facts: ConnectionFacts;
  /**
   * The peer a request is decided against (egress: the Host header names a non-mesh destination).
   * Asked for every request, so that what the peer directory says now decides the next request on a
   * connection opened before it changed.
   */
  peerFor(host: string | undefined): Peer;
  readonly route: UpstreamRoute;
  /**
   * The `x-forwarded-client-cert` value every request on this connection carries to the upstream
   * (inbound, from a caller verified by mTLS). Absent: the client's XFCC fields are only removed.
   */
  readonly forwardedClientCert?: string;
  /** A user-access port: every request first passes the gate (session, bearer token, sign-in). */
  readonly userAccess?: UserAccessGate;
}
