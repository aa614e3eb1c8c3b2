import type { Logger } from "pino";
import type { FlowRecord } from "../../core/flow.ts";
import type { Labels } from "../../core/labels.ts";
import { stringifyPolicyDocuments } from "../../core/policy/index.ts";
import { bundleToJson } from "../../core/svid/bundle.ts";
import { installCapture } from "../capture/apply.ts";
import { loadCaptureConfig } from "../capture/init.ts";
import { fastPathConfigSchema } from "../fastpath/config.ts";
import { chooseInboundPaths, chooseOutboundPaths, fastPathPorts } from "../fastpath/ports.ts";
import { applyRules, fastPathExternalRules } from "../fastpath/rules.ts";
import type { RuleSettings } from "../fastpath/rules.ts";
import type { EnforcerSources } from "../fastpath/sources.ts";
import { FastPathWorkers } from "../fastpath/workers.ts";
import type { WorkloadCredentials } from "../identity/rotation.ts";
import type { PolicySnapshot } from "../sources.ts";
import type { DecodedPolicySet } from "./policy-set.ts";

/**
 * The L4 fast path inside the agent: enforcer workers (one per NFQUEUE queue) fed with the same
 * SVID, trust bundle, revocations and policy documents as the L7 path, and the handshake rules for
 * the `--fast-path-ports` that policy lets skip the proxy (no HTTP rules, not STRICT). With the
 * capture configuration (`--capture-config`, the file `sigil init` used) the rules go in through the
 * capture wrapper as ExternalRules, in the same atomic transaction as capture; otherwise in the
 * fast path's own chains. The rules stay when the agent stops, so handshakes fail closed (or open
 * with `--fast-path-fail-open`) until it is back.
 */

export interface FastPathInputs {
  readonly credentials: () => WorkloadCredentials;
  readonly policySet: () => DecodedPolicySet;
  readonly snapshot: () => PolicySnapshot;
}

export interface AgentFastPathOptions {
  readonly ports: readonly number[];
  readonly failOpen: boolean;
  readonly trustDomain: string;
  readonly captureConfigFile?: string;
  readonly onFlow: (flow: FlowRecord) => void;
  readonly log: Logger;
}

const DEFAULTS = fastPathConfigSchema.parse({
  svidFile: "-",
  keyFile: "-",
  trustDomain: "-",
  bundleFile: "-",
  policyFile: "-",
});

function labelsOf(creds: WorkloadCredentials): Labels {
  return Object.fromEntries(creds.labels.map((l) => [l.key, l.value]));
}

export class AgentFastPath {
  private installed = "";

  private constructor(
    private readonly o: AgentFastPathOptions,
    private readonly inputs: FastPathInputs,
    private readonly workers: FastPathWorkers,
  ) {}

  static async start(o: AgentFastPathOptions, inputs: FastPathInputs): Promise<AgentFastPath> {
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
      (err) => o.log.error({ err: err.message }, "fast-path enforcer failed"),
    );
    const fastPath = new AgentFastPath(o, inputs, workers);
    try {
      await fastPath.installRules();
    } catch (err) {
      await workers.stop();
      throw err;
    }
    return fastPath;
  }

  /** Hands the current identity, trust and policy to the workers; re-installs rules if the port choice moved. */
  async refresh(): Promise<void> {
    this.workers.update(sourcesOf(this.o.trustDomain, this.inputs));
    await this.installRules();
  }

  stats(): ReturnType<FastPathWorkers["stats"]> {
    return this.workers.stats();
  }

  async stop(): Promise<void> {
    await this.workers.stop();
  }

  private async installRules(): Promise<void> {
    const set = this.inputs.policySet().policies;
    const labels = labelsOf(this.inputs.credentials());
    const inbound = chooseInboundPaths(set, labels, this.o.ports);
    const outbound = chooseOutboundPaths(set, labels, this.o.ports);
    const settings: RuleSettings = {
      inboundPorts: fastPathPorts(inbound),
      outboundPorts: fastPathPorts(outbound),
      queueFirst: DEFAULTS.queueFirst,
      queueCount: DEFAULTS.queueCount,
      failOpen: this.o.failOpen,
    };
    const key = JSON.stringify(settings);
    if (key === this.installed) return;
    if (this.o.captureConfigFile) {
      const config = await loadCaptureConfig({
        configFile: this.o.captureConfigFile,
        env: {},
        flags: {},
        givenOnCli: () => false,
      });
      await installCapture(config, { backend: config.backend }, [fastPathExternalRules(settings)]);
    } else {
      await applyRules(settings);
    }
    this.installed = key;
    this.o.log.info({ inbound, outbound }, "fast-path rules installed");
  }
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
    },
    policyYaml: stringifyPolicyDocuments(decoded.documents),
    policyName: `PolicySet ${decoded.name}`,
    mode: decoded.mode,
  };
}
