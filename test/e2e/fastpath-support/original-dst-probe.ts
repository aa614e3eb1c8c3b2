/**
 * Runs inside a test namespace: listens on an ephemeral port (dual stack), installs a nat OUTPUT
 * REDIRECT for each requested original destination, connects to it, and prints one JSON line per
 * case with what SO_ORIGINAL_DST reported on the accepted socket (or the typed error).
 *
 * argv[2]: JSON array of { family: 4 | 6, address: string, port: number, redirect: boolean,
 * notrack?: boolean }; notrack exempts the listener's port from conntrack, so the accepted socket
 * has no conntrack entry at all.
 */
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { connect, createServer } from "node:net";
import type { Socket } from "node:net";
import { OriginalDestinationError, originalDestinationOf } from "../../../native/index.ts";

interface Case {
  family: 4 | 6;
  address: string;
  port: number;
  redirect: boolean;
  notrack?: boolean;
}

const cases = JSON.parse(process.argv[2] ?? "[]") as Case[];
const accepted: Socket[] = [];
let wake: (() => void) | null = null;
const server = createServer((sock) => {
  accepted.push(sock);
  wake?.();
});
server.listen({ host: "::", port: 0, ipv6Only: false });
await once(server, "listening");
const listenPort = (server.address() as { port: number }).port;

async function nextAccepted(): Promise<Socket> {
  while (accepted.length === 0) await new Promise<void>((resolve) => (wake = resolve));
  return accepted.shift() as Socket;
}

for (const c of cases) {
  if (c.redirect) {
    const tool = c.family === 4 ? "iptables" : "ip6tables";
    execFileSync(tool, [
      "-w",
      "-t",
      "nat",
      "-A",
      "OUTPUT",
      "-p",
      "tcp",
      "-d",
      c.address,
      "--dport",
      String(c.port),
      "-j",
      "REDIRECT",
      "--to-ports",
      String(listenPort),
    ]);
  }
  if (c.notrack) {
    for (const chain of ["OUTPUT", "PREROUTING"]) {
      execFileSync(c.family === 4 ? "iptables" : "ip6tables", [
        "-w",
        "-t",
        "raw",
        "-A",
        chain,
        "-p",
        "tcp",
        "-m",
        "multiport",
        "--ports",
        String(listenPort),
        "-j",
        "CT",
        "--notrack",
      ]);
    }
  }
  const client = connect({ host: c.address, port: c.redirect ? c.port : listenPort });
  client.on("error", () => undefined);
  const sock = await nextAccepted();
  try {
    const dst = originalDestinationOf(sock);
    console.log(JSON.stringify({ case: c, listenPort, result: dst }));
  } catch (err) {
    const e = err as OriginalDestinationError;
    console.log(
      JSON.stringify({
        case: c,
        listenPort,
        error: {
          name: e.name,
          code: e.code,
          meaning: e.meaning,
          typed: err instanceof OriginalDestinationError,
        },
      }),
    );
  }
  sock.destroy();
  client.destroy();
}
server.close();
