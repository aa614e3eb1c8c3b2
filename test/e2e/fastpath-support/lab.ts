/**
 * The fast-path set-up the suites and bench/fastpath share: a server host running the db workload's
 * plain application servers, the policy that lets app=web reach app=db on the fast path, and the
 * pair of enforcers (db on the server, web on the client) started against one test CA.
 */
import type { LabHost } from "../../support/netns.ts";
import { EnforcerProcess } from "./enforcer-process.ts";
import { OutputLines, REPO_ROOT, jsonLine } from "./process-output.ts";
import type { IdentityFiles, TestPki } from "./pki.ts";

export const HTTP_PORT = 8080;
export const ECHO_PORT = 7000;

/**
 * app=web may reach app=db on `ports`; the ports are PERMISSIVE, so plain L4 ones take the fast
 * path. `extraIngress` adds further db ingress rules, each one YAML flow mapping.
 */
export function webToDbPolicy(ports: readonly number[], extraIngress: readonly string[] = []): string {
  return `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: db-ingress }
spec:
  selector: { matchLabels: { app: db } }
  ingress:
    - { action: allow, from: [ { matchLabels: { app: web } } ], ports: [ ${ports.join(", ")} ] }
${extraIngress.map((rule) => `    - ${rule}\n`).join("")}---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: db-plain-l4 }
spec:
  selector: { matchLabels: { app: db } }
  mode: PERMISSIVE
`;
}

/** Starts servers.ts (HTTP and line echo) inside `server` and resolves once both listen. */
export async function startAppServers(
  server: LabHost,
  httpPort = HTTP_PORT,
  echoPort = ECHO_PORT,
): Promise<OutputLines> {
  const apps = new OutputLines(
    server.ns.spawn([
      process.execPath,
      "--import",
      "tsx",
      `${REPO_ROOT}test/e2e/fastpath-support/servers.ts`,
      String(httpPort),
      String(echoPort),
    ]),
  );
  await apps.waitFor((l) => (jsonLine(l)?.event === "ready" ? true : undefined));
  return apps;
}

/** For runs of many short connections: a closed connection's port may be reused at once. */
export async function allowManyConnections(hosts: readonly LabHost[]): Promise<void> {
  for (const h of hosts) {
    await h.ns.execOk([
      "sysctl",
      "-q",
      "-w",
      "net.ipv4.tcp_tw_reuse=1",
      "net.ipv4.ip_local_port_range=10000 65000",
    ]);
  }
}

export interface EnforcerPairOptions {
  readonly policyFile: string;
  /** Ports the client's enforcer handles outbound. */
  readonly ports: readonly number[];
  /** Ports the server's enforcer handles inbound; default `ports`. */
  readonly serverPorts?: readonly number[];
  /** First NFQUEUE queue of each side; default server 10, client 20. */
  readonly queueFirst?: { readonly server: number; readonly client: number };
  readonly queueCount?: number;
  readonly revocationsFile?: string;
  /** Both enforcers' token time window (EnforcerOptions.windowMs). */
  readonly windowMs?: number;
  /** The server enforcer's queue length (EnforcerOptions.queueLength). */
  readonly serverQueueLength?: number;
  /** Identities to run with; by default ones issued now for app=web and app=db. */
  readonly identities?: { readonly web: IdentityFiles; readonly db: IdentityFiles };
}

export interface EnforcerPair {
  readonly server: EnforcerProcess;
  readonly client: EnforcerProcess;
}

/** The db enforcer on `server`, then the web enforcer on `client` (each resolves once ready). */
export async function startEnforcerPair(
  pki: TestPki,
  server: LabHost,
  client: LabHost,
  o: EnforcerPairOptions,
): Promise<EnforcerPair> {
  const identities = o.identities ?? {
    db: await pki.identity("db", { app: "db" }),
    web: await pki.identity("web", { app: "web" }),
  };
  const serverEnforcer = await EnforcerProcess.start(server.ns, pki, "db", {
    identity: identities.db,
    policyFile: o.policyFile,
    inboundPorts: [...(o.serverPorts ?? o.ports)],
    queueFirst: o.queueFirst?.server ?? 10,
    queueCount: o.queueCount,
    revocationsFile: o.revocationsFile,
    windowMs: o.windowMs,
    queueLength: o.serverQueueLength,
  });
  const clientEnforcer = await EnforcerProcess.start(client.ns, pki, "web", {
    identity: identities.web,
    policyFile: o.policyFile,
    outboundPorts: [...o.ports],
    queueFirst: o.queueFirst?.client ?? 20,
    queueCount: o.queueCount,
    windowMs: o.windowMs,
  });
  return { server: serverEnforcer, client: clientEnforcer };
}
