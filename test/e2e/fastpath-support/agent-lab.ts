/**
 * The set-up the `sigil sidecar --fast-path-ports` suites share: a namespace lab whose bridge the host
 * joins (so a control plane on the host is reachable from every namespace), that control plane with a
 * watched policy directory, workloads prepared with `sigil init` and a join token, their sidecars
 * started unprivileged with CAP_NET_ADMIN, the echo/HTTP application servers, and the readings the
 * suites assert on (NFQUEUE packet counters, flow records, the client's fast-path destinations).
 */
import { randomBytes } from "node:crypto";
import { chmod, copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { startControlPlane } from "../../../controlplane/control-plane.ts";
import type { ControlPlane } from "../../../controlplane/control-plane.ts";
import type { FlowRecord } from "../../../core/flow.ts";
import { appUser, chownTo, ensureProxyUser } from "../../../examples/demo/users.ts";
import { MARK_MASK, hex } from "../../../sidecar/fastpath/marks.ts";
import { NetnsLab, run, runOk, waitFor } from "../../support/netns.ts";
import type { LabHost, RunAs } from "../../support/netns.ts";
import { OutputLines, REPO_ROOT, jsonLine } from "./process-output.ts";
import { readyEvent } from "../../../core/logger.ts";

export const TRUST_DOMAIN = "sigil.local";
export const SIGIL = join(REPO_ROOT, "bin/sigil.mjs");

export interface AgentWorkload {
  name: string;
  host: LabHost;
  dir: string;
  captureConfig: string;
  sidecar?: OutputLines;
}

export interface AgentLabOptions {
  names: readonly string[];
  /** The lab's /24 inside 198.18.0.0/15; the host takes .254 on it. */
  subnet: number;
  /** The policy directory's one file (db.yaml). */
  policy: string;
  /** Suffix of the host's veth name, so two suites' links never collide. */
  linkSuffix: string;
  /** Prefix of the temporary directory. */
  dirPrefix: string;
}

export interface SidecarOptions {
  /** The port the workload serves; a client-only workload has none. */
  appPort?: number;
  fastPathPorts: readonly number[];
}

/** Packets the kernel handed to NFQUEUE in this namespace (the NFQUEUE rules' counters, both families). */
export async function queuedPackets(host: LabHost): Promise<number> {
  let total = 0;
  for (const tool of ["iptables", "ip6tables"]) {
    const text = await host.ns.execOk([tool, "-w", "5", "-t", "mangle", "-L", "-v", "-x", "-n"]);
    for (const line of text.split("\n")) {
      if (line.includes("NFQUEUE")) total += Number(line.trim().split(/\s+/)[0]);
    }
  }
  return total;
}

/** The fast path's application servers (HTTP on 8080, echo on `echoPort`) in a namespace, once ready. */
export async function startServers(host: LabHost, as: RunAs, echoPort: number): Promise<OutputLines> {
  const server = new OutputLines(
    host.ns.spawn(
      [
        process.execPath,
        "--import",
        "tsx",
        join(REPO_ROOT, "test/e2e/fastpath-support/servers.ts"),
        "8080",
        String(echoPort),
      ],
      { as },
    ),
  );
  await server.waitFor((l) => (jsonLine(l)?.event === "ready" ? true : undefined), 30_000);
  return server;
}

/** Connections the echo server accepted so far. */
export function echoAccepted(server: OutputLines): number {
  return server.lines.filter((l) => jsonLine(l)?.event === "accepted" && jsonLine(l)?.server === "echo")
    .length;
}

export class AgentLab {
  private constructor(
    readonly lab: NetnsLab,
    readonly cp: ControlPlane,
    readonly dir: string,
    readonly policyFile: string,
    readonly proxy: RunAs,
    readonly app: RunAs,
    readonly hostAddress: string,
    private readonly hostLink: string,
  ) {}

  static async create(opts: AgentLabOptions): Promise<AgentLab> {
    const [proxy, app] = await Promise.all([ensureProxyUser(), appUser()]);
    const dir = await mkdtemp(join(tmpdir(), opts.dirPrefix));
    const hostLink = `sg${randomBytes(3).toString("hex")}${opts.linkSuffix}`;
    const hostAddress = `198.18.${opts.subnet}.254`;
    let lab: NetnsLab | undefined;
    let cp: ControlPlane | undefined;
    try {
      await chmod(dir, 0o755);
      lab = await NetnsLab.create([...opts.names], { subnet: opts.subnet });
      // The host joins the lab's bridge so the control plane is reachable from every namespace.
      await runOk([
        "ip",
        "link",
        "add",
        hostLink,
        "type",
        "veth",
        "peer",
        "name",
        "cp",
        "netns",
        lab.hub.name,
      ]);
      await lab.hub.execOk(["ip", "link", "set", "cp", "master", "br0", "up"]);
      await runOk(["ip", "addr", "add", `${hostAddress}/24`, "dev", hostLink]);
      await runOk(["ip", "link", "set", hostLink, "up"]);

      const policyFile = join(dir, "policies", "db.yaml");
      await mkdir(join(dir, "policies"));
      await writeFile(policyFile, opts.policy);
      cp = await startControlPlane({
        dataDir: join(dir, "cp"),
        trustDomain: TRUST_DOMAIN,
        policyDir: join(dir, "policies"),
        mode: "enforce",
        grpc: { host: hostAddress, port: 0 },
        xdsPlaintext: undefined,
        http: { host: "127.0.0.1", port: 0 },
        serverNames: [],
        log: pino({ level: "silent" }),
      });
      await copyFile(cp.bundlePath, join(dir, "controlplane-ca.pem"));
      await chmod(join(dir, "controlplane-ca.pem"), 0o644);
      return new AgentLab(lab, cp, dir, policyFile, proxy, app, hostAddress, hostLink);
    } catch (err) {
      await lab?.destroy();
      await run(["ip", "link", "del", hostLink]);
      await cp?.close();
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * A capture config with the fast path's mark mask, `sigil init` applied with it, and a join token
   * for the workload (labels app=<name>). `beforeInit` runs first, for suites that record the tables.
   */
  async prepare(name: string, beforeInit?: (host: LabHost) => Promise<void>): Promise<AgentWorkload> {
    const host = this.lab.host(name);
    const wdir = join(this.dir, name);
    await mkdir(wdir, { mode: 0o700 });
    const captureConfig = join(wdir, "capture.yaml");
    await writeFile(
      captureConfig,
      [
        "capture:",
        `  proxyUid: ${this.proxy.uid}`,
        `  proxyGid: ${this.proxy.gid}`,
        `  fastPathMarkMask: ${hex(MARK_MASK)}`,
        "",
      ].join("\n"),
    );
    await beforeInit?.(host);
    await host.ns.execOk([process.execPath, SIGIL, "init", "--config", captureConfig], { timeoutMs: 60_000 });
    await this.writeJoinToken(name, wdir);
    return { name, host, dir: wdir, captureConfig };
  }

  /** A fresh join token for `name` in its directory, readable by the sidecar user. */
  async writeJoinToken(name: string, wdir: string): Promise<void> {
    const { token } = await this.cp.identity.tokens.create({ name, labels: { app: name }, ttlSeconds: 600 });
    await writeFile(join(wdir, "join-token"), `${token}\n`, { mode: 0o600 });
    await chownTo(wdir, this.proxy);
  }

  startSidecar(w: AgentWorkload, opts: SidecarOptions): OutputLines {
    const child = w.host.ns.spawn(
      [
        "setpriv",
        `--reuid=${this.proxy.uid}`,
        `--regid=${this.proxy.gid}`,
        "--clear-groups",
        // The fast path installs its rules and binds NFQUEUE: the sidecar user keeps CAP_NET_ADMIN.
        "--inh-caps=+net_admin",
        "--ambient-caps=+net_admin",
        "--",
        process.execPath,
        SIGIL,
        "sidecar",
        "--control-plane",
        `${this.hostAddress}:${this.cp.grpc.port}`,
        "--control-plane-ca",
        join(this.dir, "controlplane-ca.pem"),
        "--join-token-file",
        join(w.dir, "join-token"),
        "--workload-name",
        w.name,
        "--mode",
        "captured",
        "--advertise-address",
        w.host.ipv4,
        ...(opts.appPort === undefined ? [] : ["--app-port", String(opts.appPort)]),
        "--fast-path-ports",
        opts.fastPathPorts.join(","),
        "--capture-config",
        w.captureConfig,
        "--log-level",
        "info",
      ],
      { env: { PATH: process.env.PATH, HOME: w.dir } },
    );
    return new OutputLines(child);
  }

  /** Starts every workload's sidecar and waits until each says it is ready. */
  async startSidecars(workloads: readonly AgentWorkload[], opts: (w: AgentWorkload) => SidecarOptions) {
    for (const w of workloads) w.sidecar = this.startSidecar(w, opts(w));
    for (const w of workloads) {
      await w.sidecar!.waitFor((l) => (readyEvent(l) !== null ? true : undefined), 120_000);
    }
  }

  /** Waits until the client's handshake rules list `destination` (it follows the peer directory). */
  async waitForFastPathDestination(client: AgentWorkload, destination: AgentWorkload): Promise<void> {
    const word = destination.host.ipv4.split(".").reduce((acc, p) => acc * 256 + Number(p), 0);
    await waitFor(
      `${client.name}'s rules list ${destination.name} as a fast-path destination`,
      async () =>
        (await client.host.ns.execOk(["iptables-save", "-t", "mangle"])).includes(`=0x${word.toString(16)}"`),
      { timeoutMs: 30_000, intervalMs: 200 },
    );
  }

  /** At least `count` flow records since `since` that match, once the control plane has them. */
  async flowsSince(
    since: number,
    what: string,
    match: (f: FlowRecord) => boolean,
    count = 1,
  ): Promise<FlowRecord[]> {
    let found: FlowRecord[] = [];
    await waitFor(
      what,
      () => {
        found = this.cp.flows.all({ since }).filter(match);
        return found.length >= count;
      },
      { timeoutMs: 20_000, intervalMs: 200 },
    );
    return found;
  }

  async close(): Promise<void> {
    await this.lab.destroy();
    await run(["ip", "link", "del", this.hostLink]);
    await this.cp.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}
