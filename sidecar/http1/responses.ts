import { HOP_BY_HOP } from "../responses.ts";
import type { RawHeaders, RequestHead, ResponseHead } from "./head.ts";

/** Serializes the heads the proxy sends on: hop-by-hop fields dropped, its own framing fields added. */

function endToEnd(raw: RawHeaders, connection: ReadonlySet<string>): string {
  let out = "";
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || connection.has(lower)) continue;
    out += `${name}: ${raw[i + 1] as string}\r\n`;
  }
  return out;
}

/** The request head sent upstream: always HTTP/1.1, with the normalized target. */
export function upstreamRequestHead(req: RequestHead, target: string): string {
  return (
    `${req.method} ${target} HTTP/1.1\r\n${endToEnd(req.raw, req.connection)}` +
    (req.chunked ? "transfer-encoding: chunked\r\n\r\n" : "\r\n")
  );
}

/** An upgrade request is passed on with all its fields (Connection and Upgrade included). */
export function upgradeRequestHead(req: RequestHead, target: string): string {
  let out = `${req.method} ${target} HTTP/1.1\r\n`;
  for (let i = 0; i < req.raw.length; i += 2)
    out += `${req.raw[i] as string}: ${req.raw[i + 1] as string}\r\n`;
  return `${out}\r\n`;
}

/** The response head sent to the client; `chunked` says whether the body goes on chunk-framed. */
export function downstreamResponseHead(res: ResponseHead, chunked: boolean, close: boolean): string {
  return (
    `HTTP/1.1 ${res.status} ${res.reason}\r\n${endToEnd(res.raw, res.connection)}` +
    (chunked ? "transfer-encoding: chunked\r\n" : "") +
    (close ? "connection: close\r\n\r\n" : "\r\n")
  );
}
