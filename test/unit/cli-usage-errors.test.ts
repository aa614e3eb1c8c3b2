/**
 * Command-line mistakes that commander catches (unknown option or command, a missing argument or
 * option value, an argument too many) end as the CLI's own usage errors: a UsageError (exit status
 * 2) whose message names the mistake and the help to read, with nothing printed by commander itself.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { MockInstance } from "vitest";
import { EXIT, UsageError } from "../../cmd/sigil/exit-codes.ts";
import { sigilProgram, soleGroupFor } from "../../cmd/sigil/program.ts";

let stderr: MockInstance;

beforeEach(() => {
  stderr = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
});

afterEach(() => {
  stderr.mockRestore();
});

async function usageErrorOf(...args: string[]): Promise<UsageError> {
  const program = await sigilProgram(soleGroupFor(["node", "sigil", ...args]));
  const err: unknown = await program.parseAsync(["node", "sigil", ...args]).then(
    () => new Error(`sigil ${args.join(" ")} was accepted`),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UsageError);
  return err as UsageError;
}

describe("commander's command-line errors", { timeout: 30_000 }, () => {
  it.each([
    [["workload", "list", "--no-such-flag"], "unknown option '--no-such-flag'", "sigil workload list"],
    [["no-such-command"], "unknown command 'no-such-command'", "sigil"],
    [["workload", "lst"], "unknown command 'lst'\n(Did you mean list?)", "sigil workload"],
    [["config", "use-context"], "missing required argument 'name'", "sigil config use-context"],
    [["flows", "--limit"], "option '-n, --limit <n>' argument missing", "sigil flows"],
    [["token", "create"], "required option '--labels <k=v,...>' not specified", "sigil token create"],
    [
      ["identity", "inspect", "a.pem", "b.pem"],
      "too many arguments for 'inspect'. Expected 1 argument but got 2.",
      "sigil identity inspect",
    ],
    [["sidecar", "--no-such-flag"], "unknown option '--no-such-flag'", "sigil sidecar"],
    [["sidecar", "--inbound-port"], "option '--inbound-port <port>' argument missing", "sigil sidecar"],
  ])("sigil %j is a usage error", async (args, what, command) => {
    const err = await usageErrorOf(...args);
    expect(err.exitCode).toBe(EXIT.usage);
    expect(err.message).toBe(`${what}\n(run '${command} --help' for usage)`);
    expect(stderr).not.toHaveBeenCalled();
  });
});

describe("the program `sigil sidecar` runs with", () => {
  it("registers the sidecar group alone, and every group for any other command", async () => {
    expect(soleGroupFor(["node", "sigil", "sidecar", "--config", "x.yaml"])).toBe("sidecar.ts");
    expect(soleGroupFor(["node", "sigil", "workload", "list"])).toBeUndefined();
    expect(soleGroupFor(["node", "sigil"])).toBeUndefined();
    const sole = await sigilProgram("sidecar.ts");
    expect(sole.commands.map((c) => c.name())).toEqual(["sidecar"]);
    const full = await sigilProgram();
    const fullSidecar = full.commands.find((c) => c.name() === "sidecar");
    expect(fullSidecar?.options.map((o) => o.flags)).toEqual(sole.commands[0]?.options.map((o) => o.flags));
    expect(full.commands.length).toBeGreaterThan(5);
  });
});
