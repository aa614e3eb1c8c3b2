/**
 * A scripted raw HTTP/1.1 upstream on loopback for the sidecar suites (an application behind a
 * sidecar, or an egress destination): it reads request heads the way a lenient server would (up to
 * the blank line, no body framing) and answers exactly what the suite scripts, so a suite can make
 * it misbehave (extra bytes, odd framing, a protocol switch) where a real HTTP server would refuse to.
 */
import { once } from "node:events";
import net from "node:net";
import type { AddressInfo, Socket } from "node:net";

export interface RawRequest {
  /** The request line as received. */
  readonly line: string;
  /** Its target (second field), "" when missing. */
  readonly path: string;
  readonly socket: Socket;
  /** Resolves once this request's connection is closed. */
  readonly closed: Promise<void>;
}

/**
 * What the script does with one request head: write its answer on `req.socket`, and return "echo" to
 * switch the connection to echoing every byte from then on (bytes already read after the head too).
 */
export type RawScript = (req: RawRequest) => "echo" | void;

export interface RawUpstream {
  readonly port: number;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Request lines read, across connections, in arrival order. */
  readonly lines: readonly string[];
  /** Every byte received, latin1. */
  received(): string;
  close(): Promise<void>;
}

export async function startRawUpstream(script: RawScript): Promise<RawUpstream> {
  const lines: string[] = [];
  const received: string[] = [];
  const sockets = new Set<Socket>();
  const state = { connections: 0 };
  const server = net.createServer((s: Socket) => {
    state.connections++;
    sockets.add(s);
    const closed = once(s, "close").then(() => undefined);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => undefined);
    let buf = "";
    let echo = false;
    s.on("data", (c: Buffer) => {
      received.push(c.toString("latin1"));
      if (echo) {
        s.write(c);
        return;
      }
      buf += c.toString("latin1");
      for (let e = buf.indexOf("\r\n\r\n"); e >= 0 && !echo; e = buf.indexOf("\r\n\r\n")) {
        const line = buf.slice(0, buf.indexOf("\r\n"));
        buf = buf.slice(e + 4);
        lines.push(line);
        if (script({ line, path: line.split(" ")[1] ?? "", socket: s, closed }) === "echo") {
          // Bytes after the head were sent before the switch was seen: they are echoed too.
          echo = true;
          if (buf !== "") s.write(buf);
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    get connections() {
      return state.connections;
    },
    lines,
    received: () => received.join(""),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
