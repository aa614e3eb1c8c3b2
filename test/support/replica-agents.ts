/**
 * Real `sigil sidecar` agents (in this process, explicit mode on loopback) attached to a set of
 * control-plane replicas, and HTTP traffic carried through a caller's outbound listener while the
 * test breaks things: every answer is recorded with the time it came, so a suite can say how many
 * requests crossed a failover and that none got a verdict other than the one expected.
 */
import { request as httpRequest } from "node:http";
import pino from "pino";
import { startAgent, type Agent } from "../../sidecar/agent/agent.ts";
import { parseAgentOptions, type AgentOptionsInput } from "../../sidecar/agent/options.ts";

const quiet = pino({ level: process.env.AGENT_TEST_LOG ?? "silent" });

/** An agent attested through `joinToken`, its xDS stream opened first to replica `firstReplica`. */
export function startReplicaAgent(options: {
  controlPlanes: readonly string[];
  firstReplica: number;
  caFile: string;
  joinToken: string;
  name: string;
  extra: Partial<AgentOptionsInput>;
}): Promise<Agent> {
  return startAgent(
    parseAgentOptions({
      controlPlane: options.controlPlanes.join(","),
      controlPlaneCa: options.caFile,
      joinToken: options.joinToken,
      workloadName: options.name,
      mode: "explicit",
      inboundHost: "127.0.0.1",
      inboundPort: 0,
      adminPort: 0,
      drainTimeoutMs: 1_000,
      logLevel: "silent",
      ...options.extra,
    }),
    { logger: quiet, startTimeoutMs: 15_000, firstControlPlane: options.firstReplica },
  );
}

/** One HTTP request on a new connection: its status, or the error that ended it. */
export function send(port: number, method: string, path: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: "127.0.0.1", port, path, method, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
      res.on("error", (err) => resolve(err.message));
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on("error", (err) => resolve(err.message));
    req.end();
  });
}

export interface Answer {
  readonly method: string;
  readonly path: string;
  readonly expected: number;
  /** The status, or why the request failed. */
  readonly got: number | string;
  /** Date.now() when the answer (or the failure) came. */
  readonly at: number;
}

export interface Traffic {
  readonly answers: readonly Answer[];
  /** Answers that were not the expected status (a wrong verdict, or no verdict at all). */
  wrong(): Answer[];
  /** Lets the request in flight finish and sends no more. */
  stop(): Promise<void>;
}

/** Sends `requests` one after the other, round after round, until stopped. */
export function carryTraffic(
  port: number,
  requests: readonly { method: string; path: string; expected: number }[],
): Traffic {
  const answers: Answer[] = [];
  let running = true;
  const loop = (async () => {
    while (running)
      for (const r of requests) {
        const got = await send(port, r.method, r.path);
        answers.push({ ...r, got, at: Date.now() });
      }
  })();
  return {
    answers,
    wrong: () => answers.filter((a) => a.got !== a.expected),
    async stop() {
      running = false;
      await loop;
    },
  };
}
