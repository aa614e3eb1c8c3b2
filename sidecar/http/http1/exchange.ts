import type { Logger } from "pino";
import type { Peer } from "../../../core/identity.ts";
import type { UserIdentity } from "../../../core/user.ts";
import type { Decision } from "../../../core/policy/index.ts";
import type { Authorizer, ConnectionFacts } from "../../authz/authorize.ts";
import { reportedPath } from "../../authz/authorize.ts";
import type { Upstreams } from "../../upstream/upstreams.ts";
import type { Http1Pool, UpstreamConnection } from "../../upstream/http1-pool.ts";
import type { BodiesOnGetHead } from "../bodiless-methods.ts";
import type { BodyFramer } from "./body.ts";
import type { RequestHead } from "./head.ts";
import type { ResponseRelay } from "./response-relay.ts";

export interface Http1Options {
  readonly maxHeaderBytes: number;
  readonly bodiesOnGetHead: BodiesOnGetHead;
  readonly headersTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
}

/** What the proxy holds of each client connection: enough to time it out and drain it. */
export interface ClientConnection {
  readonly idle: boolean;
  expire(now: number): void;
  close(): void;
}

/** What every connection of one proxy shares. */
export interface Http1Context {
  readonly authorizer: Authorizer;
  readonly upstreams: Upstreams;
  readonly options: Http1Options;
  readonly log: Logger;
  readonly draining: boolean;
  forget(conn: ClientConnection): void;
}

/** One allowed request on its way upstream, and its response on its way back. */
export interface Exchange {
  readonly req: RequestHead;
  /**
   * The request asks to switch to a protocol that is not HTTP again: the connection becomes a
   * tunnel only after a 101. An h2c upgrade never does (`RequestHead.httpUpgrade`).
   */
  readonly upgrading: boolean;
  /** The target sent upstream: the normalized path when it normalizes, else the raw one. */
  readonly target: string;
  /** The allow it was decided with; a malformed body later turns it into a refusal. */
  decision: Decision;
  readonly peer: Peer;
  /** The person the request was verified for, with the fields that tell the application. */
  readonly user: UserIdentity | null;
  readonly userFields: Record<string, string> | undefined;
  readonly startedAt: number;
  readonly body: BodyFramer;
  /** The pool it borrows from: the route's pool again if it is sent once more (`resend.ts`). */
  pool: Http1Pool;
  /** The pooled upstream connection, once lent. */
  up: UpstreamConnection | null;
  readonly response: ResponseRelay;
}

/** What one HTTP exchange (answered, refused, relayed or upgraded) is recorded as. */
export interface HttpFlow {
  readonly decision: Decision;
  readonly method: string;
  /** The raw request target; empty when no request line was read. */
  readonly target: string;
  readonly status: number;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly startedAt: number;
  /** The peer the request was decided against; the connection's own peer when absent. */
  readonly peer?: Peer;
  readonly user?: UserIdentity | null;
}

/** Records an exchange's flow, its path as policy reported it. */
export function recordHttpFlow(authorizer: Authorizer, facts: ConnectionFacts, flow: HttpFlow): void {
  authorizer.record(
    facts,
    flow.decision,
    {
      protocol: "http",
      http: {
        method: flow.method,
        path: flow.target === "" ? "" : reportedPath(flow.decision, flow.target),
        status: flow.status,
      },
      bytesSent: flow.bytesSent,
      bytesReceived: flow.bytesReceived,
      startedAt: flow.startedAt,
    },
    flow.peer,
    flow.user,
  );
}
