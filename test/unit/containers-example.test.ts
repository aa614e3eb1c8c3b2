import { readFileSync } from "node:fs";
import type { Pod } from "kubernetes-types/core/v1.js";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { injectYaml } from "../../inject/documents.ts";
import { settingsFromFlags } from "../../inject/options.ts";
import { SIGIL_VERSION } from "../../inject/settings.ts";
import { parsePolicyDocuments } from "../../core/policy/index.ts";

/**
 * examples/containers/ runs in the container suite; these are the mistakes it would only show there
 * as a pod that cannot start: an image tag behind the release, a policy or pod the code refuses.
 */
const DIR = new URL("../../examples/containers/", import.meta.url).pathname;
const podsYaml = readFileSync(`${DIR}pods.yaml`, "utf8");
const pods = parseAllDocuments(podsYaml).map((d) => d.toJS() as Pod);

describe("examples/containers", () => {
  it("runs its applications on the image scripts/build-image.sh tags for this release", () => {
    expect(pods.map((p) => p.metadata?.name)).toEqual(["api", "web", "rogue"]);
    for (const pod of pods)
      for (const c of pod.spec?.containers ?? [])
        expect(c.image, pod.metadata?.name).toBe(`sigil:${SIGIL_VERSION}`);
  });

  it("its pods inject for podman and its policy loads", () => {
    const settings = settingsFromFlags({ runtime: "podman", hostDir: "/tmp/sigil-containers/host" });
    expect(injectYaml(podsYaml, settings, "pods.yaml").report.map((r) => r.outcome)).toEqual([
      "injected",
      "injected",
      "injected",
    ]);
    const policy = parsePolicyDocuments(readFileSync(`${DIR}policy.yaml`, "utf8"), "policy.yaml");
    expect(policy.ok ? [] : policy.errors).toEqual([]);
    expect(policy.ok && policy.documents.map((d) => d.document.metadata.name)).toEqual([
      "containers-api-ingress",
      "containers-callers-egress",
    ]);
  });
});
