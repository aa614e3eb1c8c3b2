import type { SimulationResult } from "../../controlplane/visibility/simulate.ts";
import { endpointText, table } from "./cli-support.ts";
import type { CliIo } from "./cli-support.ts";
import { CliError, EXIT, UsageError } from "./exit-codes.ts";

/** How `policy simulate` and `policy diff` show the recorded flows whose verdict would change. */
export function printSimulation(io: CliIo, r: SimulationResult): void {
  io.out(
    `${r.evaluated} observed flows: ${r.unchanged} unchanged, ${r.nowDenied} would now be denied, ${r.nowAllowed} would now be allowed\n`,
  );
  if (r.changes.length === 0) return;
  const rows = r.changes.map((c) => [
    `${c.before.verdict.toUpperCase()} -> ${c.after.verdict.toUpperCase()}`,
    `${endpointText(c.source)} -> ${endpointText(c.destination)}:${c.port}`,
    c.method ? `${c.method} ${c.path}` : "TCP",
    c.direction,
    `x${c.count}`,
    `by ${c.after.policy ?? "default"}`,
  ]);
  io.out(table([["CHANGE", "FLOW", "REQUEST", "SIDE", "COUNT", "NOW DECIDED"], ...rows]));
}

export type FailOn = "change" | "deny" | "never";

export function failOnOf(text: string): FailOn {
  if (text === "change" || text === "deny" || text === "never") return text;
  throw new UsageError(`--fail-on must be change, deny or never, not "${text}"`);
}

/** Ends with exit status 4 when the simulation shows what `failOn` forbids. */
export function checkFailOn(r: SimulationResult, failOn: FailOn): void {
  if (failOn === "never") return;
  if (failOn === "deny" && r.nowDenied > 0)
    throw new CliError(
      `${r.nowDenied} observed flows would now be denied (--fail-on never to only report)`,
      EXIT.refused,
    );
  if (failOn === "change" && r.nowDenied + r.nowAllowed > 0)
    throw new CliError(
      `${r.nowDenied + r.nowAllowed} observed flows would change verdict (--fail-on never to only report)`,
      EXIT.refused,
    );
}
