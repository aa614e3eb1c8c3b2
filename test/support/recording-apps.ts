import { X509Certificate } from "node:crypto";
import http2 from "node:http2";
import type { IncomingHttpHeaders } from "node:http2";
import net from "node:net";
import type { AddressInfo, Socket } from "node:net";
import type { TlsCredentials } from "../../sidecar/inputs/sources.ts";

/**
 * Applications that keep every request exactly as it reached them (raw HTTP/1.1 heads, the raw
 * HTTP/2 header list), for suites that check what a sidecar forwards field by field.
 */

export interface HeadRecorder {
  readonly port: number;
  /** Request heads as received, latin1, without the final empty line. */
  readonly heads: string[];
  close(): Promise<void>;
}

export interface HeadRecorderOptions {
  /**
   * What follows a 101 answer to a request with an Upgrade field: "close" the connection, or keep
   * "reading" HTTP/1.1 heads on it (as an h2c server reads HTTP/2 after the switch: the worst case
   * for a proxy that splices after a 101). Default "close".
   */
  readonly afterSwitch?: "close" | "reading";
  /** The protocol the 101 names; default "test". */
  readonly upgradeTo?: string;
}

/** HTTP/1.1 app: records each request head; answers 200 (keep-alive unless asked to close), 101 to an upgrade. */
export async function startHeadRecorder(options: HeadRecorderOptions = {}): Promise<HeadRecorder> {
  const { afterSwitch = "close", upgradeTo = "test" } = options;
  const heads: string[] = [];
  const sockets = new Set<Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => undefined);
    let buf = "";
    s.on("data", (c: Buffer) => {
      buf += c.toString("latin1");
      for (let end = buf.indexOf("\r\n\r\n"); end >= 0; end = buf.indexOf("\r\n\r\n")) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        heads.push(head);
        if (/^upgrade:/im.test(head)) {
          const switched = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${upgradeTo}\r\nConnection: Upgrade\r\n\r\n`;
          if (afterSwitch === "close") {
            s.end(switched);
            return;
          }
          s.write(switched);
        } else if (/^connection: *close/im.test(head)) {
          s.end("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        } else {
          s.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    heads,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface H2Recorder {
  readonly port: number;
  /** Per request: its path and raw header list ([name, value, name, value, ...]). */
  readonly requests: { path: string; raw: string[] }[];
  close(): Promise<void>;
}

/** HTTP/2 app: records each request's path and raw header list; answers 200. */
export async function startH2Recorder(): Promise<H2Recorder> {
  const requests: { path: string; raw: string[] }[] = [];
  const server = http2.createServer();
  // The header list as it arrived (node passes it after the flags; the typings stop at flags).
  const onStream = (
    stream: http2.ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    _flags: number,
    raw: string[],
  ): void => {
    requests.push({ path: String(headers[":path"]), raw });
    stream.respond({ ":status": 200 });
    stream.end("ok");
  };
  server.on("stream", onStream as (s: http2.ServerHttp2Stream, h: IncomingHttpHeaders, f: number) => void);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** The values of every field of `head` named `name` (any case), in order. */
export function fieldValues(head: string, name: string): string[] {
  return head
    .split("\r\n")
    .slice(1)
    .filter((line) => line.slice(0, line.indexOf(":")).toLowerCase() === name)
    .map((line) => line.slice(line.indexOf(":") + 1).trim());
}

/** The DER of the leaf (first) certificate of a workload's chain. */
export function leafDer(creds: TlsCredentials): Buffer {
  const first = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(creds.certChainPem);
  if (first === null) throw new Error("no certificate in the chain");
  return new X509Certificate(first[0]).raw;
}
