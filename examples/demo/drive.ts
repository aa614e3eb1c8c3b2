/**
 * One pass of the demo's traffic: start a packet capture, run every scenario, then add a policy file
 * to the watched directory and repeat the gRPC call until the new verdict shows, quarantine web by a
 * label and lift it again the same way, and finally gather the sidecars' flow reports and the wire
 * evidence into the rows of the table.
 */
import { copyFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { waitForFlows, type Timed } from "./flows.ts";
import type { Mesh } from "./mesh.ts";
import { buildRow, type Row } from "./report.ts";
import {
  grpcAfterPolicyChange,
  quarantineScenarios,
  scenarios,
  type ClientResult,
  type Scenario,
} from "./traffic.ts";
import { WireCapture } from "./wire.ts";

export const POLICY_CHANGE_FILE = fileURLToPath(new URL("./policies/grpc-orders.yaml", import.meta.url));

/** The sidecars' inbound listener, where mesh mTLS arrives: tshark is told to read it as TLS. */
const INBOUND_PORT = 15006;

export interface DriveOptions {
  progress: (line: string) => void;
  /** How long a policy change may take to reach the sidecars. */
  policyChangeTimeoutMs: number;
  flowTimeoutMs: number;
}

type Ran = Timed<Scenario> & { client: ClientResult };

async function runOne(mesh: Mesh, scenario: Scenario, progress: (line: string) => void): Promise<Ran> {
  const startedAt = Date.now();
  const client = await scenario.run(mesh);
  const endedAt = Date.now();
  progress(`  ${scenario.from} → ${scenario.to}:${scenario.port}  ${scenario.request}: ${client.detail}`);
  return { item: scenario, startedAt, endedAt, client };
}

/**
 * Calls until the client sees what `scenario` expects after a change made just before, or the
 * change's deadline passes; the last call is the scenario's run either way.
 */
async function untilExpected(
  mesh: Mesh,
  scenario: Scenario,
  change: string,
  opts: DriveOptions,
): Promise<Ran> {
  const changedAt = Date.now();
  let last = await runOne(mesh, scenario, () => undefined);
  while (last.client.outcome !== scenario.expect && Date.now() - changedAt < opts.policyChangeTimeoutMs) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    last = await runOne(mesh, scenario, () => undefined);
  }
  const after = ((last.endedAt - changedAt) / 1000).toFixed(1);
  opts.progress(
    `  ${scenario.from} → ${scenario.to}:${scenario.port}  ${scenario.request}: ${last.client.detail} (${after} s after ${change})`,
  );
  return last;
}

export async function driveTraffic(mesh: Mesh, opts: DriveOptions): Promise<Row[]> {
  const cp = mesh.controlPlane;
  if (cp === null) throw new Error("the control plane is not running");
  const say = opts.progress;
  const capture = await WireCapture.start(
    mesh.supervisor,
    mesh.topology.hub,
    join(mesh.workDir, "wire.pcap"),
  );
  const runs: Ran[] = [];
  say("driving traffic with curl, a gRPC client and nc (captured on the bridge with tcpdump):");
  for (const scenario of scenarios()) runs.push(await runOne(mesh, scenario, say));

  say(`adding grpc-orders.yaml to ${mesh.policyDir} and calling again until the verdict changes:`);
  await copyFile(POLICY_CHANGE_FILE, join(mesh.policyDir, "grpc-orders.yaml"));
  runs.push(await untilExpected(mesh, grpcAfterPolicyChange(), "the change", opts));

  // The product story's quarantine: an operator (or a scanner) marks web, quarantine.yaml selects it.
  const { quarantined, lifted } = quarantineScenarios();
  say("quarantining web: sigil workload label web vuln.critical=3 (examples/policies/quarantine.yaml)");
  await mesh.sigil(["workload", "label", "web", "vuln.critical=3"]);
  runs.push(await untilExpected(mesh, quarantined, "the label", opts));
  say("lifting it: sigil workload label web vuln.critical-");
  await mesh.sigil(["workload", "label", "web", "vuln.critical-"]);
  runs.push(await untilExpected(mesh, lifted, "the label's removal", opts));

  const needles = [...new Set(runs.flatMap((r) => r.item.needles))];
  const evidence = await capture.finish(needles, [INBOUND_PORT]);
  const flows = await waitForFlows(mesh, cp, runs, opts.flowTimeoutMs);
  return runs.map((r) => buildRow(mesh, r, flows, evidence));
}
