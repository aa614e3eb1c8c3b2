import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { registerInitCommand } from "../../cmd/sigil/commands/init.ts";
import { createNetns, type Netns } from "../support/netns.ts";

describe("sigil init against a real namespace", () => {
  let ns: Netns;
  let dir: string;
  beforeAll(async () => {
    ns = await createNetns("init");
    dir = await mkdtemp(join(tmpdir(), "sigil-init-e2e-"));
  });
  afterAll(async () => {
    await ns?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  async function init(args: string[]): Promise<string> {
    const program = new Command().exitOverride();
    registerInitCommand(program);
    const out = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
    try {
      await program.parseAsync(["init", ...args], { from: "user" });
      expect(process.exitCode ?? 0).toBe(0);
      return out.mock.calls.map((c) => String(c[0])).join("");
    } finally {
      out.mockRestore();
    }
  }

  it("installs from a config file (flags overriding it) and uninstalls, leaving no Sigil chain", async () => {
    const config = join(dir, "sigil.yaml");
    await writeFile(config, "capture:\n  proxyUid: nobody\n  excludeInboundPorts: [22]\n  backend: nft\n");
    const env = { ...process.env };
    process.env.SIGIL_IPTABLES_BACKEND = "nft";
    try {
      expect(await init(["--config", config, "--backend", "legacy", "--netns", ns.name])).toBe(
        "sigil init: capture installed for IPv4, IPv6 (backend legacy)\n",
      );
      const legacy = await ns.execOk(["iptables-legacy-save", "-t", "nat"]);
      expect(legacy).toContain("-A SIGIL_OUTBOUND -m owner --uid-owner 65534 -j RETURN");
      expect(legacy).toContain("-A SIGIL_INBOUND -p tcp -m tcp --dport 22 -j RETURN");
      expect(await ns.execOk(["ip6tables-legacy-save", "-t", "nat"])).toContain("SIGIL_OUT_REDIRECT");
      expect(await init(["--config", config, "--backend", "legacy", "--netns", ns.name, "--uninstall"])).toBe(
        "sigil init: capture removed for IPv4, IPv6 (backend legacy)\n",
      );
      expect(await ns.execOk(["iptables-legacy-save"])).not.toContain("SIGIL_");
      expect(await ns.execOk(["ip6tables-legacy-save"])).not.toContain("SIGIL_");
    } finally {
      process.env = env;
    }
  });
});
