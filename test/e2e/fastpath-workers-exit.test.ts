import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFile } from "node:fs/promises";
import type { EnforcerSources } from "../../sidecar/fastpath/sources.ts";
import { policyDocumentsOf } from "./fastpath-support/enforcer-config.ts";
import { webToDbPolicy } from "./fastpath-support/lab.ts";
import { createNetns } from "../support/netns.ts";
import type { Netns } from "../support/netns.ts";
import { OutputLines, jsonLine } from "./fastpath-support/process-output.ts";
import { TRUST_DOMAIN, TestPki } from "./fastpath-support/pki.ts";

const PROBE = "test/e2e/fastpath-support/worker-exit-probe.ts";

/**
 * An enforcer worker thread that ends on its own leaves its queue unbound: the pool must say so (the
 * agent's /ready turns 503 on it) and keep answering stats from the workers still running, instead
 * of waiting forever for the one that is gone (a metrics scrape would hang).
 */
describe("fast-path worker pool when a worker ends", () => {
  let ns: Netns;
  let pki: TestPki;
  let sourcesFile: string;

  beforeAll(async () => {
    ns = await createNetns("fpexit");
    pki = await TestPki.create();
    const db = await pki.identity("db", { app: "db" });
    const sources: EnforcerSources = {
      svidPem: await readFile(db.svidFile, "utf8"),
      keyPem: await readFile(db.keyFile, "utf8"),
      trustDomain: TRUST_DOMAIN,
      bundleJson: await readFile(pki.bundleFile, "utf8"),
      revocations: { sequence: 0, entries: [] },
      policyDocuments: policyDocumentsOf(webToDbPolicy([5432]), "policy.yaml"),
      mode: "enforce",
    };
    sourcesFile = await pki.file("sources.json", JSON.stringify(sources));
  });

  afterAll(async () => {
    await ns?.destroy();
    await pki?.destroy();
  });

  it("names the ended worker, answers stats from the other one, and none after stop", async () => {
    const out = new OutputLines(ns.spawn([process.execPath, "--import", "tsx", PROBE, sourcesFile, "4300"]));
    const code = await out.exit(60_000);
    expect(code, out.stderrText).toBe(0);
    const [started, ended, stopped] = out.lines.map(jsonLine).filter((x) => x !== undefined);
    expect(started).toEqual({ step: "started", exited: null, queues: [4300, 4301] });
    expect(ended).toMatchObject({
      step: "one ended",
      exited: "fast-path worker for queue 4300 exited (1)",
      queues: [4301],
      errors: ["fast-path worker for queue 4300 exited (1)"],
    });
    expect(stopped).toEqual({ step: "stopped", queues: "no fast-path worker is running" });
  });
});
