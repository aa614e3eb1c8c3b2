import cluster from "node:cluster";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import type { FlowRecord } from "../../core/flow.ts";
import { originalDestinationOf } from "../../native/index.ts";
import { guardOriginalDestination, localAddressTest } from "../proxy/loop-guard.ts";
import { parseSidecarConfig } from "../config.ts";
import { startSidecar } from "../sidecar.ts";
import type { DataPath } from "../sidecar.ts";
import type { FlowSink } from "../inputs/sources.ts";
import { CredentialHolder, PeerDirectoryHolder, PolicyHolder } from "../inputs/state.ts";
import type { FromWorker, ListenerAddress, ToWorker, WorkerInit } from "./relay-protocol.ts";
import { credentialsFromWire, parseToWorker, policyFromWire } from "./relay-protocol.ts";
import { createLogger } from "../../core/logger.ts";

/**
 * One data-path worker (a cluster worker of `sigil sidecar --workers N`): the sidecar's listeners,
 * mTLS, proxies and authorization, fed by its primary over IPC. It listens only once the primary's
 * whole state has arrived (credentials; policy as the primary holds it, which is deny-all until the
 * control plane's first policy set; peers), so it never serves without state. Later messages
 * replace that state in the holders the data path reads. Flow records go back to the primary in one
 * message per event-loop turn.
 *
 * The worker stops only through its primary: `drain` from it, or the IPC channel closing (the
 * primary is gone), which stops the worker at once — a data path must not outlive the process
 * that keeps its policy current. Terminal and service-manager signals are left to the primary,
 * which drains every worker.
 */

function send(message: FromWorker, then?: () => void): void {
  if (process.connected) process.send?.(message, undefined, undefined, () => then?.());
  else then?.();
}

/** Leaves once the message is on the channel. */
function sendAndExit(message: FromWorker, code: number): void {
  send(message, () => process.exit(code));
}

/** Collects the records of one event-loop turn and sends them as one message. */
class FlowBatcher implements FlowSink {
  private batch: FlowRecord[] = [];
  report(record: FlowRecord): void {
    if (this.batch.length === 0) setImmediate(() => this.flush());
    this.batch.push(record);
  }
  flush(): void {
    if (this.batch.length === 0) return;
    const records = this.batch;
    this.batch = [];
    send({ t: "flows", records });
  }
}

const listener = (a: AddressInfo): ListenerAddress => ({
  address: a.address,
  family: a.family,
  port: a.port,
});

interface Holders {
  readonly credentials: CredentialHolder;
  readonly policy: PolicyHolder;
  readonly peers: PeerDirectoryHolder;
}

function holdersFrom(init: WorkerInit): Holders {
  const credentials = new CredentialHolder(credentialsFromWire(init.credentials));
  const policy = new PolicyHolder({
    trustDomain: init.credentials.trustDomain,
    ...policyFromWire(init.policy),
  });
  const peers = new PeerDirectoryHolder();
  peers.replace(init.peers);
  return { credentials, policy, peers };
}

async function startDataPath(
  init: WorkerInit,
  holders: Holders,
  flows: FlowSink,
  log: Logger,
): Promise<DataPath> {
  const ownPorts = new Set<number>(init.loopGuard?.extraPorts ?? []);
  const originalDestination = init.loopGuard
    ? guardOriginalDestination(
        originalDestinationOf,
        () => ownPorts,
        localAddressTest(init.loopGuard.advertised),
      )
    : originalDestinationOf;
  const dataPath = await startSidecar({
    config: parseSidecarConfig(init.config),
    ...holders,
    flows,
    originalDestination,
    logger: log,
    serveAdmin: false,
  });
  for (const a of [dataPath.inbound, dataPath.outbound, ...dataPath.outboundTargets])
    if (a) ownPorts.add(a.port);
  return dataPath;
}

/** Runs this process as a data-path worker until its primary tells it to drain or goes away. */
export function runSidecarWorker(): void {
  if (!cluster.isWorker) throw new Error("runSidecarWorker() runs only in a cluster worker");
  const worker = cluster.worker?.id ?? 0;
  let log: Logger = createLogger("sigil-sidecar", { base: { worker } });
  const flows = new FlowBatcher();
  let holders: Holders | null = null;
  let dataPath: DataPath | null = null;
  let stopping = false;

  for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, () => undefined);
  process.on("disconnect", () => {
    if (stopping) return;
    log.error("primary process gone: stopping the data path");
    process.exit(1);
  });

  const held = (): Holders => {
    if (!holders) throw new Error("state update before init");
    return holders;
  };

  const apply = (message: ToWorker): void => {
    switch (message.t) {
      case "init": {
        if (holders) throw new Error("a second init");
        const init = message.init;
        log = createLogger("sigil-sidecar", { level: init.logLevel, base: { worker } });
        holders = holdersFrom(init);
        startDataPath(init, holders, flows, log).then(
          (started) => {
            dataPath = started;
            send({
              t: "listening",
              inbound: listener(started.inbound),
              outbound: started.outbound ? listener(started.outbound) : null,
              outboundTargets: started.outboundTargets.map(listener),
            });
          },
          (err: Error) => sendAndExit({ t: "failed", error: err.message }, 1),
        );
        return;
      }
      case "credentials":
        held().credentials.set(credentialsFromWire(message.credentials));
        return;
      case "policy":
        held().policy.update(policyFromWire(message.policy));
        return;
      case "peers":
        held().peers.replace(message.peers);
        return;
      case "stats": {
        const { id } = message;
        if (!dataPath) {
          send({ t: "stats", id, metrics: [] });
          return;
        }
        dataPath.metrics.registry.getMetricsAsJSON().then(
          (metrics) => send({ t: "stats", id, metrics }),
          (err: Error) => log.warn({ err: err.message }, "metrics collection failed"),
        );
        return;
      }
      case "drain": {
        if (stopping) return;
        stopping = true;
        if (!dataPath) {
          sendAndExit({ t: "drained", clean: true }, 0);
          return;
        }
        dataPath.drain().then(
          ({ clean }) => {
            flows.flush();
            sendAndExit({ t: "drained", clean }, 0);
          },
          (err: Error) => {
            log.error({ err: err.message }, "drain failed");
            process.exit(1);
          },
        );
        return;
      }
    }
  };

  process.on("message", (raw: unknown) => {
    try {
      apply(parseToWorker(raw));
    } catch (err) {
      // Serving on with state the primary no longer holds would mean stale policy or credentials:
      // the worker leaves instead, and the primary starts a fresh one with its whole current state.
      log.error({ err: (err as Error).message }, "primary message refused: worker stopping");
      process.exit(1);
    }
  });
  send({ t: "hello" });
}
