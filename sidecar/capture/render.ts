/**
 * Renders a CaptureConfig into the rules Sigil wants in the kernel, per IP family: Sigil's own chains
 * (all named SIGIL_*), the rules inside them, and the hooks that jump to them from built-in chains.
 * Pure: no I/O. Every rule carries `why`, which errors quote when the kernel rejects that rule.
 */
import { cidrFamily, type CaptureConfig, type IpFamily, type Mark } from "./config.ts";

export const CHAIN_PREFIX = "SIGIL_";

/** nat and mangle for capture itself; external rules may bring others (filter). */
export type Table = string;

export interface Rule {
  chain: string;
  /** Everything after `-A <chain>`. */
  spec: string;
  why: string;
}

export interface TablePlan {
  table: Table;
  /** Sigil chains to create, in creation order. */
  chains: string[];
  rules: Rule[];
  /** Jumps from built-in chains, inserted at the top in this order. */
  hooks: Rule[];
}

export interface RoutingPlan {
  mark: Mark;
  table: number;
}

export interface FamilyPlan {
  family: IpFamily;
  tables: TablePlan[];
  /** TPROXY's policy routing: marked packets are delivered locally. */
  routing: RoutingPlan | null;
}

export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

export function markText(m: Mark): string {
  return `${hex(m.value)}/${hex(m.mask)}`;
}

const loopback = (family: IpFamily): string => (family === 4 ? "127.0.0.0/8" : "::1/128");
const anyAddress = (family: IpFamily): string => (family === 4 ? "0.0.0.0" : "::");

function ownerMatch(uid: number, gid: number | null): string {
  return gid === null ? `-m owner --uid-owner ${uid}` : `-m owner --uid-owner ${uid} --gid-owner ${gid}`;
}

class TableBuilder {
  readonly chains: string[] = [];
  readonly rules: Rule[] = [];
  readonly hooks: Rule[] = [];

  constructor(readonly table: Table) {}

  chain(name: string): string {
    if (!this.chains.includes(name)) this.chains.push(name);
    return name;
  }

  add(chain: string, spec: string, why: string): void {
    this.rules.push({ chain, spec, why });
  }

  hook(builtin: string, spec: string, why: string): void {
    this.hooks.push({ chain: builtin, spec, why });
  }

  plan(): TablePlan | null {
    if (this.chains.length === 0) return null;
    return { table: this.table, chains: this.chains, rules: this.rules, hooks: this.hooks };
  }
}

function inboundPortRules(
  config: CaptureConfig,
  add: (spec: string, why: string) => void,
  target: string,
): void {
  for (const p of config.excludeInboundPorts)
    add(`-p tcp --dport ${p} -j RETURN`, `inbound port ${p} excluded`);
  if (config.inboundPorts === "*") {
    add(`-p tcp -j ${target}`, "capture inbound TCP");
  } else {
    for (const p of config.inboundPorts) add(`-p tcp --dport ${p} -j ${target}`, `capture inbound port ${p}`);
  }
}

/**
 * Traffic the fast path decided bypasses the proxy: the first packet by its packet mark (the verdict
 * is given in mangle, before nat), later packets by the connmark the fast path saved.
 */
function skipFastPath(config: CaptureConfig, add: (spec: string, why: string) => void): void {
  if (config.fastPathMarkMask === null) return;
  const field = `0x0/${hex(config.fastPathMarkMask)}`;
  add(`-m mark ! --mark ${field} -j RETURN`, "packets the fast path gave a verdict bypass the proxy");
  add(`-m connmark ! --mark ${field} -j RETURN`, "connections the fast path decided bypass the proxy");
}

function inboundWanted(config: CaptureConfig): boolean {
  return config.inboundPorts === "*" || config.inboundPorts.length > 0;
}

function renderRedirectInbound(nat: TableBuilder, config: CaptureConfig): void {
  const inbound = nat.chain(`${CHAIN_PREFIX}INBOUND`);
  const redirect = nat.chain(`${CHAIN_PREFIX}IN_REDIRECT`);
  nat.add(
    redirect,
    `-p tcp -j REDIRECT --to-ports ${config.inboundPort}`,
    `inbound connections to the sidecar's port ${config.inboundPort}`,
  );
  const add = (spec: string, why: string) => nat.add(inbound, spec, why);
  skipFastPath(config, add);
  inboundPortRules(config, add, redirect);
  nat.hook("PREROUTING", `-p tcp -j ${inbound}`, "inbound capture");
}

function renderTproxyInbound(mangle: TableBuilder, config: CaptureConfig, family: IpFamily): void {
  const inbound = mangle.chain(`${CHAIN_PREFIX}INBOUND`);
  const divert = mangle.chain(`${CHAIN_PREFIX}DIVERT`);
  const tproxy = mangle.chain(`${CHAIN_PREFIX}TPROXY`);
  const m = markText(config.tproxy.mark);
  mangle.add(divert, `-j MARK --set-xmark ${m}`, "mark packets of established transparent connections");
  mangle.add(divert, "-j ACCEPT", "deliver them to the transparent socket");
  mangle.add(
    tproxy,
    `! -d ${loopback(family)} -p tcp -j TPROXY --on-port ${config.inboundPort} --on-ip ${anyAddress(family)} --tproxy-mark ${m}`,
    `inbound connections to the sidecar's transparent port ${config.inboundPort}`,
  );
  const add = (spec: string, why: string) => mangle.add(inbound, spec, why);
  skipFastPath(config, add);
  for (const p of config.excludeInboundPorts)
    add(`-p tcp --dport ${p} -j RETURN`, `inbound port ${p} excluded`);
  add("-p tcp -m socket --transparent -j " + divert, "packets of connections the sidecar already holds");
  if (config.inboundPorts === "*") {
    add(`-p tcp -j ${tproxy}`, "capture inbound TCP");
  } else {
    for (const p of config.inboundPorts) add(`-p tcp --dport ${p} -j ${tproxy}`, `capture inbound port ${p}`);
  }
  mangle.hook("PREROUTING", `-p tcp -j ${inbound}`, "inbound capture (TPROXY)");
}

function renderOutbound(nat: TableBuilder, config: CaptureConfig, family: IpFamily): void {
  const outbound = nat.chain(`${CHAIN_PREFIX}OUTBOUND`);
  const redirect = nat.chain(`${CHAIN_PREFIX}OUT_REDIRECT`);
  nat.add(
    redirect,
    `-p tcp -j REDIRECT --to-ports ${config.outboundPort}`,
    `outbound connections to the sidecar's port ${config.outboundPort}`,
  );
  const add = (spec: string, why: string) => nat.add(outbound, spec, why);
  add(
    `${ownerMatch(config.proxyUid, config.proxyGid)} -j RETURN`,
    config.proxyGid === null
      ? `the sidecar's own traffic (uid ${config.proxyUid}) is not captured`
      : `the sidecar's own traffic (uid ${config.proxyUid} and gid ${config.proxyGid}) is not captured`,
  );
  skipFastPath(config, add);
  add("-o lo -j RETURN", "traffic to this host's own addresses stays local");
  for (const c of config.excludeOutboundCidrs.filter((c) => cidrFamily(c) === family)) {
    add(`-d ${c} -j RETURN`, `outbound CIDR ${c} excluded`);
  }
  for (const p of config.excludeOutboundPorts)
    add(`-p tcp --dport ${p} -j RETURN`, `outbound port ${p} excluded`);
  if (config.captureUids.length === 0) {
    add(`-p tcp -j ${redirect}`, "capture outbound TCP");
  } else {
    for (const u of config.captureUids) {
      add(`-p tcp -m owner --uid-owner ${u} -j ${redirect}`, `capture outbound TCP of uid ${u}`);
    }
  }
  nat.hook("OUTPUT", `-p tcp -j ${outbound}`, "outbound capture");
}

export function renderFamily(config: CaptureConfig, family: IpFamily): FamilyPlan {
  const nat = new TableBuilder("nat");
  const mangle = new TableBuilder("mangle");
  if (inboundWanted(config)) {
    if (config.mode === "tproxy") renderTproxyInbound(mangle, config, family);
    else renderRedirectInbound(nat, config);
  }
  if (config.outbound) renderOutbound(nat, config, family);
  const tables = [mangle.plan(), nat.plan()].filter((t): t is TablePlan => t !== null);
  const routing =
    config.mode === "tproxy" && inboundWanted(config)
      ? { mark: config.tproxy.mark, table: config.tproxy.routeTable }
      : null;
  return { family, tables, routing };
}

/** Capture's plan per family, with `external` tables (the same for both families) merged in first. */
export function renderCapture(config: CaptureConfig, external: TablePlan[] = []): FamilyPlan[] {
  return config.families.map((family) => {
    const plan = renderFamily(config, family);
    return { ...plan, tables: mergeTables(plan.tables, external) };
  });
}

/** Puts external tables ahead of capture's: their chains and hooks come first in each shared table. */
export function mergeTables(capture: TablePlan[], external: TablePlan[]): TablePlan[] {
  const merged = new Map<string, TablePlan>();
  for (const t of [...external, ...capture]) {
    const into = merged.get(t.table);
    if (!into) {
      merged.set(t.table, {
        table: t.table,
        chains: [...t.chains],
        rules: [...t.rules],
        hooks: [...t.hooks],
      });
      continue;
    }
    for (const chain of t.chains) {
      if (into.chains.includes(chain)) throw new Error(`chain ${chain} in table ${t.table} is claimed twice`);
      into.chains.push(chain);
    }
    into.rules.push(...t.rules);
    into.hooks.push(...t.hooks);
  }
  return [...merged.values()];
}
