import { labelKeyProblem, labelValueProblem } from "../../core/labels.ts";
import { UsageError } from "./exit-codes.ts";
import { identityApi, IdentityApiError, type ApiTarget } from "./identity-api.ts";

/**
 * Names a workload the way an operator thinks of it: its SPIFFE ID, or the name it was given (the
 * join token's `name`, i.e. the ID's last path segment). A name that fits several workloads is
 * refused with the candidates, never guessed.
 */
export async function resolveWorkload(target: ApiTarget, workload: string): Promise<string> {
  if (workload.startsWith("spiffe://")) return workload;
  const { workloads } = await identityApi<{ workloads: { spiffeId: string }[] }>(
    target,
    "GET",
    "api/identity/workloads",
  );
  const ids = workloads.map((w) => w.spiffeId);
  const exact = ids.filter((id) => new URL(id).pathname === `/workload/${workload}`);
  const matches = exact.length > 0 ? exact : ids.filter((id) => id.split("/").at(-1) === workload);
  if (matches.length === 1) return matches[0] as string;
  if (matches.length === 0)
    throw new IdentityApiError(404, `no workload named "${workload}" (give its name or SPIFFE ID)`);
  throw new UsageError(
    `"${workload}" names ${matches.length} workloads; give one SPIFFE ID: ${matches.join(", ")}`,
  );
}

export interface LabelChanges {
  readonly set: Record<string, string>;
  readonly remove: string[];
}

/** kubectl's label arguments: `key=value` sets a label, `key-` removes it. */
export function parseLabelChanges(args: readonly string[]): LabelChanges {
  const set: Record<string, string> = {};
  const remove: string[] = [];
  for (const arg of args) {
    const eq = arg.indexOf("=");
    if (eq < 0 && arg.endsWith("-") && arg.length > 1) {
      const key = arg.slice(0, -1);
      const problem = labelKeyProblem(key);
      if (problem) throw new UsageError(`${arg}: ${problem}`);
      if (key in set) throw new UsageError(`label "${key}" is both set and removed`);
      remove.push(key);
      continue;
    }
    if (eq <= 0) throw new UsageError(`"${arg}" is neither key=value (set a label) nor key- (remove one)`);
    const key = arg.slice(0, eq);
    const value = arg.slice(eq + 1);
    const problem = labelKeyProblem(key) ?? labelValueProblem(key, value);
    if (problem) throw new UsageError(`${arg}: ${problem}`);
    if (remove.includes(key)) throw new UsageError(`label "${key}" is both set and removed`);
    if (key in set) throw new UsageError(`label "${key}" is given twice`);
    set[key] = value;
  }
  return { set, remove };
}
