/**
 * What the demo needs from the machine, checked before it changes anything, so a missing piece is one
 * clear sentence instead of a failure halfway through building the mesh.
 */
import { run } from "./exec.ts";

/** Commands the demo runs, and the Debian package each comes from. */
const TOOLS: Record<string, string> = {
  ip: "iproute2",
  iptables: "iptables",
  "iptables-restore": "iptables",
  ip6tables: "iptables",
  tcpdump: "tcpdump",
  tshark: "tshark",
  curl: "curl",
  nc: "netcat-openbsd",
  setpriv: "util-linux",
  useradd: "passwd",
  getent: "libc-bin",
};

export class PreflightError extends Error {
  override name = "PreflightError";
}

export async function preflight(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new PreflightError("run the demo as root: it creates network namespaces, veths and iptables rules");
  }
  const missing: string[] = [];
  for (const [tool, pkg] of Object.entries(TOOLS)) {
    const found = await run(["sh", "-c", 'command -v "$1"', "sh", tool]);
    if (found.code !== 0) missing.push(`${tool} (package ${pkg})`);
  }
  if (missing.length > 0) throw new PreflightError(`missing commands: ${missing.join(", ")}`);
}
