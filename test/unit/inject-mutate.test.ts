import type { Container, Pod, PodSpec, PodTemplateSpec } from "kubernetes-types/core/v1.js";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { injectYaml } from "../../inject/documents.ts";
import { InjectError } from "../../inject/errors.ts";
import { injectSettings, SIGIL_VERSION } from "../../inject/settings.ts";
import { injectObject } from "../../inject/workloads.ts";
import { hex, MARK_MASK } from "../../sidecar/fastpath/marks.ts";

const k8s = injectSettings({ controlPlane: "cp.sigil-system.svc:15010" });
const podman = injectSettings({ runtime: { kind: "podman", hostDir: "/srv/sigil" } });

const app = (extra: Partial<Container> = {}): Container => ({
  name: "app",
  image: "registry.example/app:1",
  ports: [
    { containerPort: 8080 },
    { containerPort: 9090, protocol: "TCP" },
    { containerPort: 53, protocol: "UDP" },
  ],
  ...extra,
});

const podSpec = (extra: Partial<PodSpec> = {}): PodSpec => ({ containers: [app()], ...extra });
const template = (annotations: Record<string, string> = {}, spec: PodSpec = podSpec()) => ({
  metadata: { labels: { app: "web" }, annotations },
  spec,
});

/** One object of every supported kind, with the path to its pod template. */
const KINDS: {
  kind: string;
  apiVersion: string;
  build: (t: ReturnType<typeof template>) => object;
  tpl: (o: unknown) => PodTemplateSpec;
}[] = [
  {
    kind: "Pod",
    apiVersion: "v1",
    build: (t) => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "web", namespace: "shop", ...t.metadata },
      spec: t.spec,
    }),
    tpl: (o) => o as Pod,
  },
  ...(["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"] as const).map((kind) => ({
    kind,
    apiVersion: "apps/v1",
    build: (t: ReturnType<typeof template>) => ({
      apiVersion: "apps/v1",
      kind,
      metadata: { name: "web", namespace: "shop" },
      spec: { selector: { matchLabels: { app: "web" } }, template: t },
    }),
    tpl: (o: unknown) => (o as { spec: { template: PodTemplateSpec } }).spec.template,
  })),
  {
    kind: "Job",
    apiVersion: "batch/v1",
    build: (t) => ({
      apiVersion: "batch/v1",
      kind: "Job",
      metadata: { name: "once" },
      spec: { template: { ...t, spec: { ...t.spec, restartPolicy: "Never" } } },
    }),
    tpl: (o) => (o as { spec: { template: PodTemplateSpec } }).spec.template,
  },
  {
    kind: "CronJob",
    apiVersion: "batch/v1",
    build: (t) => ({
      apiVersion: "batch/v1",
      kind: "CronJob",
      metadata: { name: "nightly" },
      spec: { schedule: "0 3 * * *", jobTemplate: { spec: { template: t } } },
    }),
    tpl: (o) =>
      (o as { spec: { jobTemplate: { spec: { template: PodTemplateSpec } } } }).spec.jobTemplate.spec
        .template,
  },
];

function inject(
  object: unknown,
  settings = k8s,
): Pod & { spec: PodSpec; metadata: { annotations: Record<string, string> } } {
  return injectObject(object, settings, "document 1").object as Pod & {
    spec: PodSpec;
    metadata: { annotations: Record<string, string> };
  };
}

function refusal(object: unknown, settings = k8s): InjectError {
  try {
    injectObject(object, settings, "document 1");
  } catch (err) {
    expect(err).toBeInstanceOf(InjectError);
    return err as InjectError;
  }
  throw new Error("expected the injection to be refused");
}

const container = (spec: PodSpec, name: string): Container => {
  const found = [...(spec.initContainers ?? []), ...spec.containers].find((c) => c.name === name);
  if (!found) throw new Error(`no container ${name}`);
  return found;
};

describe("sigil inject: every supported kind", () => {
  for (const k of KINDS) {
    it(`${k.kind}: capture init container first, sidecar, volumes, application untouched`, () => {
      const original = k.build(template({ "sigil.io/http-ports": "8080" }));
      const before = structuredClone(original);
      const out = inject(original);
      expect(original).toEqual(before);
      const t = k.tpl(out);
      const spec = t.spec as PodSpec;
      const meta = t.metadata ?? {};
      expect(spec.initContainers?.[0]?.name).toBe("sigil-init");
      expect(spec.containers.map((c) => c.name)).toEqual(["sigil-sidecar", "app"]);
      expect(container(spec, "app")).toEqual(app());
      expect(spec.volumes?.map((v) => v.name)).toEqual(["sigil-bundle", "sigil-token", "sigil-tmp"]);
      expect(meta.annotations?.["sigil.io/injected"]).toBe(SIGIL_VERSION);
      expect(meta.labels).toEqual({ app: "web" });
      const args = container(spec, "sigil-sidecar").args ?? [];
      expect(args).toContain(k.kind === "Pod" ? "--workload-name=web" : "--workload-name=$(SIGIL_POD_NAME)");
      expect(args).toContain("--app-port=8080,9090");
      expect(args).toContain("--http-ports=8080");
      expect(args).toContain("--control-plane=cp.sigil-system.svc:15010");
    });

    it(`${k.kind}: injecting twice gives what injecting once gives`, () => {
      const once = inject(k.build(template({ "sigil.io/exclude-outbound-cidrs": "10.0.0.0/8" })));
      expect(inject(once)).toEqual(once);
    });
  }

  it("the init container is root with NET_ADMIN and NET_RAW only, and carries the exclusions", () => {
    const out = inject(
      KINDS[0]!.build(
        template({
          "sigil.io/exclude-inbound-ports": "9090",
          "sigil.io/exclude-outbound-ports": "5432, 6379",
          "sigil.io/exclude-outbound-cidrs": "169.254.169.254/32,fd00::/8",
        }),
      ),
    );
    const init = container(out.spec, "sigil-init");
    expect(init.securityContext).toMatchObject({
      runAsUser: 0,
      privileged: false,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"], add: ["NET_ADMIN", "NET_RAW"] },
    });
    expect(init.command?.at(-1)).toBe("init");
    expect(init.args).toEqual([
      "--proxy-uid=1337",
      "--inbound-port=15006",
      "--outbound-port=15001",
      "--exclude-inbound-ports=9090",
      "--exclude-outbound-ports=5432,6379",
      "--exclude-outbound-cidrs=169.254.169.254/32,fd00::/8",
    ]);
  });

  it("the sidecar runs as the uid capture exempts, read-only, no capabilities, with a readiness probe and resources", () => {
    const out = inject(KINDS[0]!.build(template()));
    const sidecar = container(out.spec, "sigil-sidecar");
    expect(sidecar.securityContext).toEqual({
      runAsUser: 1337,
      runAsGroup: 1337,
      runAsNonRoot: true,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      privileged: false,
      capabilities: { drop: ["ALL"] },
    });
    expect(sidecar.readinessProbe?.exec?.command).toContain("ready");
    // V8 flags on the command line: Node refuses --single-threaded-gc in NODE_OPTIONS.
    expect(sidecar.command).toEqual([
      "/usr/bin/node",
      "--max-semi-space-size=1",
      "--single-threaded-gc",
      "/opt/sigil/app/sigil.mjs",
      "sidecar",
    ]);
    expect(sidecar.resources?.limits?.memory).toBe("256Mi");
    expect(sidecar.args).toContain("--service-account-token-file=/var/run/sigil/token/token");
    expect(sidecar.args?.some((arg) => arg.startsWith("--identity-dir"))).toBe(false);
    const token = out.spec.volumes?.find((v) => v.name === "sigil-token");
    expect(token?.projected?.sources?.[0]?.serviceAccountToken).toEqual({
      audience: "sigil",
      expirationSeconds: 3600,
      path: "token",
    });
  });

  it("fast-path ports give the sidecar NET_ADMIN for its queues, and capture the fast path's mark field", () => {
    const out = inject(KINDS[0]!.build(template({ "sigil.io/fast-path-ports": "9090" })));
    const sidecar = container(out.spec, "sigil-sidecar");
    expect(sidecar.args).toContain("--fast-path-ports=9090");
    expect(sidecar.securityContext?.capabilities?.add).toEqual(["NET_ADMIN"]);
    const init = out.spec.initContainers?.find((c) => c.name === "sigil-init");
    expect(init?.args).toContain(`--fast-path-mark-mask=${hex(MARK_MASK)}`);
    const plain = inject(KINDS[0]!.build(template()));
    expect(plain.spec.initContainers?.[0]?.args?.join(" ")).not.toContain("fast-path");
  });

  it("podman: host directories, a join token per pod, and podman's init-container annotation", () => {
    const out = inject(KINDS[0]!.build(template()), podman);
    expect(out.metadata.annotations["io.podman.annotations.init.container.type"]).toBe("always");
    expect(out.spec.volumes?.slice(0, 2)).toEqual([
      { name: "sigil-bundle", hostPath: { path: "/srv/sigil/bundle", type: "Directory" } },
      { name: "sigil-token", hostPath: { path: "/srv/sigil/tokens/web", type: "Directory" } },
    ]);
    // podman makes an emptyDir a named volume shared by name: each pod's scratch space is its own.
    expect(out.spec.volumes?.[2]?.name).toBe("sigil-tmp-web");
    expect(container(out.spec, "sigil-sidecar").volumeMounts).toContainEqual({
      name: "sigil-tmp-web",
      mountPath: "/tmp",
    });
    expect(container(out.spec, "sigil-sidecar").args).toEqual(
      expect.arrayContaining([
        "--join-token-file=/var/run/sigil/token/token",
        "--identity-dir=/tmp/identity",
      ]),
    );
    // podman 4 would publish declared ports on the host: they move to an annotation the sidecar reads.
    expect(container(out.spec, "app").ports).toBeUndefined();
    expect(out.metadata.annotations["sigil.io/app-ports"]).toBe("8080,9090");
    expect(container(out.spec, "sigil-sidecar").args).toContain("--app-port=8080,9090");
    expect(inject(out, podman)).toEqual(out);
  });

  it("podman: a pod that restarts Always (or says nothing) restarts OnFailure, so the finished init container is not restarted", () => {
    const policyOf = (restartPolicy?: string) =>
      inject(KINDS[0]!.build(template({}, podSpec(restartPolicy ? { restartPolicy } : {}))), podman).spec
        .restartPolicy;
    expect(policyOf()).toBe("OnFailure");
    expect(policyOf("Always")).toBe("OnFailure");
    expect(policyOf("OnFailure")).toBe("OnFailure");
    expect(policyOf("Never")).toBe("Never");
    expect(
      inject(KINDS[0]!.build(template({}, podSpec({ restartPolicy: "Always" })))).spec.restartPolicy,
    ).toBe("Always");
  });

  it("sigil.io/inject: disabled leaves the object as it is; pod-less kinds pass through", () => {
    const off = KINDS[1]!.build(template({ "sigil.io/inject": "disabled" }));
    expect(injectObject(off, k8s, "d").outcome).toBe("skipped");
    expect(inject(off)).toBe(off);
    const svc = { apiVersion: "v1", kind: "Service", metadata: { name: "web" }, spec: {} };
    expect(injectObject(svc, k8s, "d")).toEqual({ object: svc, outcome: "passed-through" });
  });
});

describe("sigil inject: YAML streams", () => {
  const stream = `apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]}
---
`;

  it("injects each document in order, and the output injected again is the same text", () => {
    const once = injectYaml(stream, k8s, "app.yaml");
    expect(once.report).toEqual([
      { index: 1, object: "Service web", outcome: "passed-through" },
      { index: 2, object: "Deployment shop/web", outcome: "injected" },
    ]);
    const docs = parseAllDocuments(once.yaml) as ReturnType<typeof parseAllDocuments> & unknown[];
    expect(docs.length).toBe(2);
    expect(injectYaml(once.yaml, k8s, "again").yaml).toBe(once.yaml);
  });

  it.each([
    ["not YAML", "kind: Pod\n  bad: [", /app\.yaml document 1 \(line \d+\): not YAML/],
    ["no object", "---\n", /app\.yaml: no Kubernetes object/],
    ["a scalar", "just text", /app\.yaml document 1: not a Kubernetes object/],
    ["no kind", "apiVersion: v1\nmetadata: {name: x}", /document 1: kind: missing/],
    [
      "unknown kind",
      "apiVersion: example.io/v1\nkind: Widget\nmetadata: {name: w}",
      /document 1 \(Widget w\): kind: unknown kind "Widget"/,
    ],
    [
      "the second document is bad",
      `${stream.replace(/---\n$/, "")}---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n`,
      /app\.yaml document 3 \(Pod p\): spec: missing/,
    ],
  ])("%s is refused naming document, field and reason", (_, text, message) => {
    expect(() => injectYaml(text, k8s, "app.yaml")).toThrow(message);
  });
});

describe("sigil inject: bad pods are refused naming the field", () => {
  const pod = (annotations: Record<string, string>, spec: PodSpec = podSpec()) =>
    KINDS[0]!.build(template(annotations, spec));
  const deployment = (annotations: Record<string, string>, spec: PodSpec = podSpec()) =>
    KINDS[1]!.build(template(annotations, spec));

  it.each([
    [{ "sigil.io/http-ports": "80,x" }, 'metadata.annotations["sigil.io/http-ports"]', /"x" is not a port/],
    [
      { "sigil.io/exclude-inbound-ports": "0" },
      'metadata.annotations["sigil.io/exclude-inbound-ports"]',
      /"0" is not a port/,
    ],
    [
      { "sigil.io/exclude-outbound-ports": "70000" },
      'metadata.annotations["sigil.io/exclude-outbound-ports"]',
      /"70000" is not a port/,
    ],
    [
      { "sigil.io/fast-path-ports": "9090,9090" },
      'metadata.annotations["sigil.io/fast-path-ports"]',
      /listed twice/,
    ],
    [
      { "sigil.io/exclude-outbound-cidrs": "10.0.0.0/33" },
      'metadata.annotations["sigil.io/exclude-outbound-cidrs"]',
      /not a CIDR/,
    ],
    [
      { "sigil.io/exclude-outbound-cidrs": "example.com/8" },
      'metadata.annotations["sigil.io/exclude-outbound-cidrs"]',
      /not a CIDR/,
    ],
    [
      { "sigil.io/inject": "yes" },
      'metadata.annotations["sigil.io/inject"]',
      /neither "enabled" nor "disabled"/,
    ],
    [
      { "sigil.io/exclude-inbound-port": "80" },
      'metadata.annotations["sigil.io/exclude-inbound-port"]',
      /unknown Sigil annotation/,
    ],
    [
      { "sigil.io/http-ports": "8080", "sigil.io/fast-path-ports": "8080" },
      'metadata.annotations["sigil.io/fast-path-ports"]',
      /choose one/,
    ],
  ])("annotation %j", (annotations, field, reason) => {
    const err = refusal(pod(annotations));
    expect(err.document).toBe("document 1 (Pod shop/web)");
    expect(err.field).toBe(field);
    expect(err.reason).toMatch(reason);
    expect(refusal(deployment(annotations)).field).toBe(`spec.template.${field}`);
  });

  it.each([
    [
      "an app port that is the sidecar's inbound listener",
      podSpec({ containers: [app({ ports: [{ containerPort: 15006 }] })] }),
      "spec.containers[0].ports[0].containerPort",
      /inbound listener/,
    ],
    [
      "an app port that is the admin listener",
      podSpec({ containers: [app({ ports: [{ containerPort: 80 }, { containerPort: 15000 }] })] }),
      "spec.containers[0].ports[1].containerPort",
      /admin listener/,
    ],
    [
      "the sidecar's uid for the pod",
      podSpec({ securityContext: { runAsUser: 1337 } }),
      "spec.securityContext.runAsUser",
      /bypass the mesh/,
    ],
    [
      "the sidecar's uid for a container",
      podSpec({ containers: [app({ securityContext: { runAsUser: 1337 } })] }),
      "spec.containers[0].securityContext.runAsUser",
      /bypass the mesh/,
    ],
    ["host networking", podSpec({ hostNetwork: true }), "spec.hostNetwork", /node's traffic/],
    [
      "Sigil's container name",
      podSpec({ containers: [app(), { name: "sigil-sidecar", image: "x" }] }),
      "spec.containers[1].name",
      /Sigil's own container/,
    ],
    [
      "Sigil's volume name",
      podSpec({ volumes: [{ name: "sigil-token", emptyDir: {} }] }),
      "spec.volumes[0].name",
      /Sigil volume/,
    ],
    ["no containers", { containers: [] }, "spec.containers", /at least one container/],
  ])("%s", (_, spec, field, reason) => {
    const err = refusal(pod({}, spec as PodSpec));
    expect(err.field).toBe(field);
    expect(err.reason).toMatch(reason);
    expect(err.message).toContain("document 1 (Pod shop/web): ");
  });

  it("podman: a template cannot get a one-time join token of its own", () => {
    const err = refusal(deployment({}), podman);
    expect(err.field).toBe("spec.template.metadata.name");
  });
});
