import pino from "pino";
import { execFile } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { X509Certificate } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerIdentityRoutes } from "../../controlplane/identity/http-routes.ts";
import { canonicalSerial } from "../../core/svid/revocation.ts";
import { x509 } from "../../core/svid/x509.ts";
import { createCsr, generateWorkloadKey } from "../../sidecar/identity/workload-key.ts";
import type { IdentityHarness } from "../support/identity-harness.ts";
import { startIdentityHarness } from "../support/identity-harness.ts";
import { guardedRouter } from "../support/api-auth.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
let h: IdentityHarness;
let http: Server;
let api: string;
let tokenFile: string;
let closeAuth: (() => void) | undefined;

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI with SIGIL_TOKEN_FILE naming the API's token file unless `env` says otherwise. */
function sigil(...args: string[]): Promise<CliResult> {
  return sigilWith({ SIGIL_TOKEN_FILE: tokenFile }, ...args);
}

function sigilWith(env: Record<string, string>, ...args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", join(ROOT, "cmd/sigil/main.ts"), ...args],
      { cwd: ROOT, timeout: 60_000, env: { ...process.env, ...env } },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

beforeAll(async () => {
  h = await startIdentityHarness();
  const guarded = await guardedRouter(h.dataDir);
  const router = guarded.router;
  tokenFile = guarded.tokenFile;
  closeAuth = () => guarded.auth.close();
  registerIdentityRoutes(router, { plane: h.plane, log: pino({ level: "silent" }) });
  http = createServer((req, res) => void router.handle(req, res));
  http.listen(0, "127.0.0.1");
  await once(http, "listening");
  api = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
});
afterAll(async () => {
  closeAuth?.();
  http?.close();
  await h?.close();
});

describe("sigil CLI for identity", { timeout: 120_000 }, () => {
  it("token create makes a one-time token that a workload redeems", async () => {
    const r = await sigil("token", "create", "--labels", "app=orders,env=prod", "--ttl", "10m", "--api", api);
    expect(r.code, r.stderr).toBe(0);
    const token = r.stdout.trim();
    expect(token).toMatch(/^sgjt_/);
    expect(r.stderr).toMatch(/one-time token for spiffe:\/\/sigil.local\/workload\/orders, valid until/);
    const res = await h.newClient().signSvid({
      csr: await createCsr(await generateWorkloadKey()),
      attestation: { proof: "joinToken", joinToken: { token }, process: null, metadata: null },
      jwtAudiences: [],
      ttlSeconds: 0,
    });
    expect(Object.fromEntries(res.labels.map((l) => [l.key, l.value]))).toEqual({
      app: "orders",
      env: "prod",
    });
    await writeFile(
      join(h.dataDir, "orders.pem"),
      res.certChain.map((d) => x509.PemConverter.encode(d, "CERTIFICATE")).join("\n"),
    );
    await writeFile(join(h.dataDir, "orders.jwt"), res.jwtSvid);
  });

  it("token create -o yaml prints the whole answer for a script, and -o refuses a format it lacks", async () => {
    const r = await sigil("token", "create", "--labels", "app=billing", "-o", "yaml", "--api", api);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe("");
    const answer = parse(r.stdout) as { token: string; spiffeId: string; expiresAt: string };
    expect(answer.token).toMatch(/^sgjt_/);
    expect(answer.spiffeId).toBe("spiffe://sigil.local/workload/billing");
    const wide = await sigil("token", "create", "--labels", "app=billing", "-o", "wide", "--api", api);
    expect(wide.code).toBe(2);
    expect(wide.stderr).toContain('-o/--output must be one of name, json, yaml, not "wide"');
  });

  it("names what is wrong with bad input", async () => {
    const bad = await sigil("token", "create", "--labels", "app", "--api", api);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/label "app" is not of the form key=value/);
    const down = await sigil("workload", "list", "--api", "http://127.0.0.1:1");
    expect(down.code).toBe(3);
    expect(down.stderr).toMatch(/cannot reach the control plane API at http:\/\/127.0.0.1:1/);
  });

  it("refuses a wrong or missing admin token with an error naming the file and how to give the right one", async () => {
    const wrong = join(h.dataDir, "wrong-token");
    await writeFile(wrong, `${"x".repeat(43)}\n`, { mode: 0o600 });
    const refused = await sigil(
      "token",
      "create",
      "--labels",
      "app=intruder",
      "--api",
      api,
      "--token-file",
      wrong,
    );
    expect(refused.code).toBe(4);
    expect(refused.stdout).toBe("");
    expect(refused.stderr).toContain(`the control plane refused the token from ${wrong} (HTTP 401:`);
    expect(refused.stderr).toMatch(/pass --token-file <path> or set SIGIL_TOKEN_FILE/);
    const missing = join(h.dataDir, "no-such-token");
    const absent = await sigilWith(
      { SIGIL_TOKEN_FILE: missing },
      "workload",
      "revoke",
      "spiffe://sigil.local/workload/orders",
      "--api",
      api,
    );
    expect(absent.code).toBe(1);
    expect(absent.stderr).toContain(
      `cannot read the API token file ${missing}: does not exist; pass --token-file`,
    );
    // The flag wins over the environment.
    const viaFlag = await sigilWith(
      { SIGIL_TOKEN_FILE: missing },
      "workload",
      "list",
      "--api",
      api,
      "--token-file",
      tokenFile,
    );
    expect(viaFlag.code, viaFlag.stderr).toBe(0);
    expect(viaFlag.stdout).not.toMatch(/intruder/);
    expect(viaFlag.stdout).toMatch(/spiffe:\/\/sigil.local\/workload\/orders\s+join-token\s+active/);
  });

  it("workload list shows the workload; identity inspect shows ID, labels, expiry and a valid chain", async () => {
    const list = await sigil("workload", "list", "--api", api);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(
      /spiffe:\/\/sigil.local\/workload\/orders\s+join-token\s+active\s+\S+\s+app=orders,env=prod/,
    );
    const cert = await sigil("identity", "inspect", join(h.dataDir, "orders.pem"), "--api", api);
    expect(cert.code, cert.stderr).toBe(0);
    expect(cert.stdout).toMatch(/SPIFFE ID:\s+spiffe:\/\/sigil.local\/workload\/orders/);
    expect(cert.stdout).toMatch(/label:\s+env=prod\s+\(join-token\)/);
    expect(cert.stdout).toMatch(/expires in (59|60)m/);
    expect(cert.stdout).toMatch(/chain:\s+valid against the sigil.local bundle/);
    const jwt = await sigil("identity", "inspect", join(h.dataDir, "orders.jwt"), "--data-dir", h.dataDir);
    expect(jwt.code, jwt.stderr).toBe(0);
    expect(jwt.stdout).toMatch(/type:\s+JWT-SVID[\s\S]*label:\s+app=orders[\s\S]*signature:\s+valid/);
    // -o json|yaml: the same findings as data.
    const certJson = await sigil(
      "identity",
      "inspect",
      join(h.dataDir, "orders.pem"),
      "--api",
      api,
      "-o",
      "json",
    );
    expect(certJson.code, certJson.stderr).toBe(0);
    expect(JSON.parse(certJson.stdout)).toMatchObject({
      type: "X.509-SVID",
      spiffeIds: ["spiffe://sigil.local/workload/orders"],
      labels: expect.arrayContaining([{ key: "env", value: "prod", provenance: "join-token" }]),
      verification: { checked: true, valid: true, trustDomain: "sigil.local", from: api },
    });
    const jwtYaml = await sigil("identity", "inspect", join(h.dataDir, "orders.jwt"), "-o", "yaml");
    expect(jwtYaml.code, jwtYaml.stderr).toBe(0);
    expect(parse(jwtYaml.stdout)).toMatchObject({
      type: "JWT-SVID",
      spiffeId: "spiffe://sigil.local/workload/orders",
      labels: { app: "orders" },
      verification: { checked: false, reason: "no trust bundle given (--bundle, --data-dir or --api)" },
    });
  });

  it("cert revoke revokes one certificate by serial, cert revoked lists it, and inspect reports it invalid", async () => {
    const pem = await readFile(join(h.dataDir, "orders.pem"), "utf8");
    const serial = canonicalSerial(new X509Certificate(pem).serialNumber);
    const r = await sigil("cert", "revoke", serial.toUpperCase(), "--reason", "key leaked", "--api", api);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      new RegExp(
        `^revoked certificate ${serial} of spiffe://sigil.local/workload/orders at \\S+, kept until \\S+ \\(revocation list sequence 1\\)\n$`,
      ),
    );
    const listed = await sigil("cert", "revoked", "--api", api);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(
      new RegExp(
        `^SERIAL\\s+SPIFFE ID\\s+REVOKED\\s+EXPIRES\\s+REASON\n${serial}\\s+spiffe://sigil.local/workload/orders\\s+\\S+\\s+\\S+\\s+key leaked\n$`,
      ),
    );
    const json = await sigil("cert", "revoked", "--json", "--api", api);
    expect(JSON.parse(json.stdout)).toEqual([expect.objectContaining({ serial, reason: "key leaked" })]);
    // The workload itself stays active: only this certificate is refused.
    expect(h.plane.registry.get("spiffe://sigil.local/workload/orders")?.revoked).toBeNull();
    const inspect = await sigil("identity", "inspect", join(h.dataDir, "orders.pem"), "--api", api);
    expect(inspect.code).toBe(1);
    expect(inspect.stdout).toMatch(
      new RegExp(`chain:\\s+INVALID \\(revoked\\).*certificate ${serial} .*key leaked`),
    );
    const asData = await sigil(
      "identity",
      "inspect",
      join(h.dataDir, "orders.pem"),
      "--api",
      api,
      "-o",
      "json",
    );
    expect(asData.code).toBe(1);
    expect(JSON.parse(asData.stdout)).toMatchObject({
      verification: { checked: true, valid: false, reason: "revoked" },
    });
  });

  it("workload revoke revokes, and inspect then reports the chain as invalid", async () => {
    const r = await sigil(
      "workload",
      "revoke",
      "spiffe://sigil.local/workload/orders",
      "--reason",
      "decommissioned",
      "--api",
      api,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      /revoked spiffe:\/\/sigil.local\/workload\/orders at .* \(revocation list sequence 2\)/,
    );
    expect(h.plane.registry.revocationList().entries.map((e) => e.spiffeId)).toEqual([
      "spiffe://sigil.local/workload/orders",
    ]);
    const again = await sigil("workload", "revoke", "spiffe://sigil.local/workload/orders", "--api", api);
    expect(again.code).toBe(4);
    expect(again.stderr).toMatch(/HTTP 409.*already revoked/);
    const inspect = await sigil("identity", "inspect", join(h.dataDir, "orders.pem"), "--api", api);
    expect(inspect.code).toBe(1);
    expect(inspect.stdout).toMatch(/chain:\s+INVALID \(revoked\).*decommissioned/);
  });

  it("ca show reads the data directory and ca rotate goes through the API", async () => {
    const rotate = await sigil("ca", "rotate", "--activate-in", "1h", "--api", api);
    expect(rotate.code, rotate.stderr).toBe(0);
    expect(rotate.stdout).toMatch(/new CA generation g2-\S+ signs from .*; trust bundle sequence 2/);
    const show = await sigil("ca", "show", "--data-dir", h.dataDir);
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toMatch(/bundle sequence: 2/);
    expect(show.stdout.match(/^g\d-/gm)).toHaveLength(2);
    const json = await sigil("ca", "show", "--data-dir", h.dataDir, "-o", "json");
    const view = JSON.parse(json.stdout) as {
      bundleSequence: number;
      generations: unknown[];
      roots: unknown[];
    };
    expect(view.bundleSequence).toBe(2);
    expect(view.generations).toHaveLength(2);
    expect(view.roots).toHaveLength(2);
  });
});
