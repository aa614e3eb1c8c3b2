import type { Decision } from "../../core/policy/index.ts";

/** The short JSON body of a refused HTTP request: which decision refused it and why. */
export function denialBody(status: 400 | 403 | 502, decision: Pick<Decision, "policy" | "reason">): string {
  const error = status === 403 ? "forbidden" : status === 400 ? "bad request" : "upstream unavailable";
  return JSON.stringify({ error, policy: decision.policy, reason: decision.reason });
}
