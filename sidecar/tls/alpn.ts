/**
 * The ALPN protocol of the sidecar-to-sidecar mTLS hop. It names the mesh protocol version and tells
 * the inbound sidecar what the caller meant to reach, before any application byte flows:
 *
 *     sigil/1;<protocol>;<port>      e.g. "sigil/1;h2;50051"
 *
 * `<protocol>` is how the tunnelled bytes are framed (`http1`, `h2` or `tcp`), `<port>` the
 * destination application port (1-65535, decimal, no leading zero). The server selects exactly the
 * string the client offered; a hello without a well-formed one fails the handshake
 * (no_application_protocol), so a plain TLS client can never be mistaken for a mesh peer.
 */

export const MESH_ALPN_PREFIX = "sigil/1;";

export type TunnelProtocol = "http1" | "h2" | "tcp";

export interface TunnelTarget {
  readonly protocol: TunnelProtocol;
  readonly port: number;
}

const MESH_ALPN = /^sigil\/1;(http1|h2|tcp);([1-9][0-9]{0,4})$/;

export function encodeMeshAlpn(target: TunnelTarget): string {
  if (!Number.isInteger(target.port) || target.port < 1 || target.port > 65535) {
    throw new RangeError(`tunnel port ${target.port} is outside 1-65535`);
  }
  return `${MESH_ALPN_PREFIX}${target.protocol};${target.port}`;
}

/** Parses one offered ALPN protocol; null when it is not a well-formed mesh protocol. */
export function decodeMeshAlpn(value: string): TunnelTarget | null {
  const m = MESH_ALPN.exec(value);
  if (!m) return null;
  const port = Number(m[2]);
  if (port > 65535) return null;
  return { protocol: m[1] as TunnelProtocol, port };
}

/** The first well-formed mesh protocol among those a client offered, or undefined. */
export function selectMeshAlpn(offered: readonly string[]): string | undefined {
  return offered.find((p) => decodeMeshAlpn(p) !== null);
}
