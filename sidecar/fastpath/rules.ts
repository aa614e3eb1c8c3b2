/**
 * The kernel side of the fast path, rendered as iptables-restore input for IPv4 and IPv6 and
 * applied in chains of our own (idempotent install, clean removal):
 *
 * - mangle: only SYNs to fast-path ports (both directions) and SYN-ACKs of connections whose
 *   connmark says a token is expected or owed go to NFQUEUE; nothing else ever does.
 * - filter: a verdict's mark is saved into the connmark (so the decision sticks to the connection);
 *   a DENY mark is answered with a TCP RST; with fail-closed, packets of served ports whose
 *   connection never got a verdict are dropped.
 *
 * Several queues: a handshake packet goes to the queue its connection's client port selects
 * (`queueForClientPort`, read with the u32 match: a SYN's source port, a SYN-ACK's destination
 * port). The kernel's own spreading does not fit: --queue-balance hashes the address pair only, so
 * between two hosts every connection lands on one queue; --queue-cpu-fanout follows the CPU, so a
 * connection's SYN and SYN-ACK, or a SYN and its replay, may part. The client port is part of the
 * 4-tuple: both handshake packets of a connection, and every copy of a token (valid on its own
 * 4-tuple only), reach the same queue and so the same worker and its replay cache. IPv6 handshake
 * packets with extension headers, which the fixed-offset test cannot read, are dropped rather
 * than queued where a replay could be steered.
 *
 * No --queue-bypass unless fail-open is asked for: with no enforcer bound, queued SYNs are dropped.
 */
import { execFile } from "node:child_process";
import { isIP } from "node:net";
import type { ExternalRules } from "../capture/external-rules.ts";
import { MARK_DENY, MARK_MASK, MARK_PENDING_IN, MARK_PENDING_OUT, hex } from "./marks.ts";

export interface RuleSettings {
  /** Local ports served through the fast path (their inbound SYNs are verified). */
  readonly inboundPorts: readonly number[];
  /** Destination ports whose outbound SYNs get our token. */
  readonly outboundPorts: readonly number[];
  /**
   * When given, an outbound SYN gets our token only if its destination address is listed here and
   * its port is among that address's ports and `outboundPorts`; every other SYN is left alone (so
   * capture sends it to the proxy). At most MAX_OUTBOUND_DESTINATIONS addresses.
   */
  readonly outboundDestinations?: readonly OutboundDestination[];
  readonly queueFirst: number;
  readonly queueCount: number;
  /** Opt-in: let handshakes through untouched when no enforcer is bound (--queue-bypass). */
  readonly failOpen: boolean;
}

export interface OutboundDestination {
  readonly address: string;
  readonly ports: readonly number[];
}

/** Bounds the rules a destination list adds (one per address and port group, in one chain). */
export const MAX_OUTBOUND_DESTINATIONS = 4096;

/** Holds the outbound SYN queue rules once, for the per-destination rules to jump to. */
export const OUTBOUND_QUEUE_CHAIN = "SIGIL-FP-OUTQ";

export const CHAINS = {
  mangle: { PREROUTING: "SIGIL-FP-PRE", OUTPUT: "SIGIL-FP-OUT" },
  filter: { INPUT: "SIGIL-FP-IN", OUTPUT: "SIGIL-FP-LOCAL" },
} as const;

export class RuleError extends Error {
  override readonly name = "RuleError";
}

const MAX_MULTIPORT = 15;

function portGroups(ports: readonly number[]): string[] {
  for (const p of ports) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new RuleError(`port ${p} is not 1..65535`);
  }
  const unique = [...new Set(ports)].sort((a, b) => a - b);
  const groups: string[] = [];
  for (let i = 0; i < unique.length; i += MAX_MULTIPORT)
    groups.push(unique.slice(i, i + MAX_MULTIPORT).join(","));
  return groups;
}

/** The most queues the client-port split spreads over (the port bits it reads). */
export const MAX_QUEUES = 256;

function checkQueues(s: RuleSettings): void {
  const valid =
    Number.isInteger(s.queueFirst) &&
    Number.isInteger(s.queueCount) &&
    s.queueCount >= 1 &&
    s.queueCount <= MAX_QUEUES &&
    s.queueFirst >= 0 &&
    s.queueFirst + s.queueCount - 1 <= 65535;
  if (!valid) {
    throw new RuleError(
      `queue range ${s.queueFirst}+${s.queueCount} invalid (1..${MAX_QUEUES} queues numbered 0..65535)`,
    );
  }
}

/**
 * Which client-port bits pick the queue: bits 1 and up (bit 0 is skipped because Linux prefers even
 * ports for connect()). A power-of-two count reads exactly log2(count) bits, so consecutive ports
 * alternate queues; any other count splits 8 bits into near-equal ranges.
 */
function portFieldWidth(queueCount: number): number {
  return (queueCount & (queueCount - 1)) === 0 ? queueCount : MAX_QUEUES;
}

/** The range of the port field that queue `index` (0-based) takes. */
function fieldRange(index: number, queueCount: number): { lo: number; hi: number } {
  const width = portFieldWidth(queueCount);
  return {
    lo: Math.floor((width * index) / queueCount),
    hi: Math.floor((width * (index + 1)) / queueCount) - 1,
  };
}

/** The queue the rules send a connection's handshake packets to, from its client port. */
export function queueForClientPort(clientPort: number, queueFirst: number, queueCount: number): number {
  const field = (clientPort >> 1) & (portFieldWidth(queueCount) - 1);
  for (let i = 0; i < queueCount; i++) {
    const { lo, hi } = fieldRange(i, queueCount);
    if (field >= lo && field <= hi) return queueFirst + i;
  }
  throw new RuleError(`no queue for port ${clientPort} among ${queueCount}`);
}

/**
 * u32 tests selecting queue `index` by the client port, one per family (the same restore text
 * serves iptables and ip6tables; each family's test fails at once on the other's packets). The
 * 32-bit word at the TCP header holds source port << 16 | destination port; IPv4 finds it after
 * IHL × 4 bytes, IPv6 at byte 40 when the next header is TCP.
 */
function portSplitMatches(index: number, queueCount: number, side: "source" | "destination"): string[] {
  const mask = hex(portFieldWidth(queueCount) - 1);
  const { lo, hi } = fieldRange(index, queueCount);
  const value = lo === hi ? `${lo}` : `${lo}:${hi}`;
  const shift = side === "source" ? 17 : 1;
  return [
    `-m u32 --u32 0>>28=4&&0>>22&0x3C@0>>${shift}&${mask}=${value}`,
    `-m u32 --u32 0>>28=6&&4>>8&0xFF=6&&40>>${shift}&${mask}=${value}`,
  ];
}

/** The IPv6 address as four 32-bit words (hex), for the u32 match. */
function ipv6Words(address: string): string[] {
  let text = address;
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right];
  const words: string[] = [];
  for (let i = 0; i < 8; i += 2) {
    const word = ((parseInt(groups[i] as string, 16) << 16) >>> 0) + parseInt(groups[i + 1] as string, 16);
    words.push(`0x${word.toString(16)}`);
  }
  return words;
}

/**
 * A u32 test for "the destination address is `address`": IPv4 reads it at byte 16, IPv6 at bytes
 * 24-39; the version test first makes it fail at once on the other family's packets, so the same
 * restore text serves iptables and ip6tables.
 */
function destinationMatch(address: string): string {
  const family = isIP(address);
  if (family === 4) {
    const word = address.split(".").reduce((acc, part) => acc * 256 + Number(part), 0);
    return `-m u32 --u32 0>>28=4&&16=0x${word.toString(16)}`;
  }
  if (family === 6) {
    const tests = ipv6Words(address.toLowerCase()).map((w, i) => `${24 + 4 * i}=${w}`);
    return `-m u32 --u32 0>>28=6&&${tests.join("&&")}`;
  }
  throw new RuleError(`outbound destination ${address} is not an IP address`);
}

/** Rule tails (matches + target) that queue a handshake packet, `side` saying where its client port is. */
function queueTails(s: RuleSettings, side: "source" | "destination"): string[] {
  const bypass = s.failOpen ? " --queue-bypass" : "";
  if (s.queueCount === 1) return [`-j NFQUEUE --queue-num ${s.queueFirst}${bypass}`];
  const tails: string[] = [];
  for (let i = 0; i < s.queueCount; i++) {
    for (const match of portSplitMatches(i, s.queueCount, side))
      tails.push(`${match} -j NFQUEUE --queue-num ${s.queueFirst + i}${bypass}`);
  }
  // Reached only by a packet no split test can read (IPv6 with extension headers).
  tails.push("-j DROP");
  return tails;
}

/** iptables-restore input (same text for iptables and ip6tables) for `--noflush` application. */
export function renderRules(s: RuleSettings): string {
  checkQueues(s);
  const bySource = queueTails(s, "source");
  const byDestination = queueTails(s, "destination");
  const mask = hex(MARK_MASK);
  const synOnly = "-p tcp --tcp-flags SYN,ACK,RST,FIN SYN";
  const synAck = "-p tcp --tcp-flags SYN,ACK,RST,FIN SYN,ACK";
  const pre = CHAINS.mangle.PREROUTING;
  const out = CHAINS.mangle.OUTPUT;
  const inp = CHAINS.filter.INPUT;
  const loc = CHAINS.filter.OUTPUT;
  const outq = OUTBOUND_QUEUE_CHAIN;
  const lines = ["*mangle", `:${pre} - [0:0]`, `:${out} - [0:0]`, `:${outq} - [0:0]`];
  const queue = (chain: string, match: string, tails: readonly string[]): void => {
    for (const tail of tails) lines.push(`-A ${chain} ${match} ${tail}`);
  };
  // Every packet of every connection passes these chains: anything without SYN (all data) leaves
  // at the first rule instead of being tested against each queue's rules.
  for (const chain of [pre, out]) lines.push(`-A ${chain} -p tcp ! --tcp-flags SYN SYN -j RETURN`);
  // The client port is a SYN's source port and a SYN-ACK's destination port.
  for (const g of portGroups(s.inboundPorts)) queue(pre, `${synOnly} -m multiport --dports ${g}`, bySource);
  queue(pre, `${synAck} -m connmark --mark ${hex(MARK_PENDING_OUT)}/${mask}`, byDestination);
  if (s.outboundDestinations === undefined) {
    for (const g of portGroups(s.outboundPorts))
      queue(out, `${synOnly} -m multiport --dports ${g}`, bySource);
  } else {
    if (s.outboundDestinations.length > MAX_OUTBOUND_DESTINATIONS)
      throw new RuleError(
        `${s.outboundDestinations.length} outbound destinations (at most ${MAX_OUTBOUND_DESTINATIONS})`,
      );
    const allowed = new Set(portGroups(s.outboundPorts).flatMap((g) => g.split(",").map(Number)));
    for (const d of s.outboundDestinations) {
      const match = destinationMatch(d.address);
      for (const g of portGroups(d.ports.filter((p) => allowed.has(p))))
        lines.push(`-A ${out} ${synOnly} -m multiport --dports ${g} ${match} -j ${outq}`);
    }
    for (const tail of bySource) lines.push(`-A ${outq} ${tail}`);
  }
  queue(out, `${synAck} -m connmark --mark ${hex(MARK_PENDING_IN)}/${mask}`, byDestination);
  lines.push("COMMIT", "*filter", `:${inp} - [0:0]`, `:${loc} - [0:0]`);
  for (const chain of [inp, loc]) {
    lines.push(
      `-A ${chain} -p tcp -m mark --mark ${hex(MARK_DENY)}/${mask} -j REJECT --reject-with tcp-reset`,
    );
    lines.push(
      `-A ${chain} -m mark ! --mark 0x0/${mask} -j CONNMARK --save-mark --nfmask ${mask} --ctmask ${mask}`,
    );
  }
  if (!s.failOpen) {
    for (const g of portGroups(s.inboundPorts)) {
      lines.push(`-A ${inp} -p tcp -m multiport --dports ${g} -m connmark --mark 0x0/${mask} -j DROP`);
    }
  }
  lines.push("COMMIT", "");
  return lines.join("\n");
}

const JUMPS: readonly (readonly [table: string, builtin: string, chain: string])[] = [
  ["mangle", "PREROUTING", CHAINS.mangle.PREROUTING],
  ["mangle", "OUTPUT", CHAINS.mangle.OUTPUT],
  ["filter", "INPUT", CHAINS.filter.INPUT],
  ["filter", "OUTPUT", CHAINS.filter.OUTPUT],
];

/**
 * The same rules in the capture wrapper's ExternalRules form, for a sidecar that applies capture and
 * fast path in one transaction (capture's `fastPathMarkMask` must be MARK_MASK).
 */
export function fastPathExternalRules(s: RuleSettings): ExternalRules {
  return {
    owner: "sidecar/fastpath",
    restoreText: renderRules(s),
    hooks: JUMPS.map(([table, builtin, chain]) => ({ table, builtin, chain })),
  };
}

function run(
  cmd: string,
  args: readonly string[],
  input?: string,
): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: 30_000 }, (err, _stdout, stderr) => {
      if (err && typeof (err as NodeJS.ErrnoException).code === "string") {
        reject(new RuleError(`cannot run ${cmd}: ${err.message}`));
        return;
      }
      resolve({ code: child.exitCode ?? 1, stderr: String(stderr) });
    });
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(input ?? "");
  });
}

const TOOLS = { 4: ["iptables", "iptables-restore"], 6: ["ip6tables", "ip6tables-restore"] } as const;

/** Installs (or refreshes) the rules for both families in the current network namespace. */
export async function applyRules(s: RuleSettings): Promise<void> {
  const text = renderRules(s);
  for (const family of [4, 6] as const) {
    const [tool, restore] = TOOLS[family];
    const r = await run(restore, ["-w", "5", "--noflush"], text);
    if (r.code !== 0) throw new RuleError(`${restore} failed: ${r.stderr.trim()}`);
    for (const [table, builtin, chain] of JUMPS) {
      const check = await run(tool, ["-w", "5", "-t", table, "-C", builtin, "-j", chain]);
      if (check.code === 0) continue;
      const insert = await run(tool, ["-w", "5", "-t", table, "-I", builtin, "1", "-j", chain]);
      if (insert.code !== 0)
        throw new RuleError(`${tool} -t ${table} -I ${builtin}: ${insert.stderr.trim()}`);
    }
  }
}

/** Removes every fast-path rule and chain (both families); missing pieces are not an error. */
export async function removeRules(): Promise<void> {
  for (const family of [4, 6] as const) {
    const [tool] = TOOLS[family];
    for (const [table, builtin, chain] of JUMPS) {
      for (let i = 0; i < 16; i++) {
        const del = await run(tool, ["-w", "5", "-t", table, "-D", builtin, "-j", chain]);
        if (del.code !== 0) break;
      }
      await run(tool, ["-w", "5", "-t", table, "-F", chain]);
      await run(tool, ["-w", "5", "-t", table, "-X", chain]);
    }
    await run(tool, ["-w", "5", "-t", "mangle", "-F", OUTBOUND_QUEUE_CHAIN]);
    await run(tool, ["-w", "5", "-t", "mangle", "-X", OUTBOUND_QUEUE_CHAIN]);
  }
}
