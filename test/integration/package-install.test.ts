/**
 * The packed Sigil installs and runs without a toolchain: `npm pack` (whose prepack puts the native
 * addon in native/prebuilds/), then `npm install` of the tarball into a clean directory with the
 * production dependencies only and every way of building the addon made to fail, then `sigil
 * version` and `sigil --help` from the installed bin and the prebuilt addon loaded from the package.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
let dir: string;
let installed: string;

function run(
  file: string,
  args: readonly string[],
  options: { cwd: string; env?: Record<string, string> },
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(
      file,
      args,
      { cwd: options.cwd, timeout: 120_000, env: { ...process.env, ...options.env } },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sigil-package-"));
  const packed = await run("npm", ["pack", "--pack-destination", dir], { cwd: ROOT });
  expect(packed.code, packed.stderr).toBe(0);
  const tarball = (await readdir(dir)).find((f) => f.endsWith(".tgz"));
  expect(tarball, "npm pack wrote no tarball").toBeDefined();
  const prefix = join(dir, "prefix");
  // The registry's packages come from npm's cache; a build of the addon would fail at once.
  const install = await run(
    "npm",
    [
      "install",
      "--prefix",
      prefix,
      "--omit=dev",
      "--no-package-lock",
      "--prefer-offline",
      "--no-audit",
      "--no-fund",
      join(dir, tarball as string),
    ],
    { cwd: dir, env: { npm_config_node_gyp: "/bin/false", CC: "/bin/false", CXX: "/bin/false" } },
  );
  expect(install.code, install.stderr).toBe(0);
  installed = join(prefix, "node_modules");
}, 240_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  await rm(join(ROOT, "native/prebuilds"), { recursive: true, force: true });
});

describe("the packed package", { timeout: 60_000 }, () => {
  it("ships the prebuilt addon and leaves the repository's own tree as it was", () => {
    const pkg = join(installed, "sigil");
    expect(
      existsSync(join(pkg, `native/prebuilds/${process.platform}-${process.arch}/sigil_native.node`)),
    ).toBe(true);
    expect(existsSync(join(pkg, "native/build"))).toBe(false);
    expect(existsSync(join(pkg, "test"))).toBe(false);
    expect(existsSync(join(pkg, "schemas"))).toBe(true);
    // Only production dependencies came along.
    for (const dev of ["vitest", "typescript", "eslint", "oidc-provider"])
      expect(existsSync(join(installed, dev)), dev).toBe(false);
    expect(existsSync(join(ROOT, "native/prebuilds"))).toBe(false);
  });

  it("runs sigil version and sigil --help from the installed bin", async () => {
    const bin = join(installed, ".bin", "sigil");
    const version = await run(bin, ["version", "--api", "http://127.0.0.1:9"], { cwd: dir });
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout).toMatch(/^client: \d+\.\d+\.\d+\nserver: unreachable at http:\/\/127\.0\.0\.1:9/);
    const help = await run(bin, ["--help"], { cwd: dir });
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: sigil \[options\] \[command\]/);
    expect(help.stdout).toContain("identity");
  });

  it("loads the prebuilt native addon from the installed package", async () => {
    const loaded = await run(
      process.execPath,
      [
        "--import",
        "tsx",
        "--input-type=module",
        "-e",
        'const m = await import("./native/load.ts"); process.stdout.write(String(typeof m.load().getPeerCredentials))',
      ],
      { cwd: join(installed, "sigil") },
    );
    expect(loaded.code, loaded.stderr).toBe(0);
    expect(loaded.stdout).toBe("function");
  });
});
