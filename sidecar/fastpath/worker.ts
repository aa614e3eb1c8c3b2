/**
 * One fast-path worker thread: an enforcer bound to its own NFQUEUE queue, so handshakes spread
 * over the cores. Per-thread state (pending nonces, replay cache, pair keys) is sound by design: the
 * rules pick a handshake packet's queue from its connection's client port (rules.ts), so a
 * connection's SYN and SYN-ACK always meet the same worker, and so does any replay of a token,
 * which is valid only on the 4-tuple it was made for; a token moved to another 4-tuple fails its
 * proof wherever it lands.
 *
 * Messages in: { type: "stats", id } | { type: "sources", sources } | { type: "server", server }.
 * Messages out: { type: "ready" } | { type: "flows", flows } | { type: "server", server } |
 *   { type: "stats", id, stats } | { type: "error", message }.
 * "server": a server identity one worker verified, passed on to the others (warm handshakes on
 * every queue).
 * Flow records go out in batches, one message per turn of the event loop: under a burst of
 * handshakes one structured clone carries many records.
 */
import { parentPort, workerData } from "node:worker_threads";
import type { FlowRecord } from "../../core/flow.ts";
import { FastPathEnforcer } from "./enforcer.ts";
import type { EnforcerSettings, LearnedServer } from "./enforcer.ts";
import { buildState, changedParts } from "./sources.ts";
import type { EnforcerSources } from "./sources.ts";

interface WorkerInit {
  readonly settings: EnforcerSettings;
  readonly sources: EnforcerSources;
}

const port = parentPort;
if (!port) throw new Error("sidecar/fastpath/worker.ts runs only as a worker thread");
const init = workerData as WorkerInit;
let batch: FlowRecord[] = [];
const sendBatch = (): void => {
  port.postMessage({ type: "flows", flows: batch });
  batch = [];
};
let current = init.sources;
const enforcer = new FastPathEnforcer(init.settings, buildState(current), (flow) => {
  if (batch.length === 0) setImmediate(sendBatch);
  batch.push(flow);
});
enforcer.onServerLearned = (server) => port.postMessage({ type: "server", server });
enforcer.start();
port.on(
  "message",
  (msg: { type: string; id?: number; sources?: EnforcerSources; server?: LearnedServer }) => {
    if (msg.type === "server" && msg.server) {
      enforcer.learnServer({ ...msg.server, publicKeyDer: Buffer.from(msg.server.publicKeyDer) });
    } else if (msg.type === "stats") {
      port.postMessage({ type: "stats", id: msg.id, stats: enforcer.stats() });
    } else if (msg.type === "sources" && msg.sources) {
      try {
        const state = buildState(msg.sources);
        // Only what changed: each setter voids what the warm table was taught under the old value.
        const changed = changedParts(current, msg.sources);
        if (changed.identity) enforcer.setIdentity(state.local);
        if (changed.trust) enforcer.setTrust(state.trust);
        if (changed.policy) enforcer.setPolicy(state.policy);
        current = msg.sources;
      } catch (err) {
        port.postMessage({ type: "error", message: (err as Error).message });
      }
    }
  },
);
port.postMessage({ type: "ready" });
