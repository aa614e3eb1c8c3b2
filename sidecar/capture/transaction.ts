/**
 * Turns the current `iptables-save` state and a wanted plan into one `iptables-restore --noflush`
 * transaction: remove every Sigil hook and chain that exists (SIGIL_* and the chains of external rules
 * being applied), then create the wanted ones. Applying the
 * same plan twice therefore yields the same tables, and "remove" touches nothing but Sigil's own
 * chains and the jumps to them. Also maps restore's "line N" errors back to the rendered rule.
 */
import { CHAIN_PREFIX, type TablePlan } from "./render.ts";

export interface SavedTable {
  name: string;
  /** Chain name → policy ("-" for user-defined chains). */
  chains: Map<string, string>;
  /** Rules exactly as saved, `-A <chain> ...`. */
  rules: string[];
}

export class SaveParseError extends Error {
  constructor(
    readonly line: number,
    readonly text: string,
    reason: string,
  ) {
    super(`cannot read iptables-save output, line ${line} ("${text}"): ${reason}`);
    this.name = "SaveParseError";
  }
}

/** Parses iptables-save / ip6tables-save output (either back end). */
export function parseSave(text: string): Map<string, SavedTable> {
  const tables = new Map<string, SavedTable>();
  let current: SavedTable | null = null;
  for (const [index, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("*")) {
      current = { name: line.slice(1), chains: new Map(), rules: [] };
      tables.set(current.name, current);
    } else if (current === null) {
      throw new SaveParseError(index + 1, line, "content before any *table line");
    } else if (line === "COMMIT") {
      current = null;
    } else if (line.startsWith(":")) {
      const [name, policy] = line.slice(1).split(" ");
      if (!name || !policy) throw new SaveParseError(index + 1, line, "malformed chain line");
      current.chains.set(name, policy);
    } else if (line.startsWith("-A ")) {
      current.rules.push(line);
    } else {
      throw new SaveParseError(index + 1, line, "unexpected line");
    }
  }
  return tables;
}

/** Canonical text for comparing states: tables and their lines without counters or comments. */
export function normalizeSave(text: string): string {
  return text
    .split("\n")
    .filter((line) => line.trim() !== "" && !line.startsWith("#"))
    .map((line) => line.replace(/ \[\d+:\d+\]$/, ""))
    .join("\n");
}

const JUMP = /(?:^| )-[jg] (\S+)/;

function isSigilChain(name: string): boolean {
  return name.startsWith(CHAIN_PREFIX);
}

function ruleChain(rule: string): string {
  return rule.split(" ")[1] ?? "";
}

export interface SigilState {
  chains: string[];
  /**
   * Rules in built-in chains that jump to a Sigil chain. Jumps from other user chains are someone
   * else's rules: they are left alone, and removing the chain they point at then fails loudly.
   */
  hooks: string[];
}

/** Which existing chains Sigil owns: its own prefix, plus chains named by external rules it applies. */
export type Owned = (chain: string) => boolean;

export function ownedChains(extra: Iterable<string> = []): Owned {
  const named = new Set(extra);
  return (chain) => isSigilChain(chain) || named.has(chain);
}

export function sigilState(table: SavedTable, owned: Owned = ownedChains()): SigilState {
  const chains = [...table.chains.keys()].filter((c) => table.chains.get(c) === "-" && owned(c));
  const hooks = table.rules.filter((rule) => {
    const target = JUMP.exec(rule)?.[1];
    const chain = ruleChain(rule);
    return target !== undefined && owned(target) && table.chains.get(chain) !== "-";
  });
  return { chains, hooks };
}

export interface TxLine {
  text: string;
  /** What the line is for, quoted in errors. */
  why: string;
}

/**
 * The restore input for one family. `wanted` lists the tables to install into (empty: remove
 * everything of Sigil's). Tables with nothing to remove and nothing to add are left out entirely.
 */
export function buildTransaction(
  current: Map<string, SavedTable>,
  wanted: TablePlan[],
  owned: Owned = ownedChains(),
): TxLine[] {
  const names = [...new Set([...wanted.map((t) => t.table), ...current.keys()])];
  const lines: TxLine[] = [];
  for (const name of names) {
    const saved = current.get(name);
    const state = saved ? sigilState(saved, owned) : { chains: [], hooks: [] };
    const plan = wanted.find((t) => t.table === name);
    if (!plan && state.chains.length === 0 && state.hooks.length === 0) continue;
    lines.push({ text: `*${name}`, why: `table ${name}` });
    for (const hook of state.hooks) {
      lines.push({ text: hook.replace(/^-A /, "-D "), why: `remove the existing jump "${hook}"` });
    }
    for (const chain of state.chains)
      lines.push({ text: `-F ${chain}`, why: `empty the existing chain ${chain}` });
    for (const chain of state.chains)
      lines.push({ text: `-X ${chain}`, why: `delete the existing chain ${chain}` });
    if (plan) {
      for (const chain of plan.chains) lines.push({ text: `-N ${chain}`, why: `create chain ${chain}` });
      for (const rule of plan.rules) lines.push({ text: `-A ${rule.chain} ${rule.spec}`, why: rule.why });
      const positions = new Map<string, number>();
      for (const hook of plan.hooks) {
        const position = (positions.get(hook.chain) ?? 0) + 1;
        positions.set(hook.chain, position);
        lines.push({ text: `-I ${hook.chain} ${position} ${hook.spec}`, why: hook.why });
      }
    }
    lines.push({ text: "COMMIT", why: `commit table ${name}` });
  }
  return lines;
}

export function transactionText(lines: TxLine[]): string {
  return lines.map((l) => `${l.text}\n`).join("");
}

export interface RestoreFailure {
  /** 1-based line of the transaction the tool blamed, when it said. */
  line: number | null;
  /** The rendered line at that position. */
  rule: TxLine | null;
  /** The table the blamed line belongs to. */
  table: string | null;
  /** The tool's own words. */
  reason: string;
}

/** What usually makes the kernel refuse a command when the legacy tool gives no reason of its own. */
const HINTS: Array<[RegExp, string]> = [
  [/^-X /, "the chain is still referenced: does a rule outside Sigil's hooks jump to it?"],
  [/^-D /, "the rule to delete is no longer there"],
  [/ -m owner /, "the owner match is only valid in OUTPUT and POSTROUTING"],
  [/ -j TPROXY /, "TPROXY is only valid in the mangle table's PREROUTING"],
];

/** Reads which line iptables-restore blamed and why, from its stderr (nft and legacy wordings). */
export function explainRestoreFailure(stderr: string, lines: TxLine[]): RestoreFailure {
  const at =
    /Error occurred at line: (\d+)/.exec(stderr) ??
    /line (\d+) failed/.exec(stderr) ??
    /line (\d+): /.exec(stderr);
  const lineNo = at ? Number(at[1]) : null;
  const said = stderr
    .split("\n")
    .map((l) => l.replace(/^\S*tables\S*-restore( v[\d.]+)?( \([^)]*\))?:\s*/, "").trim())
    .filter((l) => l !== "" && !/^Error occurred at line/.test(l) && !/^Try `/.test(l));
  // nft numbers each failed kernel operation; the first one blamed is the cause, later ones are fallout.
  const numbered = said.find((l) => l.startsWith(`line ${lineNo}: `));
  const reason = numbered ? numbered.slice(`line ${lineNo}: `.length) : said.join("; ") || "no reason given";
  let rule = lineNo !== null ? (lines[lineNo - 1] ?? null) : null;
  let table: string | null = null;
  if (lineNo !== null) {
    for (const l of lines.slice(0, lineNo)) if (l.text.startsWith("*")) table = l.text.slice(1);
  }
  // Some failures only surface when the table is committed; when the message names a chain or target,
  // point at the rule that uses it instead of at COMMIT.
  if (rule?.text === "COMMIT") {
    const named = /[`'](\S+?)'/.exec(reason)?.[1];
    const start = lines.findLastIndex((l, i) => i < lineNo! - 1 && l.text.startsWith("*"));
    const culprits = named
      ? lines.slice(start + 1, lineNo! - 1).filter((l) => new RegExp(`(^| )-[jg] ${named}( |$)`).test(l.text))
      : [];
    if (culprits.length === 1) rule = culprits[0] ?? rule;
  }
  const hint =
    rule && /^line \d+ failed$/.test(reason) ? HINTS.find(([re]) => re.test(rule.text))?.[1] : undefined;
  return { line: lineNo, rule, table, reason: hint ? `${reason} (${hint})` : reason };
}
