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
  const child = ns.spawn(["node", "-e", SERVER, host, String(port), tag], as ? { as } : {});
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
