/**
 * A sidecar restarted with `identityDir` renews with the SVID it kept instead of redeeming its
 * single-use join token again (a VM's `Restart=always`, a reboot); a kept SVID that no longer proves
 * the workload (another key, a revoked workload) is never a way back in.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAgent } from "../../sidecar/agent/agent.ts";
import { parseAgentOptions } from "../../sidecar/agent/options.ts";
import { IdentityStore } from "../../sidecar/identity/identity-store.ts";
import { loopbackAgentInput, startTestControlPlane } from "../support/control-plane.ts";
import type { TestControlPlane } from "../support/control-plane.ts";

const quiet = pino({ level: "silent" });
let controlPlane: TestControlPlane;

beforeAll(async () => {
  controlPlane = await startTestControlPlane("sigil-identity-dir-", {});
}, 60_000);

afterAll(async () => {
  await controlPlane?.close();
});

async function newWorkload(name: string): Promise<{ tokenFile: string; identityDir: string }> {
  const dir = await mkdtemp(join(tmpdir(), "sigil-kept-"));
  const { token } = await controlPlane.cp.identity.tokens.create({
    name,
    labels: { app: name },
    ttlSeconds: 600,
  });
  const tokenFile = join(dir, "join-token");
  await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  return { tokenFile, identityDir: join(dir, "identity") };
}

/** Starts the agent and returns its SVID's SPIFFE ID and serial, closing it again. */
async function runOnce(name: string, w: { tokenFile: string; identityDir?: string }) {
  const { tokenFile, ...rest } = w;
  const input = { ...loopbackAgentInput(controlPlane, "unused", name, rest), joinTokenFile: tokenFile };
  delete (input as { joinToken?: string }).joinToken;
  const agent = await startAgent(parseAgentOptions(input), { logger: quiet, startTimeoutMs: 30_000 });
  try {
    const creds = agent.rotation.current();
    return { spiffeId: creds.spiffeId, leaf: creds.certChain[0] as Buffer };
  } finally {
    await agent.close();
  }
}

describe("a sidecar with an identity directory", () => {
  it("renews with its kept SVID after a restart; without it, the spent token is refused", async () => {
    const w = await newWorkload("kept");
    const first = await runOnce("kept", w);
    for (const file of ["svid.pem", "svid.key"])
      expect((await stat(join(w.identityDir, file))).mode & 0o777).toBe(0o600);
    expect((await stat(w.identityDir)).mode & 0o777).toBe(0o700);

    const second = await runOnce("kept", w);
    expect(second.spiffeId).toBe(first.spiffeId);
    expect(second.leaf.equals(first.leaf)).toBe(false);
    await expect(runOnce("kept", { tokenFile: w.tokenFile })).rejects.toThrow(/already used/);
  }, 60_000);

  it("does not use a kept certificate with a key that is not its own", async () => {
    const w = await newWorkload("swapped");
    await runOnce("swapped", w);
    const other = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    await writeFile(join(w.identityDir, "svid.key"), other.export({ type: "pkcs8", format: "pem" }), {
      mode: 0o600,
    });
    await expect(new IdentityStore(w.identityDir).load()).rejects.toThrow(
      /svid.key: not the key of the certificate/,
    );
    // Left aside, so the sidecar bootstraps, and its token is spent.
    await expect(runOnce("swapped", w)).rejects.toThrow(/already used/);
  }, 60_000);

  it("is refused when its workload was revoked meanwhile", async () => {
    const w = await newWorkload("revoked");
    const { spiffeId } = await runOnce("revoked", w);
    await controlPlane.cp.identity.registry.revoke(spiffeId, "test", 3600);
    await expect(runOnce("revoked", w)).rejects.toThrow(/PERMISSION_DENIED.*revoked was revoked/);
  }, 60_000);

  it("treats an expired kept certificate as none", async () => {
    const w = await newWorkload("expired");
    await runOnce("expired", w);
    const store = new IdentityStore(w.identityDir);
    expect(await store.load()).not.toBeNull();
    expect(await store.load(new Date(Date.now() + 400 * 86_400_000))).toBeNull();
  }, 60_000);
});
