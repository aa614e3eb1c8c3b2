import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { writeNginxConfigs } from "./nginx.ts";
import { writeHaproxyConfigs } from "./haproxy.ts";
import type { PeerPki } from "./peer-pki.ts";
import { freePorts, waitForPort } from "./procs.ts";
import type { Supervised, Supervisor } from "./procs.ts";
import { bundleInto, bundleSidecar, writeSigilSpecs } from "./sigil.ts";
import { REPO } from "./measure.ts";
import { SERVER_NAME } from "./peer-pki.ts";
import type { NodePipesSpec } from "./node-pipes.ts";
import type { BackendPorts, PairPorts, PathName, PathUnderTest } from "./topology.ts";
import { SIDECAR_NODE_FLAGS } from "../../inject/constants.ts";

/** Starts each path under test and returns where its traffic enters; all processes are supervised. */

export interface PathContext {
  readonly sup: Supervisor;
  readonly dir: string;
  readonly backend: BackendPorts;
  readonly peerPki: PeerPki;
  /** When set, the Sigil sidecars write V8 CPU profiles here (node --cpu-prof) when they stop. */
  readonly profileDir?: string;
  /** Node/V8 flags for the Sigil sidecar processes (default: SIDECAR_NODE_FLAGS, as they ship). */
  readonly sidecarNodeFlags?: readonly string[];
  /** The Sigil sidecars also measure event-loop delay, a diagnostic that wakes them (loop-monitor.ts). */
  readonly loopDelay?: boolean;
}

async function pairPorts(): Promise<PairPorts> {
  const [clientH1, clientGrpc, clientTcp, serverH1, serverGrpc, serverTcp] = (await freePorts(6)) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  return { clientH1, clientGrpc, clientTcp, serverH1, serverGrpc, serverTcp };
}

async function waitAll(ports: readonly number[], procs: PathUnderTest["proxies"]): Promise<void> {
  for (const port of ports) {
    for (const { proc } of procs) if (proc.exited()) throw new Error(`${proc.name} exited: ${proc.output()}`);
    await waitForPort("127.0.0.1", port, procs[0]?.proc ?? null);
  }
}

function direct(ctx: PathContext): PathUnderTest {
  return {
    name: "direct",
    h1Port: ctx.backend.h1,
    grpcPort: ctx.backend.grpc,
    tcpPort: ctx.backend.iperf,
    proxies: [],
  };
}

type Command = readonly [command: string, args: readonly string[]];

/**
 * Starts a pair's server-side and client-side processes and waits for their listeners (the TCP ones
 * too when the pair carries plain TCP).
 */
async function supervisedPair(
  ctx: PathContext,
  name: PathName,
  ports: PairPorts,
  commands: { readonly server: Command; readonly client: Command },
  carriesTcp: boolean,
): Promise<PathUnderTest> {
  const server = ctx.sup.start(`${name} server side`, ...commands.server);
  const client = ctx.sup.start(`${name} client side`, ...commands.client);
  const proxies = [
    { side: "client" as const, proc: client },
    { side: "server" as const, proc: server },
  ];
  const tcp = carriesTcp ? [ports.serverTcp, ports.clientTcp] : [];
  await waitAll([ports.serverH1, ports.serverGrpc, ports.clientH1, ports.clientGrpc, ...tcp], proxies);
  return {
    name,
    h1Port: ports.clientH1,
    grpcPort: ports.clientGrpc,
    tcpPort: carriesTcp ? ports.clientTcp : null,
    proxies,
  };
}

async function nginx(ctx: PathContext): Promise<PathUnderTest> {
  const ports = await pairPorts();
  const files = await writeNginxConfigs(ctx.dir, ctx.peerPki, ports, ctx.backend);
  const run = (config: string): Command => ["nginx", ["-c", config, "-p", ctx.dir]];
  return supervisedPair(ctx, "nginx", ports, { server: run(files.server), client: run(files.client) }, false);
}

async function haproxy(ctx: PathContext): Promise<PathUnderTest> {
  const ports = await pairPorts();
  const files = await writeHaproxyConfigs(ctx.dir, ctx.peerPki, ports, ctx.backend);
  const run = (config: string): Command => ["haproxy", ["-db", "-f", config]];
  return supervisedPair(
    ctx,
    "haproxy",
    ports,
    { server: run(files.server), client: run(files.client) },
    true,
  );
}

/** The floor of a Node proxy (`node-pipes.ts`), under the sidecars' Node flags and bundled as they are. */
async function nodePipes(ctx: PathContext): Promise<PathUnderTest> {
  const ports = await pairPorts();
  const entry = await bundleInto(ctx.dir, join(REPO, "bench", "compare", "node-pipes.ts"), "node-pipes.mjs");
  const spec = async (side: "client" | "server", routes: NodePipesSpec["routes"]): Promise<string> => {
    const keys = side === "client" ? ctx.peerPki.client : ctx.peerPki.server;
    const s: NodePipesSpec = {
      side,
      routes,
      certFile: keys.cert,
      keyFile: keys.key,
      caFile: ctx.peerPki.caCert,
      serverName: SERVER_NAME,
    };
    const file = join(ctx.dir, `node-pipes-${side}.json`);
    await writeFile(file, JSON.stringify(s));
    return file;
  };
  const b = ctx.backend;
  const [serverSpec, clientSpec] = await Promise.all([
    spec("server", [
      { listen: ports.serverH1, to: b.h1 },
      { listen: ports.serverGrpc, to: b.grpc },
      { listen: ports.serverTcp, to: b.iperf },
    ]),
    spec("client", [
      { listen: ports.clientH1, to: ports.serverH1 },
      { listen: ports.clientGrpc, to: ports.serverGrpc },
      { listen: ports.clientTcp, to: ports.serverTcp },
    ]),
  ]);
  const flags = ctx.sidecarNodeFlags ?? SIDECAR_NODE_FLAGS;
  const run = (spec: string): Command => [process.execPath, [...flags, entry, spec]];
  return supervisedPair(ctx, "node-pipes", ports, { server: run(serverSpec), client: run(clientSpec) }, true);
}

async function sigil(ctx: PathContext): Promise<PathUnderTest> {
  const ports = await pairPorts();
  const [clientInbound, clientAdmin, serverAdmin] = (await freePorts(3)) as [number, number, number];
  const [bundle, specs] = await Promise.all([
    bundleSidecar(ctx.dir),
    writeSigilSpecs(
      ctx.dir,
      { ...ports, clientInbound, clientAdmin, serverAdmin },
      ctx.backend,
      ctx.loopDelay === true,
    ),
  ]);
  const profile = ctx.profileDir ? ["--cpu-prof", `--cpu-prof-dir=${ctx.profileDir}`] : [];
  const node = (spec: string) => [
    ...(ctx.sidecarNodeFlags ?? SIDECAR_NODE_FLAGS),
    ...profile,
    "--import",
    pathToFileURL(bundle.preload).href,
    bundle.entry,
    spec,
  ];
  const server = ctx.sup.start("sigil server side", process.execPath, node(specs.server));
  const client = ctx.sup.start("sigil client side", process.execPath, node(specs.client));
  const proxies = [
    { side: "client" as const, proc: client, adminPort: clientAdmin },
    { side: "server" as const, proc: server, adminPort: serverAdmin },
  ];
  // Readiness from each sidecar's admin server: probing its listeners with empty connections would
  // count as refused connections in its metrics and flow records.
  await waitReady(serverAdmin, server);
  await waitReady(clientAdmin, client);
  return {
    name: "sigil",
    h1Port: ports.clientH1,
    grpcPort: ports.clientGrpc,
    tcpPort: ports.clientTcp,
    proxies,
  };
}

async function waitReady(adminPort: number, proc: Supervised, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exited()) throw new Error(`${proc.name} exited: ${proc.output()}`);
    const ok = await fetch(`http://127.0.0.1:${adminPort}/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline)
      throw new Error(`${proc.name} not ready after ${timeoutMs} ms: ${proc.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startPath(name: PathName, ctx: PathContext): Promise<PathUnderTest> {
  switch (name) {
    case "direct":
      return direct(ctx);
    case "nginx":
      return nginx(ctx);
    case "haproxy":
      return haproxy(ctx);
    case "sigil":
      return sigil(ctx);
    case "node-pipes":
      return nodePipes(ctx);
  }
}
