/**
 * Starts the fast-path enforcer harness (enforcer-main.ts: the agent's worker pool and rules, fed
 * from files) inside a test namespace and reads
 * its JSON-line output: readiness, flow records and on-demand stats.
 */
import type { FlowRecord } from "../../../core/flow.ts";
import type { EnforcerStats } from "../../../sidecar/fastpath/enforcer.ts";
import type { KernelQueueCounters } from "../../../sidecar/fastpath/kernel-queues.ts";
import type { Netns } from "../../support/netns.ts";
import { OutputLines, REPO_ROOT, jsonLine } from "./process-output.ts";
import type { TestPki, IdentityFiles } from "./pki.ts";
import { TRUST_DOMAIN } from "./pki.ts";

export interface EnforcerOptions {
  readonly identity: IdentityFiles;
  readonly policyFile: string;
  readonly inboundPorts?: number[];
  readonly outboundPorts?: number[];
  readonly queueFirst: number;
  readonly queueCount?: number;
  readonly failOpen?: boolean;
  readonly revocationsFile?: string;
  readonly mode?: "enforce" | "observe";
  /** How far a token's timestamp may be from the enforcer's clock (the config's default: 10 s). */
  readonly windowMs?: number;
  /** Handshake packets each queue holds before the kernel drops more (the config's default: 4096). */
  readonly queueLength?: number;
}

export interface StatsLine {
  readonly stats: EnforcerStats;
  readonly kernelQueues: readonly KernelQueueCounters[];
  readonly failOpen: boolean;
}

export class EnforcerProcess {
  private statsSeen = 0;

  private constructor(
    readonly out: OutputLines,
    readonly pid: number,
    /** The enforcer's `ready` line: queues and the per-port fast path / proxy choice. */
    readonly ready: Record<string, unknown>,
  ) {}

  static async start(ns: Netns, pki: TestPki, name: string, o: EnforcerOptions): Promise<EnforcerProcess> {
    const config = await pki.file(
      `${name}-${ns.name}.json`,
      JSON.stringify({
        svidFile: o.identity.svidFile,
        keyFile: o.identity.keyFile,
        trustDomain: TRUST_DOMAIN,
        bundleFile: pki.bundleFile,
        policyFile: o.policyFile,
        mode: o.mode ?? "enforce",
        inboundPorts: o.inboundPorts ?? [],
        outboundPorts: o.outboundPorts ?? [],
        queueFirst: o.queueFirst,
        queueCount: o.queueCount ?? 2,
        failOpen: o.failOpen ?? false,
        ...(o.revocationsFile ? { revocationsFile: o.revocationsFile } : {}),
        ...(o.windowMs === undefined ? {} : { windowMs: o.windowMs }),
        ...(o.queueLength === undefined ? {} : { queueLength: o.queueLength }),
      }),
    );
    const child = ns.spawn([
      process.execPath,
      "--import",
      "tsx",
      `${REPO_ROOT}test/e2e/fastpath-support/enforcer-main.ts`,
      "run",
      config,
    ]);
    const out = new OutputLines(child);
    const ready = await out.waitFor((l) => {
      const j = jsonLine(l);
      return j?.event === "ready" ? (j as { pid: number } & Record<string, unknown>) : undefined;
    }, 60_000);
    return new EnforcerProcess(out, ready.pid, ready);
  }

  flows(): FlowRecord[] {
    return this.out.lines
      .map(jsonLine)
      .filter((j): j is { event: string; flow: FlowRecord } => j?.event === "flow")
      .map((j) => j.flow);
  }

  /** Waits for the first flow record matching `pick` (bounded). */
  waitForFlow(pick: (f: FlowRecord) => boolean, timeoutMs = 10_000): Promise<FlowRecord> {
    return this.out.waitFor((l) => {
      const j = jsonLine(l);
      if (j?.event !== "flow") return undefined;
      const f = (j as { flow: FlowRecord }).flow;
      return pick(f) ? f : undefined;
    }, timeoutMs);
  }

  /** The `index`-th flow record this enforcer reported (0-based), waiting for it if needed. */
  flowAt(index: number, timeoutMs = 10_000): Promise<FlowRecord> {
    let seen = 0;
    return this.out.waitFor((l) => {
      const j = jsonLine(l);
      if (j?.event !== "flow") return undefined;
      return seen++ === index ? (j as { flow: FlowRecord }).flow : undefined;
    }, timeoutMs);
  }

  async stats(): Promise<EnforcerStats> {
    return (await this.statsLine()).stats;
  }

  /** The whole `stats` line: the workers' counters, the kernel's queue counters and the fail-open choice. */
  async statsLine(): Promise<StatsLine> {
    const wanted = ++this.statsSeen;
    this.out.child.stdin?.write("stats\n");
    let seen = 0;
    return this.out.waitFor((l) => {
      const j = jsonLine(l);
      if (j?.event !== "stats") return undefined;
      seen++;
      return seen === wanted ? (j as unknown as StatsLine) : undefined;
    });
  }

  /** SIGKILL, as a crash would: no cleanup runs, the rules stay in the kernel. */
  async kill(): Promise<void> {
    process.kill(this.pid, "SIGKILL");
    await this.out.exit(10_000);
  }
}
