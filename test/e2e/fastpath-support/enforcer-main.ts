/**
 * The fast-path enforcer without the agent, for the fast-path suites and benchmarks that test the
 * handshake itself: the agent's worker pool (sidecar/fastpath/workers.ts), port choice and rules,
 * fed from files in a test namespace instead of from the control plane. Policy YAML is parsed here,
 * as the control plane would, and the workers get the documents, as from the agent. Prints JSON
 * lines on stdout: `ready`, one `flow` per decision, and `stats` whenever a `stats` line arrives on
 * stdin. Exits on SIGTERM/SIGINT leaving the rules in place, so handshakes fail closed while it is
 * gone; a worker error ends the process too (its queue would otherwise stay unanswered).
 *
 *   tsx test/e2e/fastpath-support/enforcer-main.ts run <config.json>
 *   tsx test/e2e/fastpath-support/enforcer-main.ts remove-rules
 */
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { Command } from "commander";
import { z } from "zod";
import type { RevocationEntry } from "../../../core/svid/revocation.ts";
import { chooseInboundPaths, chooseOutboundPaths, fastPathPorts } from "../../../sidecar/fastpath/ports.ts";
import { applyRules, removeRules } from "../../../sidecar/fastpath/rules.ts";
import { buildState } from "../../../sidecar/fastpath/sources.ts";
import type { EnforcerSources } from "../../../sidecar/fastpath/sources.ts";
import { FastPathWorkers } from "../../../sidecar/fastpath/workers.ts";
import { readKernelQueues } from "../../../sidecar/fastpath/kernel-queues.ts";
import { loadHarnessConfig, policyDocumentsOf } from "./enforcer-config.ts";
import type { HarnessConfig } from "./enforcer-config.ts";

function emit(event: string, body: object): void {
  process.stdout.write(`${JSON.stringify({ event, ...body })}\n`);
}

// Strict, so a misspelled key is an error rather than an entry that silently revokes nothing.
const RevocationsFile = z
  .object({
    sequence: z.number().int().nonnegative(),
    entries: z.array(
      z
        .object({
          spiffeId: z.string().startsWith("spiffe://"),
          revokedAtMs: z.number().int().nonnegative(),
          expiresAtMs: z.number().int().nonnegative(),
          reason: z.string(),
        })
        .strict(),
    ),
  })
  .strict();

async function readRevocations(file: string): Promise<{ sequence: number; entries: RevocationEntry[] }> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw new Error(`${file}: not readable JSON: ${(err as Error).message}`);
  }
  const parsed = RevocationsFile.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${file}: ${issue?.path.join(".") || "(root)"}: ${issue?.message ?? "invalid"}`);
  }
  return parsed.data;
}

async function readSources(c: HarnessConfig): Promise<EnforcerSources> {
  const revocations = c.revocationsFile
    ? await readRevocations(c.revocationsFile)
    : { sequence: 0, entries: [] };
  return {
    svidPem: await readFile(c.svidFile, "utf8"),
    keyPem: await readFile(c.keyFile, "utf8"),
    trustDomain: c.trustDomain,
    bundleJson: await readFile(c.bundleFile, "utf8"),
    revocations,
    policyDocuments: policyDocumentsOf(await readFile(c.policyFile, "utf8"), c.policyFile),
    mode: c.mode,
  };
}

async function runEnforcer(configFile: string): Promise<void> {
  const c = await loadHarnessConfig(configFile);
  const sources = await readSources(c);
  // Built here too so bad input fails before any thread starts, and for the port choice.
  const state = buildState(sources);
  // Candidate ports from the config; policy decides which of them may skip the proxy.
  const labels = state.local.identity.labels;
  const inbound = chooseInboundPaths(state.policy.set, labels, c.inboundPorts);
  const outbound = chooseOutboundPaths(state.policy.set, labels, c.outboundPorts);
  const fail = (err: Error): void => {
    process.stderr.write(`sigil-fastpath: ${err.message}\n`);
    process.exit(1);
  };
  const workers = await FastPathWorkers.start(
    {
      queueFirst: c.queueFirst,
      queueCount: c.queueCount,
      exid: c.exid,
      windowMs: c.windowMs,
      maxTokenBytes: c.maxTokenBytes,
      queueLength: c.queueLength,
    },
    sources,
    (flow) => emit("flow", { flow }),
    fail,
  );
  if (c.installRules) {
    await applyRules({
      inboundPorts: fastPathPorts(inbound),
      outboundPorts: fastPathPorts(outbound),
      queueFirst: c.queueFirst,
      queueCount: c.queueCount,
      failOpen: c.failOpen,
    });
  }
  if (c.failOpen) {
    process.stderr.write(
      "sigil-fastpath: WARNING: fail-open (--queue-bypass): while no enforcer is bound, new connections " +
        "to the fast-path ports pass unchecked; a full queue still drops\n",
    );
  }
  const queues = (await workers.stats()).queues.map((q) => q.queue);
  emit("ready", {
    pid: process.pid,
    failOpen: c.failOpen,
    spiffeId: state.local.identity.spiffeId,
    queues,
    ports: { inbound, outbound },
  });
  createInterface({ input: process.stdin }).on("line", (line) => {
    if (line.trim() !== "stats") return;
    void Promise.all([workers.stats(), readKernelQueues(queues)]).then(([stats, kernel]) =>
      emit("stats", { stats, kernelQueues: kernel, failOpen: c.failOpen }),
    );
  });
  const shutdown = (): void => {
    void workers.stop().finally(() => process.exit(0));
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
}

const program = new Command("sigil-fastpath").description("Sigil L4 fast-path enforcer");
program
  .command("run")
  .argument("<config>", "JSON configuration file")
  .action(async (config: string) => runEnforcer(config));
program.command("remove-rules").action(async () => removeRules());
program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`sigil-fastpath: ${(err as Error).message}\n`);
  process.exit(1);
});
