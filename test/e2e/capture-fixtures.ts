/**
 * Real TCP endpoints for the capture suites: a server that answers every connection with a tag (and
 * reports each accept on stdout), and a client that prints the answer or the socket error code.
 */
import type { ChildProcess } from "node:child_process";
import type { Netns, RunAs } from "../support/netns.ts";

const SERVER = `
const net = require("node:net");
const [host, port, tag] = process.argv.slice(1);
const server = net.createServer((socket) => {
  process.stdout.write("accepted\\n");
  socket.on("error", () => undefined);
  socket.end(tag + "\\n");
});
server.on("error", (error) => { process.stderr.write(String(error) + "\\n"); process.exit(1); });
server.listen({ host, port: Number(port) }, () => process.stdout.write("listening\\n"));
`;

const CLIENT = `
const net = require("node:net");
const [host, port, timeoutMs] = process.argv.slice(1);
let data = "";
const socket = net.connect({ host, port: Number(port) });
socket.setTimeout(Number(timeoutMs), () => { process.stdout.write("ERR:TIMEOUT"); process.exit(0); });
socket.on("data", (chunk) => (data += chunk));
socket.on("end", () => { process.stdout.write(data.trim()); process.exit(0); });
socket.on("error", (error) => { process.stdout.write("ERR:" + error.code); process.exit(0); });
`;

/**
 * A TPROXY listener (Node cannot set IP_TRANSPARENT itself): answers each connection with the local
 * address the kernel gave the accepted socket, which under TPROXY is the connection's original destination.
 */
const TRANSPARENT_SERVER = `
import socket, sys, threading
port = int(sys.argv[1])
def listen(family, address, level, option):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.setsockopt(level, option, 1)
    s.bind((address, port))
    s.listen(64)
    return s
IP_TRANSPARENT, IPV6_TRANSPARENT = 19, 75
sockets = [listen(socket.AF_INET, "0.0.0.0", socket.SOL_IP, IP_TRANSPARENT),
           listen(socket.AF_INET6, "::", socket.IPPROTO_IPV6, IPV6_TRANSPARENT)]
def serve(s):
    while True:
        conn, _ = s.accept()
        host, local_port = conn.getsockname()[:2]
        print("accepted", flush=True)
        conn.sendall(("tproxy %s %d\\n" % (host, local_port)).encode())
        conn.close()
for s in sockets:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
`;

export interface TagServer {
  process: ChildProcess;
  /** Connections accepted so far. */
  accepted(): number;
  stop(): Promise<void>;
}

/** Starts a tag server in `ns` and resolves once it is listening. */
export function startTagServer(
  ns: Netns,
  host: string,
  port: number,
  tag: string,
  as?: RunAs,
): Promise<TagServer> {
  return startServer(ns, ["node", "-e", SERVER, host, String(port), tag], tag, as);
}

/** Starts the transparent (TPROXY) listener on `port` for IPv4 and IPv6; it runs as root. */
export function startTransparentServer(ns: Netns, port: number): Promise<TagServer> {
  return startServer(ns, ["/usr/bin/python3", "-c", TRANSPARENT_SERVER, String(port)], "transparent");
}

function startServer(ns: Netns, argv: string[], tag: string, as?: RunAs): Promise<TagServer> {
  const child = ns.spawn(argv, as ? { as } : {});
  let accepted = 0;
  let stderr = "";
  child.stderr?.on("data", (chunk) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server ${tag} did not start: ${stderr}`)), 10_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server ${tag} exited (${code}) before listening: ${stderr}`));
    });
    child.stdout?.on("data", (chunk: Buffer) => {
      for (const line of chunk.toString().split("\n")) {
        if (line === "accepted") accepted++;
        if (line === "listening") {
          clearTimeout(timer);
          resolve({
            process: child,
            accepted: () => accepted,
            stop: () =>
              new Promise((done) => {
                if (child.exitCode !== null || child.signalCode !== null) return done();
                child.once("exit", () => done());
                child.kill("SIGKILL");
              }),
          });
        }
      }
    });
  });
}

/** Connects from `ns` and returns the server's answer, or `ERR:<code>` (`ERR:TIMEOUT` after 3 s). */
export async function tcpRequest(ns: Netns, host: string, port: number, as?: RunAs): Promise<string> {
  return ns.execOk(["node", "-e", CLIENT, host, String(port), "3000"], as ? { as } : {});
}
