/**
 * Rules another component renders, applied by the capture wrapper in the same atomic transaction as
 * capture itself: the L4 fast path hands over its NFQUEUE handshake hooks this way, and gets the same
 * idempotent install, exact removal, both back ends and errors that name the failing rule.
 */
import type { Rule, TablePlan } from "./render.ts";

export interface ExternalHook {
  table: string;
  /** Built-in chain the jump is inserted into (at the top, ahead of capture's own hooks). */
  builtin: string;
  chain: string;
  /** Extra match in front of `-j <chain>`, e.g. `-p tcp`. */
  match?: string;
}

export interface ExternalRules {
  /** Who renders them; quoted in errors. */
  owner: string;
  /**
   * iptables-restore text: `*table`, a `:CHAIN - [0:0]` line per chain, `-A CHAIN ...` rules, `COMMIT`.
   * Only the owner's own user chains; the built-in chains are reached through `hooks`.
   */
  restoreText: string;
  hooks: ExternalHook[];
}

export class ExternalRulesError extends Error {
  constructor(owner: string, line: number, text: string, reason: string) {
    super(`rules from ${owner}, line ${line} ("${text}"): ${reason}`);
    this.name = "ExternalRulesError";
  }
}

const BUILTIN = new Set(["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]);

/** Parses the owner's text into table plans; every rule's `why` names the owner and the source line. */
export function externalTables(ext: ExternalRules): TablePlan[] {
  const tables = new Map<string, TablePlan>();
  let current: TablePlan | null = null;
  for (const [index, raw] of ext.restoreText.split("\n").entries()) {
    const line = raw.trim();
    const fail = (reason: string) => new ExternalRulesError(ext.owner, index + 1, line, reason);
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("*")) {
      const name = line.slice(1);
      current = tables.get(name) ?? { table: name, chains: [], rules: [], hooks: [] };
      tables.set(name, current);
    } else if (current === null) {
      throw fail("expected a *table line first");
    } else if (line === "COMMIT") {
      current = null;
    } else if (line.startsWith(":")) {
      const [name, policy] = line.slice(1).split(" ");
      if (!name || policy !== "-" || BUILTIN.has(name))
        throw fail("only new user chains (`:NAME - [0:0]`) may be declared");
      if (!current.chains.includes(name)) current.chains.push(name);
    } else if (line.startsWith("-A ")) {
      const [, chain, ...spec] = line.split(" ");
      if (!chain || !current.chains.includes(chain))
        throw fail(`rule for a chain not declared in table ${current.table}`);
      const rule: Rule = { chain, spec: spec.join(" "), why: `${ext.owner}, line ${index + 1}` };
      current.rules.push(rule);
    } else {
      throw fail("only chain declarations and -A rules are accepted");
    }
  }
  for (const hook of ext.hooks) {
    const plan = tables.get(hook.table);
    if (!plan || !plan.chains.includes(hook.chain)) {
      throw new ExternalRulesError(
        ext.owner,
        0,
        hook.chain,
        `hook into table ${hook.table} names an undeclared chain`,
      );
    }
    if (!BUILTIN.has(hook.builtin)) {
      throw new ExternalRulesError(ext.owner, 0, hook.builtin, "hooks go into built-in chains only");
    }
    plan.hooks.push({
      chain: hook.builtin,
      spec: `${hook.match ? `${hook.match} ` : ""}-j ${hook.chain}`,
      why: `${ext.owner}: jump from ${hook.builtin} to ${hook.chain}`,
    });
  }
  return [...tables.values()];
}
