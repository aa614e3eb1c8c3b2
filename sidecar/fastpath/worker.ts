/**
 * One fast-path worker thread: an enforcer bound to its own NFQUEUE queue, so handshakes spread
 * over the cores. Per-thread state is sound because the rules' flow hashing (--queue-balance) is
 * symmetric: a connection's SYN and SYN-ACK, and any replay of them on the same 4-tuple, reach the
 * same queue; a token moved to another 4-tuple fails its proof wherever it lands.
 *
 * Messages in: { type: "stats", id } | { type: "sources", sources }.
 * Messages out: { type: "ready" } | { type: "flow", flow } | { type: "stats", id, stats } | { type: "error", message }.
 */
import { parentPort, workerData } from "node:worker_threads";
import { FastPathEnforcer } from "./enforcer.ts";
import type { EnforcerSettings } from "./enforcer.ts";
import { buildState } from "./sources.ts";
import type { EnforcerSources } from "./sources.ts";

interface WorkerInit {
  readonly settings: EnforcerSettings;
  readonly sources: EnforcerSources;
}

const port = parentPort;
if (!port) throw new Error("sidecar/fastpath/worker.ts runs only as a worker thread");
const init = workerData as WorkerInit;
const enforcer = new FastPathEnforcer(init.settings, buildState(init.sources), (flow) =>
  port.postMessage({ type: "flow", flow }),
);
enforcer.start();
port.on("message", (msg: { type: string; id?: number; sources?: EnforcerSources }) => {
  if (msg.type === "stats") {
    port.postMessage({ type: "stats", id: msg.id, stats: enforcer.stats() });
  } else if (msg.type === "sources" && msg.sources) {
    try {
      const state = buildState(msg.sources);
      enforcer.setIdentity(state.local);
      enforcer.setTrust(state.trust);
      enforcer.setPolicy(state.policy);
    } catch (err) {
      port.postMessage({ type: "error", message: (err as Error).message });
    }
  }
});
port.postMessage({ type: "ready" });
