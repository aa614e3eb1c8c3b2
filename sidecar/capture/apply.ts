/**
 * Applies and removes Sigil's capture in the kernel: one atomic `iptables-restore --noflush`
 * transaction per IP family, plus TPROXY's policy routing. Runs in the caller's network namespace, or
 * in a named one (`ip netns exec`), with the nft or legacy back end, or the system default.
 */
import { execFile } from "node:child_process";
import type { Backend, CaptureConfig, IpFamily } from "./config.ts";
import { externalTables, type ExternalRules } from "./external-rules.ts";
import { hex, markText, renderCapture, type FamilyPlan, type RoutingPlan } from "./render.ts";
import {
  buildTransaction,
  explainRestoreFailure,
  ownedChains,
  parseSave,
  transactionText,
  type RestoreFailure,
  type TxLine,
} from "./transaction.ts";

export interface CaptureTarget {
  backend: Backend;
  /** Run every command inside this network namespace (by `ip netns` name). */
  netns?: string;
}

export class CaptureApplyError extends Error {
  constructor(
    message: string,
    readonly family: IpFamily,
    readonly command: string,
    readonly failure: RestoreFailure | null,
  ) {
    super(message);
    this.name = "CaptureApplyError";
  }
}

interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

const COMMAND_TIMEOUT_MS = 30_000;

function runCommand(target: CaptureTarget, argv: string[], input = ""): Promise<CommandResult> {
  const full = target.netns ? ["ip", "netns", "exec", target.netns, ...argv] : argv;
  const [cmd, ...args] = full as [string, ...string[]];
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: COMMAND_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error && typeof error.code === "string") {
          reject(new Error(`cannot run ${full.join(" ")}: ${error.message}`));
          return;
        }
        if (error && child.exitCode === null) {
          reject(new Error(`${full.join(" ")} did not finish: ${error.message}`));
          return;
        }
        resolve({ code: child.exitCode ?? 0, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    // A tool that exits before reading stdin closes the pipe; its exit status says what happened.
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(input);
  });
}

export function toolName(family: IpFamily, backend: Backend, tool: "save" | "restore"): string {
  const base = family === 4 ? "iptables" : "ip6tables";
  return backend === "auto" ? `${base}-${tool}` : `${base}-${backend}-${tool}`;
}

export async function readTables(target: CaptureTarget, family: IpFamily): Promise<string> {
  const tool = toolName(family, target.backend, "save");
  const result = await runCommand(target, [tool]);
  if (result.code !== 0) {
    throw new CaptureApplyError(
      `${tool} failed (exit ${result.code}): ${result.stderr.trim()}`,
      family,
      tool,
      null,
    );
  }
  return result.stdout;
}

async function restore(target: CaptureTarget, family: IpFamily, lines: TxLine[]): Promise<void> {
  if (lines.length === 0) return;
  const tool = toolName(family, target.backend, "restore");
  // -w: the legacy back end serialises writers host-wide on one lock file; wait for it rather than fail.
  const result = await runCommand(target, [tool, "-w", "10", "--noflush"], transactionText(lines));
  if (result.code === 0) return;
  const failure = explainRestoreFailure(result.stderr, lines);
  const where =
    failure.rule && failure.line !== null
      ? `line ${failure.line}${failure.table ? ` (table ${failure.table})` : ""}: "${failure.rule.text}" — ${failure.rule.why}`
      : "the transaction";
  throw new CaptureApplyError(
    `IPv${family} capture rules rejected by ${tool} at ${where}: ${failure.reason}. Nothing in this transaction was applied.`,
    family,
    tool,
    failure,
  );
}

function ipFamilyFlag(family: IpFamily): string {
  return family === 4 ? "-4" : "-6";
}

function ruleArgs(routing: RoutingPlan): string[] {
  return ["fwmark", markText(routing.mark), "lookup", String(routing.table)];
}

function localRouteArgs(family: IpFamily, routing: RoutingPlan): string[] {
  return ["local", family === 4 ? "0.0.0.0/0" : "::/0", "dev", "lo", "table", String(routing.table)];
}

async function ipOk(target: CaptureTarget, family: IpFamily, args: string[]): Promise<string> {
  const argv = ["ip", ipFamilyFlag(family), ...args];
  const result = await runCommand(target, argv);
  if (result.code !== 0) {
    throw new CaptureApplyError(
      `IPv${family} policy routing: "${argv.join(" ")}" failed: ${result.stderr.trim()}`,
      family,
      "ip",
      null,
    );
  }
  return result.stdout;
}

async function routingRuleCount(
  target: CaptureTarget,
  family: IpFamily,
  routing: RoutingPlan,
): Promise<number> {
  const out = await ipOk(target, family, ["rule", "show", ...ruleArgs(routing)]);
  return out.split("\n").filter((l) => l.trim() !== "").length;
}

async function localRouteExists(
  target: CaptureTarget,
  family: IpFamily,
  routing: RoutingPlan,
): Promise<boolean> {
  const result = await runCommand(target, [
    "ip",
    ipFamilyFlag(family),
    "route",
    "show",
    "table",
    String(routing.table),
  ]);
  const prefix = family === 4 ? /^local default dev lo\b/ : /^local default dev lo\b|^local ::\/0 dev lo\b/;
  return result.code === 0 && result.stdout.split("\n").some((l) => prefix.test(l.trim()));
}

async function installRouting(target: CaptureTarget, family: IpFamily, routing: RoutingPlan): Promise<void> {
  if ((await routingRuleCount(target, family, routing)) === 0) {
    await ipOk(target, family, ["rule", "add", ...ruleArgs(routing)]);
  }
  if (!(await localRouteExists(target, family, routing))) {
    await ipOk(target, family, ["route", "add", ...localRouteArgs(family, routing)]);
  }
}

async function removeRouting(target: CaptureTarget, family: IpFamily, routing: RoutingPlan): Promise<void> {
  for (let n = await routingRuleCount(target, family, routing); n > 0; n--) {
    await ipOk(target, family, ["rule", "del", ...ruleArgs(routing)]);
  }
  if (await localRouteExists(target, family, routing)) {
    await ipOk(target, family, ["route", "del", ...localRouteArgs(family, routing)]);
  }
}

export interface AppliedFamily {
  family: IpFamily;
  /** The transaction that was applied (empty when there was nothing to do). */
  transaction: string;
}

/**
 * A family left out of capture must carry no traffic at all, or the application simply uses it to
 * escape: refuse to install while such a family has a global address.
 */
async function assertNoUncapturedFamily(config: CaptureConfig, target: CaptureTarget): Promise<void> {
  for (const family of [4, 6] as const) {
    if (config.families.includes(family)) continue;
    const out = await ipOk(target, family, ["-o", "addr", "show", "scope", "global"]);
    const addresses = [...out.matchAll(/ inet6? (\S+)/g)].map((m) => m[1]);
    if (addresses.length > 0) {
      throw new CaptureApplyError(
        `IPv${family} is not captured but this host has IPv${family} addresses (${addresses.join(", ")}): ` +
          `its traffic would bypass the sidecar. Capture IPv${family} too, or remove those addresses.`,
        family,
        "ip",
        null,
      );
    }
  }
}

function externalChains(external: ExternalRules[]): string[] {
  return external.flatMap((ext) => externalTables(ext).flatMap((t) => t.chains));
}

/**
 * Installs capture for every configured family, with `external` rules (the fast path's hooks) in the
 * same transaction. Idempotent: Sigil's existing chains and hooks are replaced in the same atomic
 * transaction that creates the new ones.
 */
export async function installCapture(
  config: CaptureConfig,
  target: CaptureTarget,
  external: ExternalRules[] = [],
): Promise<AppliedFamily[]> {
  const applied: AppliedFamily[] = [];
  await assertNoUncapturedFamily(config, target);
  const owned = ownedChains(externalChains(external));
  for (const plan of renderCapture(config, external.flatMap(externalTables))) {
    const lines = buildTransaction(parseSave(await readTables(target, plan.family)), plan.tables, owned);
    // Routing first: TPROXY-marked packets must already have somewhere to go when the rules appear.
    if (plan.routing) await installRouting(target, plan.family, plan.routing);
    await restore(target, plan.family, lines);
    applied.push({ family: plan.family, transaction: transactionText(lines) });
  }
  return applied;
}

/**
 * Removes every Sigil chain and hook (and those of `external` rules) for every configured family, and
 * the TPROXY policy routing named by the config. Nothing else is touched; running it when nothing is
 * installed is a no-op.
 */
export async function uninstallCapture(
  config: CaptureConfig,
  target: CaptureTarget,
  external: ExternalRules[] = [],
): Promise<AppliedFamily[]> {
  const applied: AppliedFamily[] = [];
  const owned = ownedChains(externalChains(external));
  for (const family of config.families) {
    const lines = buildTransaction(parseSave(await readTables(target, family)), [], owned);
    await restore(target, family, lines);
    await removeRouting(target, family, { mark: config.tproxy.mark, table: config.tproxy.routeTable });
    applied.push({ family, transaction: transactionText(lines) });
  }
  return applied;
}

/** What `--dry-run` prints: the fresh-install transaction and routing commands, per family. */
export function describePlan(plans: FamilyPlan[]): string {
  const out: string[] = [];
  for (const plan of plans) {
    out.push(`# IPv${plan.family}: ${toolName(plan.family, "auto", "restore")} --noflush`);
    const text = transactionText(buildTransaction(new Map(), plan.tables)).trimEnd();
    if (text !== "") out.push(text);
    if (plan.routing) {
      const flag = ipFamilyFlag(plan.family);
      out.push(`# IPv${plan.family} policy routing for TPROXY (mark ${hex(plan.routing.mark.value)})`);
      out.push(`ip ${flag} rule add ${ruleArgs(plan.routing).join(" ")}`);
      out.push(`ip ${flag} route add ${localRouteArgs(plan.family, plan.routing).join(" ")}`);
    }
  }
  return `${out.join("\n")}\n`;
}
