import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { Decision } from "../../core/policy/index.ts";

/**
 * Connections decided when they open: opaque TCP tunnels (decided once for good) and mesh HTTP
 * connections (whose requests are decided one by one, but which a peer no longer allowed anything
 * must not keep). Each open one is kept here with the way to decide it again; when the policy in
 * force changes (a new policy set, a revocation, a peer's labels in the directory), every open
 * connection is re-decided with it and one no longer allowed is cut, so a change reaches
 * connections already open and not only the next ones.
 */
export class OpenConnections {
  private readonly open = new Map<Socket, { decide: () => Decision; cut: () => void }>();

  constructor(private readonly log: Logger) {}

  /** Keeps `socket` until it closes; `decide` judges it again under the policy then in force, `cut` ends it. */
  add(socket: Socket, decide: () => Decision, cut: () => void): void {
    if (socket.destroyed) return;
    this.open.set(socket, { decide, cut });
    socket.once("close", () => this.open.delete(socket));
  }

  get size(): number {
    return this.open.size;
  }

  /** Re-decides every open connection; cuts those now denied. Returns how many were cut. */
  redecide(): number {
    let cut = 0;
    for (const [socket, { decide, cut: end }] of [...this.open]) {
      let decision: Decision;
      try {
        decision = decide();
      } catch (err) {
        decision = {
          verdict: "deny",
          wouldDeny: true,
          policy: null,
          reason: `error: ${(err as Error).message}`,
          logged: [],
        };
      }
      if (decision.verdict !== "deny") continue;
      this.open.delete(socket);
      cut++;
      this.log.info(
        { remote: socket.remoteAddress, policy: decision.policy, reason: decision.reason },
        "open connection no longer allowed: cut",
      );
      end();
    }
    return cut;
  }
}
