import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { Decision } from "../../core/policy/index.ts";

/**
 * Opaque TCP tunnels are decided once, when they open. Each open one is kept here with the way to decide
 * it again; when the policy in force changes (a new policy set, a revocation), every open tunnel is
 * re-decided with it and one no longer allowed is reset, so a change reaches connections already open
 * and not only the next ones.
 */
export class OpenTunnels {
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

  /** Re-decides every open tunnel; resets those now denied. Returns how many were cut. */
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
        "open tunnel no longer allowed: reset",
      );
      end();
    }
    return cut;
  }
}
