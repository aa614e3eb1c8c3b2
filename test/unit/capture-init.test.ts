import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { CaptureConfigError } from "../../sidecar/capture/config.ts";
import { loadCaptureConfig, type InitSources } from "../../sidecar/capture/load-config.ts";
import { registerInitCommand, runInit } from "../../cmd/sigil/commands/init.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sigil-init-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

const sources = (over: Partial<InitSources>): InitSources => ({
  env: {},
  flags: {},
  givenOnCli: (name) => name in (over.flags ?? {}),
  ...over,
});

async function issues(over: Partial<InitSources>): Promise<string[]> {
  const error = await loadCaptureConfig(sources(over)).then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(CaptureConfigError);
  return (error as CaptureConfigError).issues;
}

describe("sigil init configuration", () => {
  it("layers file < environment < flags", async () => {
    const configFile = await file(
      "layers.yaml",
      "capture:\n  proxyUid: 1337\n  inboundPort: 16006\n  outboundPort: 16001\n  excludeOutboundPorts: [22]\nsidecar:\n  other: ignored\n",
    );
    const config = await loadCaptureConfig(
      sources({
        configFile,
        env: { SIGIL_OUTBOUND_PORT: "17001", SIGIL_EXCLUDE_OUTBOUND_CIDRS: "198.18.9.0/24, 2001:2::/48" },
        flags: { outboundPort: "18001", families: "4" },
      }),
    );
    expect(config).toMatchObject({
      proxyUid: 1337,
      inboundPort: 16006,
      outboundPort: 18001,
      excludeOutboundPorts: [22],
      excludeOutboundCidrs: ["198.18.9.0/24", "2001:2::/48"],
      families: [4],
    });
  });

  it("ignores flags left at their defaults (--no-outbound's implied true does not override the file)", async () => {
    const configFile = await file("no-outbound.yaml", "capture:\n  proxyUid: 1337\n  outbound: false\n");
    const config = await loadCaptureConfig(
      sources({ configFile, flags: { outbound: true }, givenOnCli: () => false }),
    );
    expect(config.outbound).toBe(false);
  });

  it("resolves user and group names", async () => {
    const config = await loadCaptureConfig(
      sources({ flags: { proxyUid: "nobody", proxyGid: "nogroup", captureUids: "daemon,1000" } }),
    );
    expect(config).toMatchObject({ proxyUid: 65534, proxyGid: 65534, captureUids: [1, 1000] });
    expect(await issues({ flags: { proxyUid: "no-such-user-here" } })).toEqual([
      'no user named "no-such-user-here"',
    ]);
  });

  it("names the file line of a bad value, and the variable or flag of bad text", async () => {
    const configFile = await file("bad.yaml", "capture:\n  proxyUid: 1337\n  inboundPort: 99999\n");
    expect(await issues({ configFile })).toEqual([
      expect.stringMatching(/^line 3: capture\.inboundPort: .*65535/),
    ]);
    const broken = await file("broken.yaml", "capture:\n  proxyUid: [1\n");
    expect((await issues({ configFile: broken }))[0]).toMatch(/^line \d+: /);
    expect(await issues({ configFile: await file("none.yaml", "sidecar: {}\n") })).toEqual([
      "no `capture:` section",
    ]);
    const env = await loadCaptureConfig(sources({ env: { SIGIL_INBOUND_PORT: "abc" } })).catch(
      (e: Error) => e,
    );
    expect(String(env)).toMatch(/environment SIGIL_INBOUND_PORT.*"abc" is not a port number/s);
    const flag = await loadCaptureConfig(sources({ flags: { families: "4,5" } })).catch((e: Error) => e);
    expect(String(flag)).toMatch(/flag --families.*"5" is not an IP family/s);
  });

  it("--fast-path-mark-mask (as an injected pod's init container passes it) lets fast-path connections bypass the proxy", async () => {
    const outcome = await runInit(
      sources({ flags: { proxyUid: "1337", families: "4", fastPathMarkMask: "0xf00000" } }),
      "dry-run",
      undefined,
    );
    expect(outcome.config.fastPathMarkMask).toBe(0xf00000);
    expect(outcome.output).toContain("-A SIGIL_INBOUND -m connmark ! --mark 0x0/0xf00000 -j RETURN");
    expect(outcome.output).toContain("-A SIGIL_OUTBOUND -m mark ! --mark 0x0/0xf00000 -j RETURN");
    const env = await loadCaptureConfig(sources({ env: { SIGIL_FAST_PATH_MARK_MASK: "0xf0000g" } })).catch(
      (e: Error) => e,
    );
    expect(String(env)).toMatch(/environment SIGIL_FAST_PATH_MARK_MASK.*"0xf0000g" is not a mark mask/s);
  });

  it("--dry-run prints the rules it would apply and applies nothing", async () => {
    const outcome = await runInit(
      sources({ flags: { proxyUid: "1337", families: "4", inboundPorts: "8080" } }),
      "dry-run",
      "sg-not-a-namespace",
    );
    expect(outcome.output).toContain("-A SIGIL_INBOUND -p tcp --dport 8080 -j SIGIL_IN_REDIRECT");
    expect(outcome.output).toContain("-A SIGIL_OUTBOUND -m owner --uid-owner 1337 -j RETURN");
  });

  it("registers `init` on a commander program; errors go to stderr with exit code 1", async () => {
    const program = new Command().exitOverride();
    registerInitCommand(program);
    const out = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
    const err = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
      await program.parseAsync(["init", "--dry-run", "--proxy-uid", "1337", "--families", "6"], {
        from: "user",
      });
      expect(String(out.mock.calls[0]?.[0])).toContain("ip6tables-restore --noflush");
      await program.parseAsync(["init", "--dry-run", "--proxy-uid", "0"], { from: "user" });
      expect(String(err.mock.calls[0]?.[0])).toMatch(/^sigil init: .*would exempt every root process/s);
      expect(process.exitCode).toBe(1);
    } finally {
      out.mockRestore();
      err.mockRestore();
      process.exitCode = 0;
    }
  });
});
