import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Container, Pod, PodSpec } from "kubernetes-types/core/v1.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sidecarOptions, type SidecarFlags } from "../../cmd/sigil/commands/sidecar.ts";
import { sigilProgram } from "../../cmd/sigil/program.ts";
import { InjectError } from "../../inject/errors.ts";
import { injectSettings } from "../../inject/settings.ts";
import { injectObject } from "../../inject/workloads.ts";

const k8s = injectSettings({ controlPlane: "cp.sigil-system.svc:15010" });
const podman = injectSettings({ runtime: { kind: "podman", hostDir: "/srv/sigil" } });

const pod = (annotations: Record<string, string>): Pod => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name: "web", namespace: "shop", annotations },
  spec: {
    containers: [{ name: "app", image: "app:1", ports: [{ containerPort: 8080 }, { containerPort: 9090 }] }],
  },
});

const SIGN_IN = { "sigil.io/user-access-ports": "8080", "sigil.io/user-access-config": "web-sso" };

const sidecarOf = (spec: PodSpec): Container => {
  const found = spec.containers.find((c) => c.name === "sigil-sidecar");
  if (!found) throw new Error("no sidecar");
  return found;
};

function injected(object: Pod, settings = k8s): PodSpec {
  return (injectObject(structuredClone(object), settings, "document 1").object as Pod).spec as PodSpec;
}

function refusal(object: object): InjectError {
  try {
    injectObject(object, k8s, "document 1 (Pod shop/web)");
  } catch (err) {
    if (err instanceof InjectError) return err;
    throw err;
  }
  throw new Error("expected the injection to be refused");
}

class Parsed extends Error {
  constructor(readonly flags: SidecarFlags) {
    super("parsed");
  }
}

/** The sidecar's flags as `sigil sidecar` parses the injected command line. */
async function parseSidecarArgs(args: readonly string[]): Promise<SidecarFlags> {
  const program = await sigilProgram();
  program.hook("preAction", (_program, action) => {
    throw new Parsed(action.opts() as SidecarFlags);
  });
  try {
    await program.parseAsync(["sidecar", ...args], { from: "user" });
  } catch (err) {
    if (err instanceof Parsed) return err.flags;
    throw err;
  }
  throw new Error("sigil sidecar did not run");
}

describe("sigil.io/user-access-ports: the sidecar serves sign-in on the pod's ports", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sigil-user-access-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("kubernetes: flags for the ports and the provider file, the Secret mounted read-only in the sidecar alone", () => {
    const spec = injected(pod(SIGN_IN));
    const sidecar = sidecarOf(spec);
    expect(sidecar.args).toContain("--user-access-ports=8080");
    expect(sidecar.args).toContain("--user-access-config=/var/run/sigil/user-access/user-access.yaml");
    expect(sidecar.volumeMounts).toContainEqual({
      name: "sigil-user-access",
      mountPath: "/var/run/sigil/user-access",
      readOnly: true,
    });
    expect(spec.volumes).toContainEqual({ name: "sigil-user-access", secret: { secretName: "web-sso" } });
    const app = spec.containers.find((c) => c.name === "app");
    expect(app?.volumeMounts).toBeUndefined();
    expect(spec.initContainers?.[0]?.args?.join(" ")).not.toMatch(/user-access/);
  });

  it("podman: the provider settings come from the host directory named after the annotation", () => {
    const spec = injected(pod(SIGN_IN), podman);
    expect(spec.volumes).toContainEqual({
      name: "sigil-user-access",
      hostPath: { path: "/srv/sigil/user-access/web-sso", type: "Directory" },
    });
  });

  it("without the annotations nothing of user access is added", () => {
    const spec = injected(pod({}));
    expect(sidecarOf(spec).args?.join(" ")).not.toMatch(/user-access/);
    expect(spec.volumes?.map((v) => v.name)).not.toContain("sigil-user-access");
  });

  it("injecting twice gives what injecting once gives", () => {
    const once = injectObject(pod(SIGN_IN), k8s, "document 1").object;
    expect(injectObject(structuredClone(once), k8s, "document 1").object).toEqual(once);
  });

  it("the injected command line is one `sigil sidecar` accepts, with the Secret's file as its userAccess", async () => {
    const file = join(dir, "user-access.yaml");
    await writeFile(
      file,
      [
        "issuer: https://sso.example.com/realms/shop",
        "clientId: web",
        "redirectUri: https://web.example.com/.sigil/callback",
        `sessionKeyFile: ${join(dir, "session-key")}`,
      ].join("\n"),
    );
    const args = (sidecarOf(injected(pod(SIGN_IN))).args ?? []).map((a) =>
      a.startsWith("--user-access-config=")
        ? `--user-access-config=${file}`
        : a.startsWith("--service-account-token-file=")
          ? `--service-account-token-file=${join(dir, "token")}`
          : a,
    );
    const flags = await parseSidecarArgs(args);
    const options = await sidecarOptions(flags);
    expect(options.userAccess).toMatchObject({
      ports: [8080],
      clientId: "web",
      issuer: "https://sso.example.com/realms/shop",
    });
    expect(options.appPort).toEqual([8080, 9090]);

    await writeFile(file, "issuer: https://sso.example.com/realms/shop\nfastPathFailOpen: true\n");
    await expect(sidecarOptions(flags)).rejects.toThrow(/userAccess/);
  });
});

describe("sigil.io/user-access-ports: bad annotations are refused naming the field", () => {
  const ports = 'metadata.annotations["sigil.io/user-access-ports"]';
  const config = 'metadata.annotations["sigil.io/user-access-config"]';
  it.each([
    [
      { "sigil.io/user-access-ports": "8080,x", "sigil.io/user-access-config": "web-sso" },
      ports,
      /"x" is not a port/,
    ],
    [
      { "sigil.io/user-access-ports": "8080,8080", "sigil.io/user-access-config": "web-sso" },
      ports,
      /listed twice/,
    ],
    [{ "sigil.io/user-access-ports": "8080" }, ports, /names no OpenID Connect provider/],
    [{ "sigil.io/user-access-config": "web-sso" }, config, /names no port/],
    [
      { "sigil.io/user-access-ports": "8080", "sigil.io/user-access-config": "../etc" },
      config,
      /not a Secret name/,
    ],
    [
      { "sigil.io/user-access-ports": "7000", "sigil.io/user-access-config": "web-sso" },
      ports,
      /not a TCP port the application containers declare \(8080, 9090\)/,
    ],
    [
      { ...SIGN_IN, "sigil.io/fast-path-ports": "8080" },
      'metadata.annotations["sigil.io/fast-path-ports"]',
      /also in sigil.io\/user-access-ports.*choose one/,
    ],
  ])("%j", (annotations, field, reason) => {
    const err = refusal(pod(annotations));
    expect(err.field).toBe(field);
    expect(err.reason).toMatch(reason);
  });
});
