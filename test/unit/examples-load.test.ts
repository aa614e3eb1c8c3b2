/**
 * Every configuration file and systemd unit under examples/ is loaded by the program that consumes
 * it, as shipped: policies by the control plane's policy store, sidecar settings by `sigil sidecar`'s
 * loader, capture settings by `sigil init`'s, the units' command lines by the `sigil` CLI's own
 * parser, the Kubernetes ConfigMap's files by the control plane's loaders and the example app by the
 * injector. A new file under examples/ with no loader here fails the first case.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { exportJWK, generateKeyPair } from "jose";
import pino from "pino";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initRequest, runInit } from "../../cmd/sigil/commands/init.ts";
import { sidecarOptions } from "../../cmd/sigil/commands/sidecar.ts";
import type { SidecarFlags } from "../../cmd/sigil/commands/sidecar.ts";
import { sigilProgram } from "../../cmd/sigil/program.ts";
import { readKubernetesAttestorConfig } from "../../controlplane/attestation/kubernetes.ts";
import { PolicyStore } from "../../controlplane/policy-store/store.ts";
import { injectYaml } from "../../inject/documents.ts";
import { parseWebhookConfig } from "../../inject/webhook/config.ts";
import { parseAgentOptions, readAgentConfigFile } from "../../sidecar/agent/options.ts";
import type { NameLookup } from "../../sidecar/capture/load-config.ts";
import { execArgv, readSystemdUnit, unitEnvironment } from "../support/systemd-unit.ts";
import type { SystemdUnit } from "../support/systemd-unit.ts";

const EXAMPLES = fileURLToPath(new URL("../../examples/", import.meta.url));
const VM = join(EXAMPLES, "vm");

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else out.push(relative(EXAMPLES, path));
  }
  return out.sort();
}

/** Code and prose: run or read, never loaded as settings. */
const NOT_CONFIGURATION = /\.(ts|md|proto|sh)$/;

/** Which program consumes each configuration file (by path under examples/). */
const CONSUMERS: readonly { readonly files: RegExp; readonly consumer: string }[] = [
  {
    files: /^(policies|demo\/policies)\/[^/]+\.yaml$|^(user-access|containers)\/policy\.yaml$/,
    consumer: "policy store",
  },
  { files: /^(vm|user-access)\/sidecar\.yaml$/, consumer: "sigil sidecar --config" },
  { files: /^vm\/capture\.yaml$/, consumer: "sigil init --config" },
  { files: /^vm\/[^/]+\.service$/, consumer: "systemd unit" },
  { files: /^kubernetes\/[^/]+\.yaml$/, consumer: "Kubernetes manifest" },
  // containers-example.test.ts injects them; the pod suite runs them with run.sh under that podman config.
  { files: /^containers\/pods\.yaml$/, consumer: "sigil inject, then podman kube play" },
  { files: /^containers\/containers\.conf$/, consumer: "podman (CONTAINERS_CONF in run.sh)" },
  // Grafana: observability-dashboard.test.ts parses every query with promtool and checks its metrics.
  { files: /^observability\/[^/]+\.dashboard\.json$/, consumer: "Grafana dashboard" },
];

/**
 * The users the VM example creates with useradd, as this host's name service would answer once they
 * exist (the test host has no such users): names stay names in the files, as shipped.
 */
const VM_USERS: Readonly<Record<string, number>> = { "sigil-proxy": 1337, app: 2000 };
const vmNames: NameLookup = (database, name) => {
  const id = VM_USERS[name];
  return id === undefined
    ? Promise.reject(new Error(`the VM example creates no ${database} entry "${name}"`))
    : Promise.resolve(id);
};

/** Where the VM README installs a file (`/etc/sigil/<name>`) → the example file. */
function shipped(installed: string): string {
  const name = /^\/etc\/sigil\/([^/]+)$/.exec(installed)?.[1];
  if (name === undefined) throw new Error(`${installed} is not a file the VM example installs`);
  return join(VM, name);
}

class Parsed extends Error {
  constructor(
    readonly command: string,
    readonly flags: Record<string, unknown>,
    readonly givenOnCli: (name: string) => boolean,
  ) {
    super(`parsed ${command}`);
  }
}

/** A unit's `Exec*=` line through the `sigil` CLI's parser; the command's action never runs. */
async function parseSigil(unit: SystemdUnit, key: "ExecStart" | "ExecStop"): Promise<Parsed> {
  let argv = execArgv(unit.get("Service", key) ?? "");
  if (argv[0] === "/usr/bin/env") argv = argv.slice(1);
  expect(argv[0], `${unit.file} ${key}`).toBe("sigil");
  const program = await sigilProgram();
  program.hook("preAction", (_program, action) => {
    throw new Parsed(action.name(), action.opts(), (name) => action.getOptionValueSource(name) === "cli");
  });
  try {
    await program.parseAsync(argv.slice(1), { from: "user" });
  } catch (err) {
    if (err instanceof Parsed) return err;
    throw err;
  }
  throw new Error(`${unit.file} ${key}: no sigil command ran`);
}

describe("examples/", () => {
  let files: string[];
  let dir: string;

  beforeAll(async () => {
    files = await filesUnder(EXAMPLES);
    dir = await mkdtemp(join(tmpdir(), "sigil-examples-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("names the program that consumes every configuration file and unit", () => {
    const configuration = files.filter((f) => !NOT_CONFIGURATION.test(f));
    expect(configuration.length).toBeGreaterThanOrEqual(15);
    expect(configuration.filter((f) => !CONSUMERS.some((c) => c.files.test(f)))).toEqual([]);
  });

  it("every policy file loads into the control plane's policy store with no error", async () => {
    const policies = files.filter((f) => CONSUMERS[0]?.files.test(f));
    expect(policies.length).toBeGreaterThanOrEqual(6);
    for (const file of policies) {
      const one = await mkdtemp(join(dir, "policy-"));
      await writeFile(join(one, file.replaceAll("/", "-")), await readFile(join(EXAMPLES, file)));
      const store = await PolicyStore.open({
        directory: one,
        watch: false,
        logger: pino({ level: "silent" }),
      });
      try {
        expect(store.current().errors, file).toEqual([]);
        expect(store.current().documents.length, file).toBeGreaterThan(0);
      } finally {
        store.close();
      }
    }
  });

  it("every sidecar settings file passes `sigil sidecar`'s validation", async () => {
    for (const file of ["user-access/sidecar.yaml", "vm/sidecar.yaml"]) {
      const path = join(EXAMPLES, file);
      const options = parseAgentOptions(await readAgentConfigFile(path), path);
      expect(options.mode, file).toBe("captured");
      expect(options.appPort, file).toEqual([8080]);
    }
  });

  describe("vm/: the units' command lines, with the settings they name", () => {
    const unit = (name: string): SystemdUnit => readSystemdUnit(join(VM, name));

    it("sigil-init.service installs capture.yaml on start and removes it on stop", async () => {
      const init = unit("sigil-init.service");
      const env = unitEnvironment(init);
      for (const [key, expected] of [
        ["ExecStart", "install"],
        ["ExecStop", "uninstall"],
      ] as const) {
        const parsed = await parseSigil(init, key);
        expect(parsed.command).toBe("init");
        const request = initRequest(parsed.flags, env, parsed.givenOnCli);
        expect(request.action, key).toBe(expected);
        expect(request.sources.configFile).toBe("/etc/sigil/capture.yaml");
        const shown = await runInit(
          { ...request.sources, configFile: shipped("/etc/sigil/capture.yaml"), lookupName: vmNames },
          "dry-run",
          undefined,
        );
        expect(shown.config).toMatchObject({
          mode: "redirect",
          proxyUid: VM_USERS["sigil-proxy"],
          proxyGid: VM_USERS["sigil-proxy"],
          captureUids: [VM_USERS.app],
          inboundPorts: [8080],
        });
        expect(shown.output).toMatch(/--uid-owner 2000/);
      }
    });

    it("sigil-sidecar.service runs the sidecar with sidecar.yaml, which names the app's process by its attributes", async () => {
      const sidecarUnit = unit("sigil-sidecar.service");
      const app = unit("app.service");
      const parsed = await parseSigil(sidecarUnit, "ExecStart");
      expect(parsed.command).toBe("sidecar");
      const flags = parsed.flags as SidecarFlags;
      expect(flags.config).toBe("/etc/sigil/sidecar.yaml");
      const options = await sidecarOptions({ ...flags, config: shipped(flags.config as string) });

      const shown = await runInit(
        {
          configFile: shipped("/etc/sigil/capture.yaml"),
          env: {},
          flags: {},
          givenOnCli: () => false,
          lookupName: vmNames,
        },
        "dry-run",
        undefined,
      );
      // The sidecar listens where capture sends the traffic, and runs as the user capture exempts.
      expect(options.mode).toBe("captured");
      expect(options.outboundPort).toBe(shown.config.outboundPort);
      expect(options.inboundPort).toBe(shown.config.inboundPort);
      expect(VM_USERS[sidecarUnit.get("Service", "User") as string]).toBe(shown.config.proxyUid);
      expect(VM_USERS[sidecarUnit.get("Service", "Group") as string]).toBe(shown.config.proxyGid);
      // The workload is the process app.service starts: its user, its executable, its port.
      const appArgv = execArgv(app.get("Service", "ExecStart") ?? "");
      expect(options.workloadUid).toBe(app.get("Service", "User"));
      expect(VM_USERS[String(options.workloadUid)]).toBe(shown.config.captureUids[0]);
      expect(options.workloadExe).toBe(appArgv[0]);
      expect(options.workloadPid).toBeUndefined();
      expect(options.appPort).toEqual(shown.config.inboundPorts);
      expect(appArgv).toContain(String(options.appPort[0]));
      // A restart renews with the kept SVID: its directory is under the unit's own state directory.
      expect(options.identityDir).toBe(`/var/lib/${sidecarUnit.get("Service", "StateDirectory")}/identity`);
      // Fail closed: neither the sidecar nor the application runs without the capture rules.
      for (const u of [sidecarUnit, app])
        expect(u.get("Unit", "Requires"), u.file).toBe("sigil-init.service");
    });
  });

  describe("kubernetes/: manifests, with the files the control plane reads from its ConfigMap", () => {
    let objects: {
      file: string;
      object: { kind: string; metadata: { name: string }; data?: Record<string, string> };
    }[];

    beforeAll(async () => {
      objects = [];
      for (const file of files.filter((f) => f.startsWith("kubernetes/") && f.endsWith(".yaml"))) {
        for (const doc of parseAllDocuments(await readFile(join(EXAMPLES, file), "utf8"))) {
          expect(doc.errors, file).toEqual([]);
          objects.push({ file, object: doc.toJS() as (typeof objects)[number]["object"] });
        }
      }
    });

    /** The files the control plane's Deployment mounts from its ConfigMap. */
    const controlPlaneFiles = (): Record<string, string> =>
      objects.find((o) => o.object.metadata.name === "sigil-controlplane-config")?.object.data ?? {};
    const controlPlaneWebhook = () =>
      parseWebhookConfig(parseYaml(controlPlaneFiles()["webhook.yaml"] ?? ""), "sigil.local", "webhook.yaml");

    it("the control plane's webhook and cluster-attestation files load with its loaders", async () => {
      const webhook = controlPlaneWebhook();
      expect(webhook.port).toBe(15443);
      // Mounted as in the Deployment: the JWKS is the cluster's (`kubectl get --raw /openid/v1/jwks`).
      const { publicKey } = await generateKeyPair("RS256");
      const jwks = join(dir, "jwks.json");
      await writeFile(jwks, JSON.stringify({ keys: [await exportJWK(publicKey)] }));
      const attestation = join(dir, "kubernetes-attestation.yaml");
      const text = controlPlaneFiles()["kubernetes-attestation.yaml"] ?? "";
      expect(text).toContain("jwksFile: /etc/sigil/jwks/jwks.json");
      await writeFile(attestation, text.replace("/etc/sigil/jwks/jwks.json", jwks));
      // In the pod, the API server's address comes from the environment the kubelet sets.
      const attestor = await readKubernetesAttestorConfig(attestation, {
        KUBERNETES_SERVICE_HOST: "10.96.0.1",
      });
      expect(attestor.apiServer).toMatchObject({
        url: "https://10.96.0.1:443",
        tokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token",
        whenUnavailable: "refuse",
      });
      const runtime = webhook.settings.runtime;
      expect(runtime.kind).toBe("kubernetes");
      if (runtime.kind === "kubernetes") expect(attestor.audiences).toContain(runtime.tokenAudience);
    });

    it("the example app goes through the injector", async () => {
      const webhook = controlPlaneWebhook();
      const file = "kubernetes/30-example-app.yaml";
      const out = injectYaml(await readFile(join(EXAMPLES, file), "utf8"), webhook.settings, file);
      expect(out.report.some((r) => r.outcome === "injected")).toBe(true);
    });
  });
});
