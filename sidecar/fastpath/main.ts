/**
 * Stand-alone fast-path enforcer process, run inside the workload's network namespace (the sidecar
 * embeds FastPathEnforcer the same way). Prints JSON lines on stdout: `ready`, one `flow` per
 * decision, and `stats` whenever a `stats` line arrives on stdin. Exits on SIGTERM/SIGINT leaving
 * the rules in place, so handshakes fail closed while it is gone.
 *
 *   tsx sidecar/fastpath/main.ts run <config.json>
 *   tsx sidecar/fastpath/main.ts remove-rules
 */
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { Command } from "commander";
import {
  checkPolicySet,
  compilePolicySet,
  formatPolicyError,
  parsePolicyDocuments,
} from "../../core/policy/index.ts";
import type { CompiledPolicySet } from "../../core/policy/index.ts";
import { parseBundle } from "../../core/svid/bundle.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import type { RevocationEntry } from "../../core/svid/revocation.ts";
import { loadFastPathConfig } from "./config.ts";
import type { FastPathConfig } from "./config.ts";
import { FastPathEnforcer } from "./enforcer.ts";
import { loadLocalIdentity } from "./local-identity.ts";
import { chooseInboundPaths, chooseOutboundPaths, fastPathPorts } from "./ports.ts";
import { applyRules, removeRules } from "./rules.ts";
import type { TrustState } from "./verifier.ts";

function emit(event: string, body: object): void {
  process.stdout.write(`${JSON.stringify({ event, ...body })}\n`);
}

async function loadPolicy(file: string): Promise<CompiledPolicySet> {
  const parsed = parsePolicyDocuments(await readFile(file, "utf8"), file);
  if (!parsed.ok) throw new Error(parsed.errors.map(formatPolicyError).join("\n"));
  const problems = checkPolicySet(parsed.documents);
  if (problems.length > 0) throw new Error(problems.map(formatPolicyError).join("\n"));
  return compilePolicySet(parsed.documents.map((d) => d.document));
}

async function loadTrust(c: FastPathConfig): Promise<TrustState> {
  const bundle = parseBundle(c.trustDomain, await readFile(c.bundleFile, "utf8"));
  let entries: RevocationEntry[] = [];
  let sequence = 0;
  if (c.revocationsFile) {
    const doc = JSON.parse(await readFile(c.revocationsFile, "utf8")) as {
      sequence: number;
      entries: RevocationEntry[];
    };
    entries = doc.entries;
    sequence = doc.sequence;
  }
  return { bundle, revocations: new RevocationIndex({ trustDomain: c.trustDomain, sequence, entries }) };
}

async function runEnforcer(configFile: string): Promise<void> {
  const c = await loadFastPathConfig(configFile);
  const local = loadLocalIdentity(await readFile(c.svidFile, "utf8"), await readFile(c.keyFile, "utf8"));
  const policy = await loadPolicy(c.policyFile);
  // Candidate ports from the config; policy decides which of them may skip the proxy.
  const inbound = chooseInboundPaths(policy, local.identity.labels, c.inboundPorts);
  const outbound = chooseOutboundPaths(policy, local.identity.labels, c.outboundPorts);
  const enforcer = new FastPathEnforcer(
    {
      queueFirst: c.queueFirst,
      queueCount: c.queueCount,
      exid: c.exid,
      windowMs: c.windowMs,
      maxTokenBytes: c.maxTokenBytes,
    },
    { local, trust: await loadTrust(c), policy: { set: policy, mode: c.mode } },
    (flow) => emit("flow", { flow }),
  );
  enforcer.start();
  if (c.installRules) {
    await applyRules({
      inboundPorts: fastPathPorts(inbound),
      outboundPorts: fastPathPorts(outbound),
      queueFirst: c.queueFirst,
      queueCount: c.queueCount,
      failOpen: c.failOpen,
    });
  }
  emit("ready", {
    pid: process.pid,
    spiffeId: local.identity.spiffeId,
    queues: enforcer.stats().queues.map((q) => q.queue),
    ports: { inbound, outbound },
  });
  createInterface({ input: process.stdin }).on("line", (line) => {
    if (line.trim() === "stats") emit("stats", { stats: enforcer.stats() });
  });
  const shutdown = (): void => {
    enforcer.stop();
    process.exit(0);
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
