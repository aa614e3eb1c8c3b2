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
 * No --queue-bypass unless fail-open is asked for: with no enforcer bound, queued SYNs are dropped.
 */
import { execFile } from "node:child_process";
import type { ExternalRules } from "../capture/external-rules.ts";
import { MARK_DENY, MARK_MASK, MARK_PENDING_IN, MARK_PENDING_OUT, hex } from "./marks.ts";

export interface RuleSettings {
  /** Local ports served through the fast path (their inbound SYNs are verified). */
  readonly inboundPorts: readonly number[];
  /** Destination ports whose outbound SYNs get our token. */
  readonly outboundPorts: readonly number[];
  readonly queueFirst: number;
  readonly queueCount: number;
  /** Opt-in: let handshakes through untouched when no enforcer is bound (--queue-bypass). */
  readonly failOpen: boolean;
}

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

function queueTarget(s: RuleSettings): string {
  if (!(s.queueCount >= 1) || s.queueFirst < 0 || s.queueFirst + s.queueCount - 1 > 65535) {
    throw new RuleError(`queue range ${s.queueFirst}+${s.queueCount} invalid`);
  }
  const target =
    s.queueCount === 1
      ? `NFQUEUE --queue-num ${s.queueFirst}`
      : `NFQUEUE --queue-balance ${s.queueFirst}:${s.queueFirst + s.queueCount - 1}`;
  return s.failOpen ? `${target} --queue-bypass` : target;
}

/** iptables-restore input (same text for iptables and ip6tables) for `--noflush` application. */
export function renderRules(s: RuleSettings): string {
  const q = queueTarget(s);
  const mask = hex(MARK_MASK);
  const synOnly = "-p tcp --tcp-flags SYN,ACK,RST,FIN SYN";
  const synAck = "-p tcp --tcp-flags SYN,ACK,RST,FIN SYN,ACK";
  const pre = CHAINS.mangle.PREROUTING;
  const out = CHAINS.mangle.OUTPUT;
  const inp = CHAINS.filter.INPUT;
  const loc = CHAINS.filter.OUTPUT;
  const lines = ["*mangle", `:${pre} - [0:0]`, `:${out} - [0:0]`];
  for (const g of portGroups(s.inboundPorts))
    lines.push(`-A ${pre} ${synOnly} -m multiport --dports ${g} -j ${q}`);
  lines.push(`-A ${pre} ${synAck} -m connmark --mark ${hex(MARK_PENDING_OUT)}/${mask} -j ${q}`);
  for (const g of portGroups(s.outboundPorts))
    lines.push(`-A ${out} ${synOnly} -m multiport --dports ${g} -j ${q}`);
  lines.push(`-A ${out} ${synAck} -m connmark --mark ${hex(MARK_PENDING_IN)}/${mask} -j ${q}`);
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
  }
}
