/**
 * Network namespaces for end-to-end suites: create them, wire them with veth pairs on a bridge, run
 * commands inside them (optionally as another uid/gid), and remove everything afterwards.
 *
 * Every namespace this module makes is named `sg` + random hex + a short label, and gets a marker file
 * under /run/sigil-test-netns holding the creating process id. `sweepStaleNamespaces()` (run once per
 * process before the first namespace is made) removes namespaces whose creator is dead, so a crashed run
 * never leaves state behind for the next one. Namespaces without a marker are never touched.
 *
 * Addresses: hosts of a lab get 198.18.<subnet>.<n>/24 and 2001:2:0:<subnet>::<n>/64 (benchmarking
 * ranges, RFC 2544 / RFC 5180); nothing here routes anywhere else.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";

const MARKER_DIR = "/run/sigil-test-netns";
const DEFAULT_TIMEOUT_MS = 20_000;

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunAs {
  uid: number;
  gid: number;
}

export interface ExecOptions {
  /** Run the command with this uid/gid (and no supplementary groups). */
  as?: RunAs;
  /** Written to the command's stdin, which is then closed. */
  input?: string;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export class CommandError extends Error {
  constructor(
    readonly command: string[],
    readonly result: ExecResult,
  ) {
    super(
      `command failed (${result.signal ?? `exit ${result.code}`}): ${command.join(" ")}\n${result.stderr.trim()}`,
    );
    this.name = "CommandError";
  }
}

/** Runs a command on the host and resolves with its outcome; rejects only if it cannot be started. */
export function run(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error("run: empty command");
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      {
        timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        maxBuffer: 64 * 1024 * 1024,
        env: opts.env ?? process.env,
      },
      (error, stdout, stderr) => {
        if (error && typeof error.code === "string") {
          reject(new Error(`cannot run ${cmd}: ${error.message}`));
          return;
        }
        resolve({
          code: child.exitCode,
          signal: child.signalCode,
          stdout: String(stdout),
          stderr: String(stderr),
        });
      },
    );
    // A command that exits without reading its input closes the pipe first; that is not a failure.
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(opts.input ?? "");
  });
}

/** Like run(), but rejects with a CommandError unless the command exits 0; resolves with stdout. */
export async function runOk(argv: string[], opts: ExecOptions = {}): Promise<string> {
  const result = await run(argv, opts);
  if (result.code !== 0) throw new CommandError(argv, result);
  return result.stdout;
}

function asUserPrefix(as: RunAs | undefined): string[] {
  if (as === undefined) return [];
  return ["setpriv", `--reuid=${as.uid}`, `--regid=${as.gid}`, "--clear-groups", "--"];
}

export class Netns {
  private readonly children = new Set<ChildProcess>();
  private destroyed = false;

  constructor(readonly name: string) {}

  /** The argv that runs `argv` inside this namespace. */
  wrap(argv: string[], as?: RunAs): string[] {
    return ["ip", "netns", "exec", this.name, ...asUserPrefix(as), ...argv];
  }

  exec(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return run(this.wrap(argv, opts.as), opts);
  }

  execOk(argv: string[], opts: ExecOptions = {}): Promise<string> {
    return runOk(this.wrap(argv, opts.as), opts);
  }

  /** Starts a long-running process inside the namespace; destroy() kills it if it is still running. */
  spawn(argv: string[], opts: { as?: RunAs; env?: NodeJS.ProcessEnv } = {}): ChildProcess {
    const [cmd, ...args] = this.wrap(argv, opts.as);
    const child = spawn(cmd as string, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: opts.env ?? process.env,
    });
    child.stdin?.on("error", () => undefined);
    this.children.add(child);
    child.once("exit", () => this.children.delete(child));
    return child;
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await Promise.all([...this.children].map((child) => killAndWait(child)));
    await deleteNamespace(this.name);
    live.delete(this.name);
  }
}

function killAndWait(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 5_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGKILL");
  });
}

/** Kills whatever still runs in the namespace (processes started by others, e.g. via `ip netns exec`), then deletes it. */
async function deleteNamespace(name: string): Promise<void> {
  const pids = await run(["ip", "netns", "pids", name]);
  for (const pid of pids.stdout.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  const result = await run(["ip", "netns", "del", name]);
  if (result.code !== 0 && !/No such file/.test(result.stderr)) {
    throw new CommandError(["ip", "netns", "del", name], result);
  }
  rmSync(`${MARKER_DIR}/${name}`, { force: true });
}

/** Namespaces made by this process that are not yet destroyed: removed at exit if a suite forgot or crashed. */
const live = new Set<string>();
let exitHookInstalled = false;
let swept = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const name of live) {
      try {
        execFileSync("ip", ["netns", "del", name], { stdio: "ignore" });
        rmSync(`${MARKER_DIR}/${name}`, { force: true });
      } catch {
        // Best effort at exit; the next run's sweep removes what is left.
      }
    }
  });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes `sg*` namespaces made by this helper in processes that no longer exist. Returns their names. */
export async function sweepStaleNamespaces(): Promise<string[]> {
  mkdirSync(MARKER_DIR, { recursive: true });
  const existing = new Set(
    (await runOk(["ip", "netns", "list"]))
      .split("\n")
      .map((line) => line.split(" ")[0] ?? "")
      .filter((name) => name.startsWith("sg")),
  );
  const removed: string[] = [];
  for (const name of readdirSync(MARKER_DIR)) {
    const owner = Number(readFileSync(`${MARKER_DIR}/${name}`, "utf8").trim());
    if (Number.isInteger(owner) && owner > 0 && processAlive(owner)) continue;
    if (existing.has(name)) {
      await deleteNamespace(name);
      removed.push(name);
    } else {
      rmSync(`${MARKER_DIR}/${name}`, { force: true });
    }
  }
  return removed;
}

/** A short random name: `sg` + 6 hex + up to 7 characters of the label (≤ 15 characters in all). */
export function uniqueName(label: string): string {
  const clean = label
    .toLowerCase()
    .replace(/[^a-z0-9]/g, "")
    .slice(0, 7);
  return `sg${randomBytes(3).toString("hex")}${clean}`;
}

/** Creates an empty namespace with loopback up. */
export async function createNetns(label: string): Promise<Netns> {
  if (!swept) {
    swept = true;
    await sweepStaleNamespaces();
  }
  installExitHook();
  const name = uniqueName(label);
  mkdirSync(MARKER_DIR, { recursive: true });
  writeFileSync(`${MARKER_DIR}/${name}`, String(process.pid));
  live.add(name);
  await runOk(["ip", "netns", "add", name]);
  const ns = new Netns(name);
  await ns.execOk(["ip", "link", "set", "lo", "up"]);
  return ns;
}

export interface LabHost {
  /** The label the host was created with. */
  label: string;
  ns: Netns;
  /** The host's interface on the lab's LAN. */
  ifname: string;
  ipv4: string;
  ipv6: string;
}

export interface LabOptions {
  /** Third octet of 198.18.<subnet>.0/24 (and 2001:2:0:<subnet>::/64). Default 0. */
  subnet?: number;
}

/**
 * Several hosts on one LAN: each host namespace has `eth0` with an IPv4 and IPv6 address; the other
 * end of its veth sits on a bridge in a separate hub namespace, so hosts reach each other directly.
 */
export class NetnsLab {
  private constructor(
    readonly hub: Netns,
    private readonly hosts: Map<string, LabHost>,
  ) {}

  static async create(labels: string[], opts: LabOptions = {}): Promise<NetnsLab> {
    const subnet = opts.subnet ?? 0;
    if (!Number.isInteger(subnet) || subnet < 0 || subnet > 255)
      throw new Error(`subnet ${subnet} out of range`);
    if (labels.length === 0 || labels.length > 250) throw new Error("a lab needs 1..250 hosts");
    if (new Set(labels).size !== labels.length) throw new Error("lab host labels must be unique");
    const created: Netns[] = [];
    try {
      const hub = await createNetns("hub");
      created.push(hub);
      await hub.execOk(["ip", "link", "add", "br0", "type", "bridge"]);
      await hub.execOk(["ip", "link", "set", "br0", "up"]);
      const hosts = new Map<string, LabHost>();
      for (const [index, label] of labels.entries()) {
        const ns = await createNetns(label);
        created.push(ns);
        const port = `p${index}`;
        await hub.execOk([
          "ip",
          "link",
          "add",
          port,
          "type",
          "veth",
          "peer",
          "name",
          "eth0",
          "netns",
          ns.name,
        ]);
        await hub.execOk(["ip", "link", "set", port, "master", "br0", "up"]);
        const ipv4 = `198.18.${subnet}.${index + 1}`;
        const ipv6 = `2001:2:0:${subnet.toString(16)}::${(index + 1).toString(16)}`;
        await ns.execOk(["ip", "addr", "add", `${ipv4}/24`, "dev", "eth0"]);
        await ns.execOk(["ip", "-6", "addr", "add", `${ipv6}/64`, "dev", "eth0", "nodad"]);
        await ns.execOk(["ip", "link", "set", "eth0", "up"]);
        hosts.set(label, { label, ns, ifname: "eth0", ipv4, ipv6 });
      }
      return new NetnsLab(hub, hosts);
    } catch (error) {
      await Promise.allSettled(created.map((ns) => ns.destroy()));
      throw error;
    }
  }

  host(label: string): LabHost {
    const host = this.hosts.get(label);
    if (host === undefined) throw new Error(`no lab host "${label}"`);
    return host;
  }

  async destroy(): Promise<void> {
    const results = await Promise.allSettled([...this.hosts.values()].map((h) => h.ns.destroy()));
    await this.hub.destroy();
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
  }
}

/** Resolves once `probe` returns true, polling every `intervalMs`; rejects after `timeoutMs`. */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean> | boolean,
  { timeoutMs = 10_000, intervalMs = 25 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
