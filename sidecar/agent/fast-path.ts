import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { FlowRecord } from "../../core/flow.ts";
import type { Labels } from "../../core/labels.ts";
import { labelsWithProvenance } from "../../core/label-provenance.ts";
import type { DecodedPolicySet } from "../../core/policy/index.ts";
import { bundleToJson } from "../../core/svid/bundle.ts";
import { installCapture } from "../capture/apply.ts";
import type { CaptureConfig } from "../capture/config.ts";
import { loadCaptureConfig } from "../capture/load-config.ts";
import { FAST_PATH_DEFAULTS as DEFAULTS } from "../fastpath/config.ts";
import { MARK_MASK, hex } from "../fastpath/marks.ts";
import {
  chooseInboundPaths,
  chooseOutboundPaths,
  fastPathPorts,
  outboundFastPathDestinations,
} from "../fastpath/ports.ts";
import type { DirectoryPort, PortChoice } from "../fastpath/ports.ts";
import { readKernelQueues } from "../fastpath/kernel-queues.ts";
import { applyRules, fastPathExternalRules } from "../fastpath/rules.ts";
import type { RuleSettings } from "../fastpath/rules.ts";
import type { EnforcerSources } from "../fastpath/sources.ts";
import { FastPathWorkers } from "../fastpath/workers.ts";
import type { WorkloadCredentials } from "../identity/rotation.ts";
import type { PolicySnapshot } from "../inputs/sources.ts";
import { registerFastPathMetrics } from "./fast-path-metrics.ts";

/**
 * The L4 fast path inside the agent: enforcer workers (one per NFQUEUE queue) fed with the same
 * SVID, trust bundle, revocations and policy documents as the L7 path, and the handshake rules for
 * the `--fast-path-ports` that policy lets skip the proxy (no HTTP rules, not STRICT). With the
 * capture configuration (`--capture-config`, the file `sigil init` used) the rules go in through the
 * capture wrapper as ExternalRules, in the same atomic transaction as capture; otherwise in the
 * fast path's own chains. The rules stay when the agent stops, so handshakes fail closed (or open
 * with `--fast-path-fail-open`) until it is back. A requested port that policy sends through the
 * proxy (HTTP rules, or STRICT: the fast path does not encrypt) is logged as a warning with why.
 * Outbound, a SYN gets a token only to the peer-directory destinations that take that port on the
 * fast path (L4_FAST_PATH); every other destination (L7_PROXY mesh ports, addresses outside the
 * mesh) is left to capture and goes through the proxy. The list is re-installed, in the same atomic
 * transaction, whenever the directory changes (`refreshRules()`); installs run one at a time.
 * `ready()` is false once an enforcer worker has exited (the agent's `/ready` answers 503).
 * `exposeMetrics()` puts the enforcers' counters on the sidecar's registry (`/stats/prometheus`).
 */

export interface FastPathInputs {
  readonly credentials: () => WorkloadCredentials;
  readonly policySet: () => DecodedPolicySet;
  readonly snapshot: () => PolicySnapshot;
  /** The peer directory in force, port by port (which destinations take the fast path). */
  readonly directory: () => readonly DirectoryPort[];
}

export interface AgentFastPathOptions {
  readonly ports: readonly number[];
  readonly failOpen: boolean;
  readonly trustDomain: string;
  readonly captureConfigFile?: string;
  readonly onFlow: (flow: FlowRecord) => void;
  readonly log: Logger;
}

function labelsOf(creds: WorkloadCredentials): Labels {
  return labelsWithProvenance(creds.labels);
}

export class FastPathSetupError extends Error {
  override readonly name = "FastPathSetupError";
}

export class AgentFastPath {
  private installed = "";
  private warned = "";
  private overflowWarned = 0;
  private stopped = false;
  /** Installs run one after another, so an older directory can never overwrite a newer one. */
  private installing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly o: AgentFastPathOptions,
    private readonly inputs: FastPathInputs,
    private readonly workers: FastPathWorkers,
  ) {}

  static async start(o: AgentFastPathOptions, inputs: FastPathInputs): Promise<AgentFastPath> {
    // A capture config that cannot work is refused before anything starts.
    if (o.captureConfigFile) await loadCheckedCaptureConfig(o.captureConfigFile);
    const workers = await FastPathWorkers.start(
      {
        queueFirst: DEFAULTS.queueFirst,
        queueCount: DEFAULTS.queueCount,
        exid: DEFAULTS.exid,
        windowMs: DEFAULTS.windowMs,
        maxTokenBytes: DEFAULTS.maxTokenBytes,
      },
      sourcesOf(o.trustDomain, inputs),
      o.onFlow,
      (err) => {
        o.log.error({ err: err.message }, "fast-path enforcer failed");
      },
    );
    if (o.failOpen)
      o.log.warn(
        "fast path is fail-open (--fast-path-fail-open, iptables --queue-bypass): while no enforcer is bound, " +
          "new connections to the fast-path ports pass unchecked (a full queue still drops)",
      );
    const fastPath = new AgentFastPath(o, inputs, workers);
    try {
      await fastPath.refreshRules();
    } catch (err) {
      await workers.stop();
      throw err;
    }
    return fastPath;
  }

  /** Hands the current identity, trust and policy to the workers; re-installs rules if the port choice moved. */
  async refresh(): Promise<void> {
    this.workers.update(sourcesOf(this.o.trustDomain, this.inputs));
    await this.refreshRules();
  }

  /** Re-installs the rules if the port choice or the fast-path destinations moved (e.g. a new peer directory). */
  refreshRules(): Promise<void> {
    const next = this.installing.then(() => this.installRules());
    this.installing = next.catch(() => undefined);
    return next;
  }

  /**
   * False once an enforcer worker has exited (its queue is unbound: the handshakes routed there fail
   * closed, or pass unchecked with fail-open) or the fast path was stopped.
   */
  ready(): boolean {
    return !this.stopped && this.workers.exited() === null;
  }

  stats(): ReturnType<FastPathWorkers["stats"]> {
    return this.workers.stats();
  }

  /** The enforcers' counters on the sidecar's registry (`/stats/prometheus`); see registerFastPathMetrics. */
  exposeMetrics(registry: Registry): void {
    registerFastPathMetrics(registry, {
      stats: () => this.workers.stats(),
      kernelQueues: readKernelQueues,
      failOpen: this.o.failOpen,
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.workers.stop();
  }

  private async installRules(): Promise<void> {
    const set = this.inputs.policySet().policies;
    const labels = labelsOf(this.inputs.credentials());
    const inbound = chooseInboundPaths(set, labels, this.o.ports);
    const outbound = chooseOutboundPaths(set, labels, this.o.ports);
    const outboundPorts = fastPathPorts(outbound);
    const { destinations, overflow } = outboundFastPathDestinations(outboundPorts, this.inputs.directory());
    if (overflow !== this.overflowWarned) {
      this.overflowWarned = overflow;
      if (overflow > 0)
        this.o.log.warn(
          { overflow },
          "fast-path destination list full: the remaining destinations go through the proxy",
        );
    }
    const settings: RuleSettings = {
      inboundPorts: fastPathPorts(inbound),
      outboundPorts,
      outboundDestinations: destinations,
      queueFirst: DEFAULTS.queueFirst,
      queueCount: DEFAULTS.queueCount,
      failOpen: this.o.failOpen,
    };
    this.warnAboutProxiedPorts([...inbound, ...outbound]);
    const key = JSON.stringify(settings);
    if (key === this.installed) return;
    if (this.o.captureConfigFile) {
      const config = await loadCheckedCaptureConfig(this.o.captureConfigFile);
      await installCapture(config, { backend: config.backend }, [fastPathExternalRules(settings)]);
    } else {
      await applyRules(settings);
    }
    this.installed = key;
    this.o.log.info({ inbound, outbound, destinations: destinations.length }, "fast-path rules installed");
  }

  /** Says once per change which requested ports policy keeps on the proxy, and why. */
  private warnAboutProxiedPorts(choices: readonly PortChoice[]): void {
    const proxied = choices.filter((c) => c.path === "proxy");
    const key = JSON.stringify(proxied);
    if (key === this.warned) return;
    this.warned = key;
    for (const c of proxied) {
      this.o.log.warn({ port: c.port, why: c.why }, "fast-path port goes through the proxy instead");
    }
  }
}

/**
 * The capture config `sigil init` applied, which the fast path's rules join. Without the fast
 * path's mark mask, capture would redirect connections the fast path already decided into the
 * proxy, which expects mTLS there: such a config is refused rather than left to break them.
 */
async function loadCheckedCaptureConfig(file: string): Promise<CaptureConfig> {
  const config = await loadCaptureConfig({ configFile: file, env: {}, flags: {}, givenOnCli: () => false });
  if (config.fastPathMarkMask !== MARK_MASK) {
    const is = config.fastPathMarkMask === null ? "unset" : hex(config.fastPathMarkMask);
    throw new FastPathSetupError(
      `${file}: capture.fastPathMarkMask must be ${hex(MARK_MASK)} for the fast path (is ${is})`,
    );
  }
  return config;
}

function sourcesOf(trustDomain: string, inputs: FastPathInputs): EnforcerSources {
  const creds = inputs.credentials();
  const decoded = inputs.policySet();
  const snapshot = inputs.snapshot();
  return {
    svidPem: creds.certChainPem,
    keyPem: creds.privateKeyPem,
    trustDomain,
    bundleJson: bundleToJson(creds.bundle),
    revocations: {
      sequence: snapshot.revocations.list.sequence,
      entries: snapshot.revocations.list.entries,
      certificates: snapshot.revocations.list.certificates ?? [],
    },
    policyDocuments: decoded.documents,
    mode: decoded.mode,
  };
}
