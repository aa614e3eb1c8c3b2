/**
 * CPU cost of the enforcers' part of one handshake, measured in-process and independent of how busy
 * the machine is: a client and a server FastPathEnforcer (real identities from a real CA, real
 * policy, the native packet code) decide a real SYN and SYN-ACK handed over directly instead of by
 * NFQUEUE. Reports CPU µs per handshake (both sides together) for cold handshakes (first contact:
 * signatures, chain verification) and warm ones (MAC under the pair key, cached identity).
 *
 *   npx tsx bench/fastpath/handshake-cpu.ts [--count 2000] [--idle-ms 0]
 */
import { Command } from "commander";
import { compilePolicySet, parsePolicyDocuments } from "../../core/policy/index.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import { FastPathEnforcer } from "../../sidecar/fastpath/enforcer.ts";
import { loadLocalIdentity } from "../../sidecar/fastpath/local-identity.ts";
import { parseBundle } from "../../core/svid/bundle.ts";
import { TCP_FLAGS, parseTcp } from "../../native/index.ts";
import type { PacketQueue, QueuedPacket, VerdictCode } from "../../native/index.ts";
import { webToDbPolicy } from "../../test/e2e/fastpath-support/lab.ts";
import { segment } from "../../test/e2e/fastpath-support/segments.ts";
import { TestPki, TRUST_DOMAIN } from "../../test/e2e/fastpath-support/pki.ts";
import { readFile } from "node:fs/promises";

const opts = new Command()
  .option("--count <n>", "handshakes per measurement", "2000")
  .option(
    "--idle-ms <n>",
    "idle time between warm handshakes, as between real ones: other work may evict the caches",
    "0",
  )
  .parse()
  .opts<{ count: string; idleMs: string }>();
const count = Number(opts.count);
const idleMs = Number(opts.idleMs);

/** Stands in for NFQUEUE: keeps the verdict the enforcer gave so the next hop can be fed its packet. */
class DirectQueue {
  last: { verdict: VerdictCode; packet: Buffer | undefined } | null = null;
  verdict(_id: number, verdict: VerdictCode, _mark?: number, packet?: Buffer): void {
    this.last = { verdict, packet };
  }
}

const pki = await TestPki.create();
try {
  const policyParsed = parsePolicyDocuments(webToDbPolicy([5432]), "bench.yaml");
  if (!policyParsed.ok) throw new Error("policy");
  const set = compilePolicySet(policyParsed.documents.map((d) => d.document));
  const trust = {
    bundle: parseBundle(TRUST_DOMAIN, await readFile(pki.bundleFile, "utf8")),
    revocations: RevocationIndex.empty(TRUST_DOMAIN),
  };
  const load = async (name: string, labels: Record<string, string>) => {
    const files = await pki.identity(name, labels);
    return loadLocalIdentity(await readFile(files.svidFile, "utf8"), await readFile(files.keyFile, "utf8"));
  };
  const settings = { queueFirst: 0, queueCount: 1, exid: 0x5347, windowMs: 10_000, maxTokenBytes: 1400 };
  const flows: unknown[] = [];
  const make = async (name: string, labels: Record<string, string>) =>
    new FastPathEnforcer(
      settings,
      { local: await load(name, labels), trust, policy: { set, mode: "enforce" } },
      (f) => flows.push(f),
    );
  const client = await make("web", { app: "web" });
  const server = await make("db", { app: "db" });
  const q = new DirectQueue();
  const asQueue = q as unknown as PacketQueue;
  const C = [198, 18, 0, 1];
  const S = [198, 18, 0, 2];

  const handshake = (sport: number): void => {
    const hand = (e: FastPathEnforcer, hook: number, packet: Buffer): Buffer => {
      q.last = null;
      e.handleDirect(asQueue, { id: 1, hook, family: 4, mark: 0, packet } satisfies QueuedPacket);
      const answer = q.last as DirectQueue["last"];
      if (!answer || answer.verdict !== 1) throw new Error("handshake refused");
      return answer.packet ?? packet;
    };
    const syn = hand(client, 3, segment(C, S, sport, 5432, TCP_FLAGS.SYN));
    hand(server, 0, syn);
    const synAck = hand(server, 3, segment(S, C, 5432, sport, TCP_FLAGS.SYN | TCP_FLAGS.ACK));
    const delivered = hand(client, 0, synAck);
    if (parseTcp(delivered, 0x5347).payloadLength !== 0) throw new Error("token not stripped");
  };

  /** Flow records are built after the verdicts, on the next turn of the event loop: let them run. */
  const reportTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

  const measure = async (
    label: string,
    n: number,
    first: number,
  ): Promise<{ label: string; cpuUs: number; wallUs: number }> => {
    const cpu0 = process.cpuUsage();
    const wall0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      handshake(first + i);
      if (idleMs > 0) await new Promise((resolve) => setTimeout(resolve, idleMs));
      else if (i % 64 === 63) await reportTurn();
    }
    await reportTurn();
    const cpu = process.cpuUsage(cpu0);
    const wall = Number(process.hrtime.bigint() - wall0) / 1000;
    return { label, cpuUs: (cpu.user + cpu.system) / n, wallUs: wall / n };
  };

  // Cold: the very first handshake (nothing cached) — measured once, so its figure is one sample.
  const cold = await measure("cold (first contact: signatures, chain verification)", 1, 20_000);
  await measure("JIT warm-up", 200, 30_000);
  const warm = await measure("warm (MAC under the pair key, cached identity)", count, 40_000);
  const stats = { client: client.stats().counters.macProofs, server: server.stats().counters.macProofs };
  // Mean decision CPU per packet kind over every handshake above (cold, warm-up and warm; sampled).
  const decideCpuUs = Object.fromEntries(
    [client, server].flatMap((e) =>
      Object.entries(e.stats().counters.timing)
        .filter(([, t]) => t.count > 0)
        .map(([kind, t]) => [kind, Math.round((10 * t.decideCpuUs) / t.cpuSamples) / 10]),
    ),
  );
  // Packets the native warm table decided without entering JS, per kind.
  const nativeHandled = Object.fromEntries(
    [client, server].flatMap((e) =>
      Object.entries(e.stats().counters.warm)
        .filter(([, w]) => w.handled > 0)
        .map(([kind, w]) => [kind, w.handled]),
    ),
  );
  console.log(
    JSON.stringify({
      count,
      idleMs,
      cold,
      warm,
      decideCpuUs,
      nativeHandled,
      macProofs: stats,
      flows: flows.length,
    }),
  );
} finally {
  await pki.destroy();
}
