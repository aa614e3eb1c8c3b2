/**
 * The demo's network: one namespace per workload (web, api, db, rogue), each with `eth0` plugged into a
 * bridge that lives in a hub namespace, and one veth from the host into that bridge so that processes on
 * the host (the control plane) reach the workloads at 198.18.<subnet>.1.
 *
 * The bridge sits in its own namespace rather than on the host so that the host's firewall (a FORWARD
 * policy of DROP with br_netfilter loaded is common) never sees the workloads' traffic. Addresses come
 * from 198.18.0.0/15 only and nothing is routed anywhere else.
 *
 * Everything is named after a prefix (default `sigil-`), recorded in a marker file holding the owner's
 * pid, and removed by destroy() — or by the next run, when the owner died without cleaning up.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { inNetns, run, runOk } from "./exec.ts";

export const WORKLOADS = ["web", "api", "db", "rogue"] as const;
export type WorkloadName = (typeof WORKLOADS)[number];

const HOST_OCTET: Record<WorkloadName, number> = { web: 10, api: 20, db: 30, rogue: 66 };
const MARKER_DIR = "/run/sigil-demo";

export interface TopologyOptions {
  /** Names of namespaces and the host's veth start with this: 1-9 of [a-z0-9-]. */
  prefix: string;
  /** Third octet of 198.18.<subnet>.0/24. */
  subnet: number;
}

export interface WorkloadHost {
  name: WorkloadName;
  netns: string;
  /** The workload's interface in its namespace. */
  ifname: "eth0";
  ipv4: string;
  /** Its port on the bridge, in the hub namespace: where a packet capture sees its traffic. */
  hubPort: string;
}

export class TopologyError extends Error {
  override name = "TopologyError";
}

export function checkTopologyOptions(opts: TopologyOptions): void {
  if (!/^[a-z0-9][a-z0-9-]{0,8}$/.test(opts.prefix)) {
    throw new TopologyError(`prefix "${opts.prefix}" must be 1-9 characters of a-z, 0-9 and -`);
  }
  if (!Number.isInteger(opts.subnet) || opts.subnet < 0 || opts.subnet > 255) {
    throw new TopologyError(`subnet ${opts.subnet} must be 0..255 (198.18.<subnet>.0/24)`);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function namespaceExists(name: string): Promise<boolean> {
  const out = await runOk(["ip", "netns", "list"]);
  return out.split("\n").some((line) => line.split(" ")[0] === name);
}

/** Kills whatever still runs in the namespace, then deletes it (deleting its veths and iptables with it). */
async function deleteNamespace(name: string): Promise<void> {
  if (!(await namespaceExists(name))) return;
  const pids = await run(["ip", "netns", "pids", name]);
  for (const pid of pids.stdout.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  const del = await run(["ip", "netns", "del", name]);
  // Gone meanwhile (a concurrent sweep, or the kernel finishing an earlier delete) is what was wanted.
  if (del.code !== 0 && (await namespaceExists(name)))
    throw new TopologyError(`cannot delete namespace ${name}: ${del.stderr.trim()}`);
}

async function linkExists(name: string): Promise<boolean> {
  return (await run(["ip", "link", "show", name])).code === 0;
}

/**
 * Deletes a host link unless it is already gone. Deleting the hub namespace removes the veth's peer and
 * the kernel then removes this end too, asynchronously: between a check and the delete it may vanish,
 * and `ip` then reports "Cannot find device" or "No such device" depending on the moment. Whether the
 * link still exists afterwards is the only thing that decides a failure.
 */
async function deleteLink(name: string): Promise<void> {
  if (!(await linkExists(name))) return;
  const del = await run(["ip", "link", "del", name]);
  if (del.code !== 0 && (await linkExists(name)))
    throw new TopologyError(`cannot delete ${name}: ${del.stderr.trim()}`);
}

export class Topology {
  private destroyed = false;
  private readonly exitHook = () => this.destroySync();

  private constructor(
    readonly prefix: string,
    readonly subnet: number,
    readonly hub: string,
    /** The host's end of the veth into the bridge. */
    readonly hostLink: string,
    /** The host's address on the bridge: where the control plane listens for sidecars. */
    readonly hostAddress: string,
    private readonly hosts: ReadonlyMap<WorkloadName, WorkloadHost>,
  ) {
    process.once("exit", this.exitHook);
  }

  static async create(opts: TopologyOptions): Promise<Topology> {
    checkTopologyOptions(opts);
    const { prefix, subnet } = opts;
    claimMarker(prefix);
    const names = topologyNames(prefix);
    await removeLeftovers(names);
    const hostAddress = `198.18.${subnet}.1`;
    const hosts = new Map<WorkloadName, WorkloadHost>();
    for (const name of WORKLOADS) {
      hosts.set(name, {
        name,
        netns: `${prefix}${name}`,
        ifname: "eth0",
        ipv4: `198.18.${subnet}.${HOST_OCTET[name]}`,
        hubPort: name,
      });
    }
    const topology = new Topology(prefix, subnet, names.hub, names.hostLink, hostAddress, hosts);
    try {
      await topology.build();
    } catch (error) {
      await topology.destroy();
      throw error;
    }
    return topology;
  }

  private async build(): Promise<void> {
    const hubExec = (argv: string[]) => runOk(inNetns(this.hub, argv));
    await runOk(["ip", "netns", "add", this.hub]);
    await hubExec(["ip", "link", "set", "lo", "up"]);
    await hubExec(["ip", "link", "add", "br0", "type", "bridge"]);
    await hubExec(["ip", "link", "set", "br0", "up"]);
    await runOk([
      "ip",
      "link",
      "add",
      this.hostLink,
      "type",
      "veth",
      "peer",
      "name",
      "host",
      "netns",
      this.hub,
    ]);
    await hubExec(["ip", "link", "set", "host", "master", "br0", "up"]);
    await runOk(["ip", "addr", "add", `${this.hostAddress}/24`, "dev", this.hostLink]);
    await runOk(["ip", "link", "set", this.hostLink, "up"]);
    for (const host of this.hosts.values()) {
      const nsExec = (argv: string[]) => runOk(inNetns(host.netns, argv));
      await runOk(["ip", "netns", "add", host.netns]);
      await nsExec(["ip", "link", "set", "lo", "up"]);
      await hubExec([
        "ip",
        "link",
        "add",
        host.hubPort,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        host.netns,
      ]);
      await hubExec(["ip", "link", "set", host.hubPort, "master", "br0", "up"]);
      await nsExec(["ip", "addr", "add", `${host.ipv4}/24`, "dev", "eth0"]);
      await nsExec(["ip", "link", "set", "eth0", "up"]);
    }
  }

  host(name: WorkloadName): WorkloadHost {
    const host = this.hosts.get(name);
    if (host === undefined) throw new TopologyError(`no workload "${name}"`);
    return host;
  }

  all(): WorkloadHost[] {
    return [...this.hosts.values()];
  }

  /** Removes every namespace, veth and bridge (and with them the iptables rules inside). */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    process.off("exit", this.exitHook);
    const names = topologyNames(this.prefix);
    const failures: unknown[] = [];
    for (const ns of [...names.workloads, names.hub]) {
      await deleteNamespace(ns).catch((error: unknown) => failures.push(error));
    }
    await deleteLink(this.hostLink).catch((error: unknown) => failures.push(error));
    rmSync(markerPath(this.prefix), { force: true });
    if (failures.length > 0) throw failures[0];
  }

  /** Last resort when the process exits without destroy(): synchronous, best effort. */
  private destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    const names = topologyNames(this.prefix);
    for (const ns of [...names.workloads, names.hub]) {
      try {
        const pids = execFileSync("ip", ["netns", "pids", ns], { encoding: "utf8", timeout: 5_000 });
        for (const pid of pids.split(/\s+/).filter(Boolean)) process.kill(Number(pid), "SIGKILL");
      } catch {
        // No such namespace, or its processes are already gone.
      }
      try {
        execFileSync("ip", ["netns", "del", ns], { stdio: "ignore", timeout: 5_000 });
      } catch {
        // Not there (or already going); the next run's leftover sweep handles the rest.
      }
    }
    try {
      execFileSync("ip", ["link", "del", this.hostLink], { stdio: "ignore", timeout: 5_000 });
    } catch {
      // Deleting the hub namespace already removed the veth pair.
    }
    rmSync(markerPath(this.prefix), { force: true });
  }
}

function topologyNames(prefix: string) {
  return {
    hub: `${prefix}hub`,
    hostLink: `${prefix}cp`,
    workloads: WORKLOADS.map((name) => `${prefix}${name}`),
  };
}

function markerPath(prefix: string): string {
  return `${MARKER_DIR}/${prefix}`;
}

/** Refuses to run next to a live demo with the same prefix; takes over the prefix from a dead one. */
function claimMarker(prefix: string): void {
  mkdirSync(MARKER_DIR, { recursive: true });
  const path = markerPath(prefix);
  if (existsSync(path)) {
    const owner = Number(readFileSync(path, "utf8").trim());
    if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && processAlive(owner)) {
      throw new TopologyError(
        `a demo mesh with prefix "${prefix}" is already running (pid ${owner}); stop it or pick another --prefix`,
      );
    }
  }
  writeFileSync(path, String(process.pid));
}

/** What a run that died without cleaning up left behind under this prefix. */
async function removeLeftovers(names: ReturnType<typeof topologyNames>): Promise<void> {
  for (const ns of [...names.workloads, names.hub]) await deleteNamespace(ns);
  await deleteLink(names.hostLink);
}
