import type { Http2Engine } from "../../sidecar/http/http2/proxy.ts";

/** `value` as a sidecar HTTP/2 engine, or an error naming `source` (a flag, a variable). */
export function http2Engine(value: string, source: string): Http2Engine {
  if (value === "sessions" || value === "relay") return value;
  throw new Error(`${source}: ${value} is neither sessions nor relay`);
}
