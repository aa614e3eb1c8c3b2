/**
 * Policy as code from a pipeline: `sigil policy validate|diff|apply|get|delete` and `simulate
 * --fail-on`, each run as a process against one real control plane whose watched directory holds
 * files too (one set of files: the latest write wins; a name defined in two files is refused).
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlPlane } from "../../controlplane/control-plane.ts";
import type { ControlPlane } from "../../controlplane/control-plane.ts";
import { demo, flow } from "../support/flows-fixtures.ts";
import { runSigil } from "../support/sigil-cli.ts";

let cp: ControlPlane;
let dir: string;
let policyDir: string;
let work: string;

const sigil = (...args: string[]) => runSigil([...args], { env: env() });
const sigilIn = (stdin: string, ...args: string[]) => runSigil([...args], { env: env(), stdin });
const env = () => ({ SIGIL_API: `http://127.0.0.1:${cp.httpPort}`, SIGIL_TOKEN_FILE: cp.httpAuth.tokenFile });

const allowGet = (name: string, methods = "GET") =>
  `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata:
  name: ${name}
spec:
  selector:
    matchLabels: { app: api }
  ingress:
    - action: allow
      from:
        - matchLabels: { app: web }
      ports: [8080]
      http:
        methods: [${methods}]
        paths: ["/api/**"]
`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sigil-policy-cli-"));
  policyDir = join(dir, "policies");
  work = join(dir, "work");
  await mkdir(policyDir);
  await mkdir(work);
  await writeFile(join(policyDir, "api.yaml"), allowGet("api-ingress", "GET, POST"));
  cp = await startControlPlane({
    dataDir: join(dir, "cp"),
    policyDir,
    grpc: { host: "127.0.0.1", port: 0 },
    xdsPlaintext: undefined,
    http: { host: "127.0.0.1", port: 0 },
    serverNames: ["localhost"],
    log: pino({ level: "silent" }),
  });
  // Recorded traffic: web's GETs and a POST to the api, allowed when observed.
  const get = { method: "GET", path: "/api/orders/1", status: 200 };
  await cp.flows.append([
    flow({ from: demo.web, to: demo.api, port: 8080, http: get }),
    flow({ from: demo.web, to: demo.api, port: 8080, http: { method: "POST", path: "/api/orders" } }),
  ]);
});

afterAll(async () => {
  await cp?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("sigil policy as code", { timeout: 60_000 }, () => {
  it("validates files, directories and stdin offline, naming file, line, column and field", async () => {
    const good = join(work, "good.yaml");
    await writeFile(good, allowGet("good"));
    const ok = await runSigil(["policy", "validate", "-f", good], {
      env: { SIGIL_API: "http://127.0.0.1:1" },
    });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toBe("1 files valid: 1 policies\n");

    const bad = join(work, "bad", "broken.yaml");
    await mkdir(join(work, "bad"));
    await writeFile(bad, allowGet("broken").replace("action: allow", "action: maybe"));
    await writeFile(join(work, "bad", "twin.yaml"), allowGet("good"));
    await writeFile(join(work, "bad", "also-good.yaml"), allowGet("good"));
    const r = await runSigil(["policy", "validate", "-f", join(work, "bad")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${bad}:9:15: spec.ingress[0].action:`);
    expect(r.stderr).toMatch(
      /twin\.yaml:\d+:\d+: metadata\.name: name "good" is already used at .*also-good\.yaml/,
    );

    const piped = await sigilIn("kind: Nope\n", "policy", "validate", "-f", "-");
    expect(piped.code).toBe(1);
    expect(piped.stderr).toMatch(/stdin\.yaml \(stdin\):1:\d+/);
  });

  it("lists and gets the files as written, from the watched directory and from apply alike", async () => {
    const list = await sigil("policy", "get");
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^NAME\s+POLICIES\s+STATUS\napi\.yaml\s+1\s+in effect\n$/);
    const wide = await sigil("policy", "get", "-o", "wide");
    expect(wide.stdout).toContain("AuthorizationPolicy/api-ingress");
    const one = await sigil("policy", "get", "api.yaml", "-o", "yaml");
    expect(one.stdout).toBe(await readFile(join(policyDir, "api.yaml"), "utf8"));
    const json = JSON.parse((await sigil("policy", "get", "-o", "json")).stdout) as { name: string }[];
    expect(json.map((f) => f.name)).toEqual(["api.yaml"]);
    const missing = await sigil("policy", "get", "nope.yaml");
    expect(missing.code).toBe(5);
    expect(missing.stderr).toContain("no policy file nope.yaml");
  });

  it("diffs: policies added, changed, removed and the recorded flows that would flip; exit 0 only without change", async () => {
    const same = join(work, "api.yaml");
    await writeFile(same, allowGet("api-ingress", "GET, POST"));
    const none = await sigil("policy", "diff", "-f", same);
    expect(none.code, none.stderr).toBe(0);
    expect(none.stdout).toContain("policies: no change");
    expect(none.stdout).toContain("0 would now be denied, 0 would now be allowed");

    // Replacing api.yaml by a file that drops the policy and defines another: POST stops being allowed.
    await writeFile(same, allowGet("api-gets-only"));
    const d = await sigil("policy", "diff", "-f", same);
    expect(d.code, d.stderr).toBe(1);
    expect(d.stdout).toMatch(/\+\s+added\s+AuthorizationPolicy\s+api-gets-only\s+api\.yaml/);
    expect(d.stdout).toMatch(/-\s+removed\s+AuthorizationPolicy\s+api-ingress\s+api\.yaml/);
    expect(d.stdout).toMatch(/ALLOW -> DENY\s+\S+web -> \S+api:8080\s+POST \/api\/orders/);
    const changed = await sigilIn(
      allowGet("api-ingress", "GET, POST, PUT"),
      "policy",
      "diff",
      "-f",
      "-",
      "--name",
      "api.yaml",
      "-o",
      "json",
    );
    expect(changed.code).toBe(1);
    const parsed = JSON.parse(changed.stdout) as {
      changed: { name: string }[];
      simulation: { nowDenied: number };
    };
    expect(parsed.changed.map((c) => c.name)).toEqual(["api-ingress"]);
    expect(parsed.simulation.nowDenied).toBe(0);
  });

  it("simulate exits 4 when verdicts would change, unless --fail-on says otherwise", async () => {
    const file = join(work, "gets.yaml");
    await writeFile(file, allowGet("api-ingress", "GET, POST"));
    const unchanged = await sigil("policy", "simulate", "-f", file);
    expect(unchanged.code, unchanged.stderr).toBe(0);
    await writeFile(file, allowGet("api-ingress", "PUT"));
    const denies = await sigil("policy", "simulate", "-f", file);
    expect(denies.code).toBe(4);
    expect(denies.stderr).toMatch(/observed flows would change verdict/);
    expect((await sigil("policy", "simulate", "-f", file, "--fail-on", "never")).code).toBe(0);
    expect((await sigil("policy", "simulate", "-f", file, "--fail-on", "deny")).code).toBe(4);
    const wider = join(work, "wider.yaml");
    await writeFile(wider, allowGet("api-ingress", "GET, POST, PUT"));
    expect((await sigil("policy", "simulate", "-f", wider, "--fail-on", "deny")).code).toBe(0);
    expect((await sigil("policy", "simulate", "-f", file, "--fail-on", "sometimes")).code).toBe(2);
  });

  it("applies files, directories and stdin into the watched directory; a name in two files is refused before writing", async () => {
    const batch = join(work, "batch");
    await mkdir(batch);
    await writeFile(join(batch, "extra.yaml"), allowGet("extra"));
    await writeFile(join(batch, "more.yml"), allowGet("more"));
    const dirApply = await sigil("policy", "apply", "-f", batch);
    expect(dirApply.code, dirApply.stderr).toBe(0);
    expect(dirApply.stdout).toMatch(/applied extra\.yaml: policy revision \d+\napplied more\.yml/);
    expect(await readFile(join(policyDir, "more.yml"), "utf8")).toBe(allowGet("more"));

    const piped = await sigilIn(allowGet("piped"), "policy", "apply", "-f", "-", "--name", "piped.yaml");
    expect(piped.code, piped.stderr).toBe(0);
    expect((await sigilIn("x", "policy", "apply", "-f", "-")).code).toBe(2);

    // api-ingress lives in api.yaml (the watched directory's own file): defining it again elsewhere is a conflict.
    const twin = join(work, "twin.yaml");
    await writeFile(twin, allowGet("api-ingress"));
    const refused = await sigil("policy", "apply", "-f", twin);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toMatch(
      /twin\.yaml:\d+:\d+: metadata\.name: name "api-ingress" is already used at .*api\.yaml/,
    );
    await expect(readFile(join(policyDir, "twin.yaml"))).rejects.toThrow(/ENOENT/);

    // The latest write wins: apply over a file the directory holds, then the directory's own edit.
    const wider = join(work, "api.yaml");
    await writeFile(wider, allowGet("api-ingress", "GET, POST"));
    expect((await sigil("policy", "apply", "-f", wider)).code).toBe(0);
    expect(await readFile(join(policyDir, "api.yaml"), "utf8")).toBe(allowGet("api-ingress", "GET, POST"));
    await writeFile(join(policyDir, "api.yaml"), allowGet("api-ingress", "DELETE"));
    await cp.policies?.reload();
    expect((await sigil("policy", "get", "api.yaml", "-o", "yaml")).stdout).toBe(
      allowGet("api-ingress", "DELETE"),
    );

    // A policy moving between files of one directory: a.yaml takes "mover" from z.yaml.
    const moving = join(work, "moving");
    await mkdir(moving);
    await writeFile(join(moving, "z.yaml"), allowGet("mover"));
    expect((await sigil("policy", "apply", "-f", join(moving, "z.yaml"))).code).toBe(0);
    await writeFile(join(moving, "a.yaml"), allowGet("mover"));
    await writeFile(join(moving, "z.yaml"), allowGet("stayer"));
    const moved = await sigil("policy", "apply", "-f", moving);
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stdout).toMatch(/^applied z\.yaml: .*\napplied a\.yaml: /);

    const invalid = join(work, "invalid.yaml");
    await writeFile(invalid, "kind: Nope\n");
    const bad = await sigil("policy", "apply", "-f", invalid);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/invalid\.yaml:1:/);
  });

  it("deletes a file and says when there is none", async () => {
    const del = await sigil("policy", "delete", "extra.yaml");
    expect(del.code, del.stderr).toBe(0);
    expect(del.stdout).toMatch(/^deleted extra\.yaml: policy revision \d+\n$/);
    await expect(readFile(join(policyDir, "extra.yaml"))).rejects.toThrow(/ENOENT/);
    expect(cp.policies?.current().documents.map((d) => d.document.metadata.name)).not.toContain("extra");
    const again = await sigil("policy", "delete", "extra.yaml");
    expect(again.code).toBe(5);
    const down = await runSigil(["policy", "delete", "x.yaml", "--api", "http://127.0.0.1:1"], {
      env: env(),
    });
    expect(down.code).toBe(3);
    expect(down.stderr).toMatch(/cannot reach the control plane at http:\/\/127\.0\.0\.1:1/);
  });
});
