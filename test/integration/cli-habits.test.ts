/**
 * The CLI's kubectl habits, each run as an operator runs it against one real control plane that
 * serves its API over HTTPS (certificate from its own CA): `sigil version`, contexts in a config
 * file (flags and environment still win), `-o` on commands that list or get, the documented exit
 * statuses, and completion scripts loaded by the real bash, zsh and fish.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { parse } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlPlane } from "../../controlplane/control-plane.ts";
import type { ControlPlane } from "../../controlplane/control-plane.ts";
import { SIGIL_VERSION } from "../../core/version.ts";
import { runSigil } from "../support/sigil-cli.ts";

let cp: ControlPlane;
let dir: string;
let config: string;
let api: string;

/** The CLI with only the config file to go by: no API address or token in the environment. */
const sigil = (...args: string[]) =>
  runSigil(args, { env: { SIGIL_CONFIG: config, SIGIL_API: "", SIGIL_TOKEN_FILE: "", SIGIL_CONTEXT: "" } });

function shell(program: string, script: string): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(program, ["-c", script], { timeout: 20_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${program}: ${err.message}\n${stderr}`)) : resolve(stdout),
    ),
  );
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sigil-cli-habits-"));
  config = join(dir, "home", "config");
  cp = await startControlPlane({
    dataDir: join(dir, "cp"),
    grpc: { host: "127.0.0.1", port: 0 },
    xdsPlaintext: undefined,
    http: { host: "127.0.0.1", port: 0, tls: "sigil" },
    serverNames: ["localhost"],
    log: pino({ level: "silent" }),
  });
  api = `https://127.0.0.1:${cp.httpPort}`;
});

afterAll(async () => {
  await cp?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("sigil CLI habits", { timeout: 60_000 }, () => {
  it("keeps contexts in its config file and lets flags and environment override them", async () => {
    const created = await sigil(
      "config",
      "set-context",
      "lab",
      "--api",
      api,
      "--token-file",
      cp.httpAuth.tokenFile,
      "--ca-file",
      cp.bundlePath,
    );
    expect(created.code, created.stderr).toBe(0);
    const other = ["--api", "http://127.0.0.1:9", "--token-file", cp.httpAuth.tokenFile];
    expect((await sigil("config", "set-context", "other", ...other)).code).toBe(0);
    expect((await sigil("config", "current-context")).code).toBe(5);
    expect((await sigil("config", "use-context", "nope")).code).toBe(5);
    expect((await sigil("config", "use-context", "lab")).stdout).toBe('switched to context "lab"\n');
    const file = parse(await readFile(config, "utf8")) as { "current-context": string; contexts: unknown[] };
    expect(file["current-context"]).toBe("lab");
    expect(file.contexts).toHaveLength(2);
    const list = await sigil("config", "get-contexts");
    expect(list.stdout).toMatch(
      /^CURRENT\s+NAME\s+API\s+TOKEN FILE\n\*\s+lab\s+https:\/\/127\.0\.0\.1:\d+\s+\S+http-token\n\s+other\s+http:\/\/127\.0\.0\.1:9\s+\S+http-token\n$/,
    );
    expect((await sigil("config", "current-context")).stdout).toBe("lab\n");

    // The current context reaches the HTTPS API, trusting its CA file.
    const listed = await sigil("workload", "list", "-o", "json");
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([]);
    // --context picks another; a flag overrides the context's setting; an unknown context is a usage error.
    const elsewhere = await sigil("workload", "list", "--context", "other");
    expect(elsewhere.code).toBe(3);
    expect(elsewhere.stderr).toContain("cannot reach the control plane API at http://127.0.0.1:9");
    const wrong = join(dir, "wrong-token");
    await writeFile(wrong, `${"w".repeat(43)}\n`, { mode: 0o600 });
    const refused = await sigil("mode", "--token-file", wrong);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain(`refused the token from ${wrong}`);
    const viaEnv = await runSigil(["mode"], {
      env: { SIGIL_CONFIG: config, SIGIL_API: "http://127.0.0.1:9" },
    });
    expect(viaEnv.code).toBe(3);
    expect((await sigil("mode", "--context", "missing")).code).toBe(2);
    // Without the CA file the control plane's certificate is not trusted.
    const untrusted = await runSigil(["mode", "--api", api, "--token-file", cp.httpAuth.tokenFile], {
      env: { SIGIL_CONFIG: join(dir, "none") },
    });
    expect(untrusted.code).toBe(3);
  });

  it("prints the client's and the control plane's versions, and says when it is unreachable", async () => {
    const both = await sigil("version");
    expect(both.code, both.stderr).toBe(0);
    expect(both.stdout).toBe(`client: ${SIGIL_VERSION}\nserver: ${SIGIL_VERSION} (${api})\n`);
    const json = JSON.parse((await sigil("version", "-o", "json")).stdout) as unknown;
    expect(json).toEqual({ client: { version: SIGIL_VERSION }, server: { api, version: SIGIL_VERSION } });
    const alone = await sigil("version", "--context", "other");
    expect(alone.code, alone.stderr).toBe(0);
    expect(alone.stdout).toMatch(/^client: \S+\nserver: unreachable at http:\/\/127\.0\.0\.1:9 \(.+\)\n$/);
  });

  it("answers -o json, yaml and wide on commands that list or get", async () => {
    const mode = await sigil("mode", "-o", "yaml");
    expect(mode.code, mode.stderr).toBe(0);
    expect(parse(mode.stdout)).toMatchObject({ settings: { mesh: "enforce" }, workloads: [] });
    const graph = await sigil("graph", "-o", "json");
    expect(JSON.parse(graph.stdout)).toEqual({ nodes: [], edges: [] });
    const flows = await sigil("flows", "-o", "json");
    expect(JSON.parse(flows.stdout)).toEqual([]);
    const revoked = await sigil("cert", "revoked", "-o", "yaml");
    expect(parse(revoked.stdout)).toEqual([]);
    const contexts = await sigil("config", "get-contexts", "-o", "wide");
    expect(contexts.stdout).toMatch(/CA FILE\n\*\s+lab\s+.*bundle\.pem\n/);
    const bad = await sigil("workload", "list", "-o", "xml");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('-o/--output must be one of table, wide, json, yaml, not "xml"');
  });

  it("exits 2 on usage errors, naming --output-file where -o used to take a file", async () => {
    const old = await sigil("policy", "suggest", "-o", "suggested.yaml");
    expect(old.code).toBe(2);
    expect(old.stderr).toContain("use --output-file suggested.yaml");
    expect((await sigil("no-such-command")).code).toBe(2);
    const flag = await sigil("workload", "list", "--no-such-flag");
    expect(flag.code).toBe(2);
    expect(flag.stderr).toBe(
      "sigil: unknown option '--no-such-flag'\n(run 'sigil workload list --help' for usage)\n",
    );
    const help = await sigil("--help");
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/completion \[options\] <shell>|completion <shell>/);
  });

  it("completes commands, subcommands, options and their values in bash, zsh and fish", async () => {
    const scripts = join(dir, "completion");
    for (const sh of ["bash", "zsh", "fish"]) {
      const r = await sigil("completion", sh);
      expect(r.code, r.stderr).toBe(0);
      await writeFile(`${scripts}.${sh}`, r.stdout);
    }
    const ask = (words: string[]) =>
      `COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _sigil_complete; echo "\${COMPREPLY[*]}"`;
    const bash = await shell(
      "bash",
      [
        `source ${scripts}.bash`,
        ask(["sigil", "pol"]),
        ask(["sigil", "policy", ""]),
        ask(["sigil", "policy", "get", "-o", ""]),
        ask(["sigil", "policy", "simulate", "--fail-on", "n"]),
        ask(["sigil", "config", "set-context", "--"]),
        "complete -p sigil",
      ].join("\n"),
    );
    expect(bash.split("\n")).toEqual([
      "policy",
      "validate diff apply get delete import-networkpolicy suggest simulate",
      "table wide json yaml",
      "never",
      "--api --token-file --ca-file --help",
      "complete -o default -F _sigil_complete sigil",
      "",
    ]);
    // zsh runs the same function through bashcompinit, which indexes arrays from 0 (ksharrays).
    const zsh = await shell(
      "zsh",
      [
        `source ${scripts}.zsh`,
        "setopt ksharrays",
        ask(["sigil", "workload", ""]),
        "echo ${_comps[sigil]}",
      ].join("\n"),
    );
    expect(zsh).toBe("list revoke label\n_bash_complete -o default -F _sigil_complete\n");
    const fish = await shell(
      "fish",
      [
        `source ${scripts}.fish`,
        "complete -C 'sigil con'",
        "complete -C 'sigil config '",
        "complete -C 'sigil flows -o '",
      ].join("\n"),
    );
    const words = fish.split("\n").map((l) => l.split("\t")[0]);
    expect(words).toEqual(
      expect.arrayContaining([
        "config",
        "current-context",
        "get-contexts",
        "set-context",
        "use-context",
        "wide",
        "yaml",
      ]),
    );
    expect(words).not.toContain("flows");
  });
});
