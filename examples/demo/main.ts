/**
 * `npm run demo`: the Sigil mesh in network namespaces on this machine (run as root).
 *
 * Builds web, api, db and rogue workloads, starts the control plane and a sidecar per workload, drives
 * traffic with ordinary clients, and prints what happened. Then it keeps the mesh running for exploring
 * until Ctrl-C; with --once (or CI=true) it exits instead, 0 only if every expected verdict happened.
 * Everything it made is removed on the way out, also after an error.
 */
import { Command, InvalidArgumentError } from "commander";
import { join } from "node:path";
import { Cleanup } from "./cleanup.ts";
import { driveTraffic } from "./drive.ts";
import { REPO_ROOT, startMesh, type Mesh } from "./mesh.ts";
import { renderTable } from "./report.ts";
import { tailLogs } from "./logs.ts";
import { preflight } from "./preflight.ts";

function int(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected ${min}..${max}`);
    return n;
  };
}

const opts = new Command("sigil-demo")
  .description("the Sigil demo mesh in network namespaces")
  .option("--once", "run the traffic, print the table and exit (also when CI=true)")
  .option("--prefix <prefix>", "prefix of namespace and interface names", "sigil-")
  .option("--subnet <n>", "use 198.18.<n>.0/24", int(0, 255), 0)
  .option("--grpc-port <port>", "control plane gRPC port (0: any free port)", int(0, 65535), 15010)
  .option(
    "--http-port <port>",
    "control plane HTTP API and UI port on 127.0.0.1 (0: any)",
    int(0, 65535),
    15080,
  )
  .option("--policies <dir>", "policy files to start with", join(REPO_ROOT, "examples/policies"))
  .option("--ready-timeout <seconds>", "how long each process may take to become ready", int(1, 600), 90)
  .parse()
  .opts<{
    once?: boolean;
    prefix: string;
    subnet: number;
    grpcPort: number;
    httpPort: number;
    policies: string;
    readyTimeout: number;
  }>();

const once = opts.once === true || process.env.CI === "true";
const say = (line: string) => process.stdout.write(`${line}\n`);
const cleanup = new Cleanup();
let mesh: Mesh | null = null;
let exiting = false;

async function finish(code: number): Promise<never> {
  if (exiting) return new Promise<never>(() => undefined);
  exiting = true;
  say("cleaning up: processes, iptables rules, namespaces, veths, bridge, temporary files");
  try {
    await cleanup.run();
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    code = code === 0 ? 1 : code;
  }
  process.exit(code);
}

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => void finish(signal === "SIGINT" ? 0 : 143));
}

function explore(m: Mesh): void {
  const cp = m.controlPlane!;
  const ns = (name: "web" | "api" | "db" | "rogue") => m.host(name).netns;
  const api = m.host("api").ipv4;
  say("");
  say("The mesh keeps running. Explore it:");
  say(`  UI and API:        ${cp.http}/   (sign in with the token in ${cp.tokenFile})`);
  say(`  policies (live):   ${m.policyDir}   edit or add a file; verdicts change within seconds`);
  say(`  logs:              ${join(m.workDir, "logs")}`);
  say(`  allowed:           ip netns exec ${ns("web")} curl -s http://${api}:8080/api/orders`);
  say(`  denied:            ip netns exec ${ns("web")} curl -s http://${api}:8080/admin/users`);
  say(`  rogue:             ip netns exec ${ns("rogue")} curl -s http://${api}:8080/api/orders`);
  say(
    `  database:          echo 'SELECT 1' | ip netns exec ${ns("api")} nc -N -w 3 ${m.host("db").ipv4} 5432`,
  );
  say(`  the wire:          ip netns exec ${m.topology.hub} tcpdump -ni api -A`);
  say(
    `  fast path:         ip netns exec ${ns("db")} iptables -t mangle -nvL SIGIL-FP-PRE   (only handshakes reach the enforcer)`,
  );
  say(
    `  quarantine web:    npm run sigil -- workload label web vuln.critical=3 --api ${cp.http} --token-file ${cp.tokenFile}   (vuln.critical- lifts it)`,
  );
  say(`  flows (CLI):       npm run sigil -- flows --api ${cp.http} --token-file ${cp.tokenFile}`);
  say(`  flows (API):       curl -s -H "Authorization: Bearer $(cat ${cp.tokenFile})" ${cp.http}/api/flows`);
  say("Press Ctrl-C to stop and clean up everything.");
}

try {
  await preflight();
  mesh = await startMesh(
    {
      prefix: opts.prefix,
      subnet: opts.subnet,
      grpcPort: opts.grpcPort,
      httpPort: opts.httpPort,
      policySource: opts.policies,
      progress: say,
      readyTimeoutMs: opts.readyTimeout * 1000,
    },
    cleanup,
  );
  say(`policies are watched in ${mesh.policyDir} (a copy: editing it does not touch the repository)`);
  const rows = await driveTraffic(mesh, {
    progress: say,
    policyChangeTimeoutMs: 30_000,
    flowTimeoutMs: 20_000,
  });
  say("");
  process.stdout.write(renderTable(rows));
  const failed = rows.filter((r) => !r.ok).length;
  say("");
  // The fast path authenticates both ends in the handshake but leaves the payload as it is.
  const plain = [
    ...new Set(
      rows
        .filter((r) => r.scenario.dataPath === "fastpath" && r.scenario.expect === "allow")
        .map((r) => `${r.scenario.to}:${r.scenario.port}`),
    ),
  ];
  const clear =
    plain.length === 0
      ? "nothing crossed the wire in the clear"
      : `nothing crossed the wire in the clear except the fast path's payload on ${plain.join(", ")} (PERMISSIVE)`;
  say(
    failed === 0
      ? `every verdict as expected (${rows.length} requests); ${clear}`
      : `${failed} of ${rows.length} requests did not go as expected`,
  );
  if (once) {
    if (failed > 0) process.stderr.write(await tailLogs(join(mesh.workDir, "logs")));
    await finish(failed === 0 ? 0 : 1);
  } else {
    explore(mesh);
  }
} catch (error) {
  process.stderr.write(`demo failed: ${(error as Error).message}\n`);
  if (mesh) process.stderr.write(await tailLogs(join(mesh.workDir, "logs")));
  await finish(1);
}
