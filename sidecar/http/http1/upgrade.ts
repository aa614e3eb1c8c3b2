import type { Socket } from "node:net";
import type { ConnectionFacts } from "../../authz/authorize.ts";
import type { Authorizer } from "../../authz/authorize.ts";
import { splice } from "../../tunnel/splice.ts";
import type { Exchange } from "./exchange.ts";
import { recordHttpFlow } from "./exchange.ts";

/**
 * Joins the client and the upstream byte for byte after the upstream's 101: its head (`head`, and
 * whatever followed it, `rest`) goes to the client first. The exchange's flow is recorded once both
 * sides close, with every byte the tunnel carried.
 */
export function spliceUpgrade(
  client: Socket,
  upstream: Socket,
  ex: Exchange,
  head: Buffer,
  rest: Buffer | null,
  authorizer: Authorizer,
  facts: ConnectionFacts,
): void {
  const received = ex.body.dataBytes;
  splice(
    upstream,
    client,
    (t) =>
      recordHttpFlow(authorizer, facts, {
        decision: ex.decision,
        method: ex.req.method,
        target: ex.req.target,
        status: 101,
        bytesSent: t.aToB - head.length,
        bytesReceived: received + t.bToA,
        startedAt: ex.startedAt,
        peer: ex.peer,
        user: ex.user,
      }),
    rest === null ? head : Buffer.concat([head, rest]),
  );
}
