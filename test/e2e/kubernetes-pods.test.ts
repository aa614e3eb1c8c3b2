/**
 * Injected pods on real containers: a podman network of the suite's own (198.18.91.0/24), the
 * control plane on the host, and web / api / rogue pods whose YAML went through `sigil inject` (the
 * CLI) and through the admission webhook (a real AdmissionReview over HTTPS), started with
 * `podman kube play`. Shows capture in the pod, mTLS between pods, HTTP policy deciding, rogue
 * refused by identity while sharing the node, the L4 fast path running from the image's bundles,
 * and a label change taking effect both ways. The image is rebuilt only when its bytes would change.
 * The runnable example examples/containers/ runs here too, its own script, pods and policy, on the
 * suite's image, network and control plane.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import jsonPatch from "fast-json-patch";
import type { Pod } from "kubernetes-types/core/v1.js";
import pino from "pino";
import { parse as parseYaml, stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import { injectSettings, SIGIL_VERSION } from "../../inject/settings.ts";
import { admit, parseAdmissionReview } from "../../inject/webhook/admission.ts";
import { startControlPlane, type ControlPlane } from "../../controlplane/control-plane.ts";
import { podmanUnavailable, startPodman, type Podman } from "../support/podman.ts";

const run = promisify(execFile);
const REPO = new URL("../../", import.meta.url).pathname;
const IMAGE = `sigil:${SIGIL_VERSION}`;
const EXAMPLE = join(REPO, "examples/containers/run.sh");
const unavailable = await podmanUnavailable();
if (unavailable) process.stdout.write(`kubernetes-pods: SKIPPED, no container runtime: ${unavailable}\n`);

const POLICY = `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api-ingress }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [{ matchLabels: { app: web } }, { matchLabels: { tier: trusted } }]
      ports: [9090]
      http: { methods: [GET], paths: ["/data"] }
    - action: allow
      from: [{ matchLabels: { app: web } }]
      ports: [7070]
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: api-fast-path }
spec:
  selector: { matchLabels: { app: api } }
  mode: STRICT
  portLevel: { "7070": PERMISSIVE }
---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: callers-egress }
spec:
  selector: { matchExpressions: [{ key: app, operator: In, values: [web, rogue] }] }
  egress:
    - action: allow
      to: [{ matchLabels: { app: api } }]
      ports: [9090, 7070]
`;

const API_APP = `require("http").createServer((q, s) => { s.setHeader("content-type", "application/json"); s.end(JSON.stringify({ path: q.url, xfcc: q.headers["x-forwarded-client-cert"] ?? null })); }).listen(9090); require("net").createServer((c) => c.end("fast")).listen(7070)`;
const IDLE_APP = `require("http").createServer((q, s) => s.end("ok")).listen(8080)`;
const CALL = `fetch(process.argv[1]).then(async (r) => console.log(r.status, await r.text()), (e) => console.log("ERR", e.cause?.code ?? e.message))`;
/** A plain TCP read with a 5 s bound: a handshake the fast path refuses is dropped, never answered. */
const CONNECT = `const c = require("net").connect(7070, process.argv[1]); let got = ""; c.setTimeout(5000, () => { console.log("TIMEOUT"); c.destroy(); }); c.on("data", (d) => (got += d)); c.on("end", () => console.log("READ", got)); c.on("error", (e) => console.log("ERR", e.code));`;
/** Fast-path ports: api serves 7070 on it; web and rogue sign their SYNs to it. */
const FAST_PATH = { "sigil.io/fast-path-ports": "7070" };

function pod(name: string, app: string, port: number, script: string, extraPorts: number[] = []): Pod {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, labels: { app }, annotations: { "sigil.io/http-ports": String(port), ...FAST_PATH } },
    spec: {
      containers: [
        {
          name: "app",
          image: IMAGE,
          imagePullPolicy: "Never",
          command: ["/usr/bin/node", "-e", script],
          ports: [port, ...extraPorts].map((containerPort) => ({ containerPort })),
          securityContext: { runAsUser: 1000, runAsGroup: 1000 },
        },
      ],
    },
  };
}

describe.skipIf(unavailable !== null)("injected pods on podman", () => {
  let podman: Podman;
  let cp: ControlPlane;
  const names = { web: "", api: "", rogue: "" };
  const ip = { web: "", api: "", rogue: "" };
  let exampleEnv: NodeJS.ProcessEnv | undefined;

  /** examples/containers/run.sh on the suite's network and control plane, as a user runs it. */
  async function example(...args: string[]): Promise<string> {
    return (await run(EXAMPLE, args, { env: exampleEnv, timeout: 300_000 })).stdout;
  }

  /** Runs the HTTP client inside a pod's application container (its uid is captured). */
  async function call(from: keyof typeof names, path: string): Promise<string> {
    const out = await podman.podman([
      "exec",
      `${names[from]}-app`,
      "/usr/bin/node",
      "-e",
      CALL,
      `http://${ip.api}:9090${path}`,
    ]);
    return out.trim();
  }

  async function waitReady(name: string): Promise<void> {
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      const logs = await podman.tryPodman(["logs", `${name}-sigil-sidecar`]);
      if (logs.stdout.includes("sigil sidecar ready")) return;
      const state = await podman.tryPodman([
        "inspect",
        "--format",
        "{{.State.Status}}",
        `${name}-sigil-sidecar`,
      ]);
      if (state.stdout.trim() === "exited")
        throw new Error(`${name} sidecar exited:\n${logs.stderr.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`${name} sidecar not ready within 120 s`);
  }

  beforeAll(async () => {
    const started = Date.now();
    podman = await startPodman("k8s", 91);
    try {
      // The script leaves the image alone when its root filesystem is unchanged, and rebuilds it
      // when the code in it changed, so the suite never runs pods of stale code.
      const image = await run(join(REPO, "scripts/build-image.sh"), [], {
        env: podman.env,
        timeout: 600_000,
      });
      const policyDir = join(podman.dir, "policies");
      await mkdir(policyDir);
      await writeFile(join(policyDir, "policy.yaml"), POLICY);
      // Every address, since the pods dial the network's gateway, which exists only once a pod runs.
      cp = await startControlPlane({
        dataDir: join(podman.dir, "cp"),
        policyDir,
        grpc: { host: "0.0.0.0", port: 0 },
        xdsPlaintext: undefined,
        http: { host: "127.0.0.1", port: 0 },
        serverNames: ["localhost"],
        log: pino({ level: "silent" }),
      });
      const prefix = podman.network.replace(/[^a-z0-9]/g, "").slice(-8);
      for (const k of Object.keys(names) as (keyof typeof names)[]) names[k] = `${k}-${prefix}`;
      // .10, .20, .30 are the example's pods.
      ip.web = `${podman.subnetPrefix}.110`;
      ip.api = `${podman.subnetPrefix}.120`;
      ip.rogue = `${podman.subnetPrefix}.130`;
      // The pods reach the control plane at the network's gateway.
      const hostDir = join(podman.dir, "sigil");
      await mkdir(join(hostDir, "bundle"), { recursive: true });
      await writeFile(join(hostDir, "bundle", "bundle.pem"), bundleRootsPem(cp.identity.ca.bundle()));
      for (const [k, name] of Object.entries(names)) {
        const created = await cp.identity.tokens.create({
          name,
          labels: { app: k, "k8s.ns": "default", "k8s.sa": "default" },
          ttlSeconds: 600,
        });
        await mkdir(join(hostDir, "tokens", name), { recursive: true });
        await writeFile(join(hostDir, "tokens", name, "token"), created.token);
      }
      await chmod(podman.dir, 0o755);
      const cpAddress = `${podman.gateway}:${cp.grpc.port}`;
      const flags = [
        "--runtime",
        "podman",
        "--host-dir",
        hostDir,
        "--control-plane",
        cpAddress,
        "--image",
        IMAGE,
        "--image-pull-policy",
        "Never",
      ];

      // web and rogue: through the CLI, as a user pipes YAML through it.
      const raw = [pod(names.web, "web", 8080, IDLE_APP), pod(names.rogue, "rogue", 8080, IDLE_APP)]
        .map((p) => stringify(p))
        .join("---\n");
      const input = join(podman.dir, "callers.yaml");
      await writeFile(input, raw);
      const cli = await run("node", [join(REPO, "bin/sigil.mjs"), "inject", ...flags, "-f", input], {
        timeout: 60_000,
      });
      const [webYaml, rogueYaml] = cli.stdout.split(/^---$/m);

      // api: through the admission webhook's decision on the review an API server sends.
      const apiPod = pod(names.api, "api", 9090, API_APP, [7070]);
      const settings = injectSettings({
        controlPlane: cpAddress,
        image: IMAGE,
        imagePullPolicy: "Never",
        runtime: { kind: "podman", hostDir },
      });
      const review = parseAdmissionReview({
        apiVersion: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        request: {
          uid: "e2e",
          kind: { group: "", version: "v1", kind: "Pod" },
          resource: { group: "", version: "v1", resource: "pods" },
          namespace: "default",
          operation: "CREATE",
          object: apiPod,
        },
      });
      const answer = admit(review, settings).response;
      expect(answer.allowed).toBe(true);
      const ops = JSON.parse(Buffer.from(answer.patch ?? "", "base64").toString()) as jsonPatch.Operation[];
      const apiYaml = stringify(jsonPatch.applyPatch(structuredClone(apiPod), ops, true, false).newDocument);

      expect(parseYaml(webYaml ?? "").spec.containers[0].name).toBe("sigil-sidecar");
      exampleEnv = {
        ...podman.env,
        SIGIL_EXAMPLE_DIR: join(podman.dir, "example"),
        SIGIL_EXAMPLE_NETWORK: podman.network,
        SIGIL_EXAMPLE_SUBNET: podman.subnetPrefix,
        SIGIL_EXAMPLE_CONTROLPLANE: cp.dataDir,
        SIGIL_EXAMPLE_GRPC_PORT: String(cp.grpc.port),
        SIGIL_EXAMPLE_HTTP_PORT: String(cp.httpPort),
      };
      await Promise.all([
        podman.play(apiYaml, ip.api),
        podman.play(webYaml ?? "", ip.web),
        podman.play(rogueYaml ?? "", ip.rogue),
        example("start"),
      ]);
      await Promise.all(Object.values(names).map(waitReady));
      process.stdout.write(
        `kubernetes-pods: ${image.stdout.trim()}, pods ready in ${Math.round((Date.now() - started) / 1000)} s\n`,
      );
    } catch (err) {
      for (const name of Object.values(names).filter(Boolean)) {
        const logs = await podman.tryPodman(["logs", `${name}-sigil-sidecar`]);
        process.stderr.write(`--- ${name} sidecar\n${logs.stdout}${logs.stderr.slice(-3000)}\n`);
      }
      throw err;
    }
  }, 900_000);

  afterAll(async () => {
    // Before the control plane closes: the example takes its policy back from it.
    if (exampleEnv) await example("down").catch((err: Error) => process.stderr.write(`${err.message}\n`));
    await cp?.close();
    await podman?.close();
  }, 180_000);

  it("capture is installed in the pod once: the application's traffic goes to the sidecar, the sidecar's uid is exempt", async () => {
    const nat = await podman.podman([
      "exec",
      "--privileged",
      "--user",
      "0",
      `${names.web}-sigil-sidecar`,
      "iptables-save",
      "-t",
      "nat",
    ]);
    expect(nat).toMatch(/-A OUTPUT -p tcp -j SIGIL_OUTBOUND/);
    expect(nat).toMatch(/--uid-owner 1337 -j RETURN/);
    expect(nat).toMatch(/REDIRECT --to-ports 15001/);
    // The init container ran to completion and stays finished; kept, so a pod restart reruns it.
    for (const name of Object.values(names)) {
      const init = await podman.podman([
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}",
        `${name}-sigil-init`,
      ]);
      expect(init.trim(), name).toBe("exited 0 0");
    }
  });

  it("web reaches api over mTLS: api's sidecar names web's SPIFFE ID to the application", async () => {
    const out = await call("web", "/data");
    expect(out).toMatch(/^200 /);
    const body = JSON.parse(out.slice(4)) as { xfcc: string };
    expect(body.xfcc).toContain(`URI=spiffe://sigil.local/workload/${names.web}`);
  });

  it("HTTP policy decides per request: a path the policy does not allow is refused", async () => {
    expect(await call("web", "/admin")).toMatch(/^403 .*"policy"/);
  });

  it("rogue, on the same node, is refused by identity", async () => {
    expect(await call("rogue", "/data")).toMatch(/^403 /);
  });

  it("examples/containers as its README runs it: web allowed, rogue refused by identity, then let in by a label; down removes only what start made", async () => {
    const stored = async () => ((await cp.policies?.texts()) ?? []).map((t) => basename(t.file));
    expect(await stored()).toContain("sigil-containers-example.yaml");
    const check = await example("check");
    expect(check).toMatch(
      /^web +-> api GET \/data: +200 .*"caller":"spiffe:\/\/sigil.local\/workload\/web"/m,
    );
    expect(check).toMatch(/^web +-> api GET \/admin: +403 /m);
    expect(check).toMatch(/^rogue +-> api GET \/data: +403 /m);

    await example("sigil", "workload", "label", "rogue", "tier=trusted");
    expect(
      await pollUntil(
        60_000,
        () => example("call", "rogue", "/data"),
        (r) => r.startsWith("200"),
      ),
    ).toMatch(/^200 .*workload\/rogue"/);

    await example("down");
    const pods = (await podman.podman(["pod", "ps", "--format", "{{.Name}}"])).split("\n");
    expect(pods).not.toContain("web");
    expect(pods).not.toContain("rogue");
    expect(pods).toContain(names.web);
    expect(existsSync(join(podman.dir, "example"))).toBe(false);
    expect((await podman.tryPodman(["network", "exists", podman.network])).code).toBe(0);
    expect(await stored()).not.toContain("sigil-containers-example.yaml");
  }, 240_000);

  /** Polls `probe` until it returns a value `done` accepts, for at most `ms`; the last value. */
  async function pollUntil<T>(ms: number, probe: () => Promise<T>, done: (v: T) => boolean): Promise<T> {
    const deadline = Date.now() + ms;
    let last = await probe();
    while (!done(last) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      last = await probe();
    }
    return last;
  }

  /** How often rogue's sidecar retired its pooled connections because its own labels changed. */
  async function retirements(): Promise<number> {
    // The sidecar logs to stderr, which podman logs relays on its own stderr.
    const logs = await podman.tryPodman(["logs", `${names.rogue}-sigil-sidecar`]);
    return logs.stderr.split("own labels changed: retiring pooled upstream connections").length - 1;
  }

  it("the L4 fast path runs in the image: web's handshake to api:7070 is signed and accepted, rogue's refused", async () => {
    const connect = async (from: keyof typeof names) =>
      (await podman.podman(["exec", `${names[from]}-app`, "/usr/bin/node", "-e", CONNECT, ip.api])).trim();
    expect(await connect("web")).toBe("READ fast");
    expect(await connect("rogue")).toMatch(/^(TIMEOUT|ERR)/);
    const metrics = await podman.podman([
      "exec",
      `${names.api}-sigil-sidecar`,
      "/usr/bin/node",
      "-e",
      `fetch("http://127.0.0.1:15000/stats/prometheus").then(async (r) => console.log(await r.text()))`,
    ]);
    const count = (kind: string, outcome: string): number =>
      Number(
        new RegExp(`sigil_fastpath_handshakes_total\\{kind="${kind}",outcome="${outcome}"\\} (\\d+)`).exec(
          metrics,
        )?.[1] ?? 0,
      );
    expect(count("syn", "accepted"), metrics).toBeGreaterThanOrEqual(1);
    expect(count("syn", "denied"), metrics).toBeGreaterThanOrEqual(1);
  }, 120_000);

  it("the control-plane image (examples/kubernetes' Deployment) starts as its uid on the suite's network and serves /api/version", async () => {
    const built = await run(join(REPO, "scripts/build-controlplane-image.sh"), [], {
      env: podman.env,
      timeout: 600_000,
    });
    process.stdout.write(`kubernetes-pods: ${built.stdout.trim()}\n`);
    const name = `cp-${names.api}`;
    const address = `${podman.subnetPrefix}.5`;
    try {
      await podman.podman([
        ...["run", "-d", "--name", name, "--network", podman.network, "--ip", address, "--read-only"],
        ...["-v", "/var/lib/sigil", `sigil-controlplane:${SIGIL_VERSION}`],
        ...["--data-dir=/var/lib/sigil", "--http-host=0.0.0.0", "--http-tls=off"],
      ]);
      const version = (): Promise<string> =>
        fetch(`http://${address}:15080/api/version`).then(
          (r) => r.text(),
          (e: Error) => `unreachable: ${e.message}`,
        );
      expect(JSON.parse(await pollUntil(60_000, version, (v) => v.startsWith("{")))).toEqual({
        version: SIGIL_VERSION,
        node: process.versions.node,
      });
      expect((await podman.podman(["top", name, "user"])).split("\n").slice(1).join(" ")).toMatch(
        /1000|sigil/,
      );
    } finally {
      await podman.tryPodman(["rm", "-f", "-v", name]);
    }
  }, 240_000);

  it("a label change at the control plane takes effect both ways: rogue labelled tier=trusted is allowed, then refused once the label is gone", async () => {
    const rogueId = `spiffe://sigil.local/workload/${names.rogue}`;
    // A refused call first, so rogue's sidecar holds a pooled mTLS connection to api made with the
    // certificate that lacks the label: the change must not be hidden behind it.
    expect(await call("rogue", "/data")).toMatch(/^403 /);
    const before = await retirements();

    await cp.identity.registry.setStaticLabels(rogueId, { tier: "trusted" });
    expect(
      await pollUntil(60_000, retirements, (n) => n > before),
      "rogue's sidecar renewed with tier=trusted and retired its pooled connections",
    ).toBe(before + 1);
    expect(
      await pollUntil(
        30_000,
        () => call("rogue", "/data"),
        (r) => r.startsWith("200"),
      ),
    ).toMatch(/^200 /);

    await cp.identity.registry.setStaticLabels(rogueId, {});
    expect(
      await pollUntil(60_000, retirements, (n) => n > before + 1),
      "rogue's sidecar renewed without tier=trusted and retired its pooled connections",
    ).toBe(before + 2);
    expect(
      await pollUntil(
        30_000,
        () => call("rogue", "/data"),
        (r) => r.startsWith("403"),
      ),
    ).toMatch(/^403 /);
  }, 240_000);
});
