import type { RawHeaders } from "./head.ts";

/**
 * How much sooner than the server's advertised keep-alive timeout an idle connection is given up:
 * the server's clock started when it sent the response, the sidecar's when it returned the
 * connection, and a request must not set out in the last moment of the server's wait.
 */
export const KEEP_ALIVE_MARGIN_MS = 1000;

/**
 * The idle time a response's `Keep-Alive: timeout=N` leaves for reusing its connection (RFC 9112
 * Appendix C.2.2 names the field; node:http and many servers send it), minus the margin: 0 when
 * none is left, null when the response gives no such hint. Read from the raw fields, so that the
 * by-name map of a response is not built for this alone.
 */
export function keepAliveIdleMs(raw: RawHeaders): number | null {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length !== 10 || name.toLowerCase() !== "keep-alive") continue;
    const m = /(?:^|[,;\s])timeout\s*=\s*(\d{1,9})(?:$|[,;\s])/i.exec(raw[i + 1] as string);
    if (m) return Math.max(0, Number(m[1]) * 1000 - KEEP_ALIVE_MARGIN_MS);
  }
  return null;
}
