import type { NativeBinding, NativeSyscallError } from "./addon.ts";
import { load } from "./load.ts";

/** Parsed IP + TCP headers of one packet. */
export interface TcpInfo {
  readonly family: 4 | 6;
  readonly src: string;
  readonly dst: string;
  readonly srcPort: number;
  readonly dstPort: number;
  readonly seq: number;
  readonly ack: number;
  /** TCP flags byte (see TCP_FLAGS). */
  readonly flags: number;
  readonly tcpHeaderLength: number;
  readonly payloadLength: number;
  /** Whether the segment carries the token option with the given ExID. */
  readonly hasToken: boolean;
}

export const TCP_FLAGS = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

/** A packet is malformed or cannot take the requested change; the message names the field. */
export class PacketError extends Error {
  override readonly name = "PacketError";
}

function packetCall<T>(body: (native: NativeBinding) => T): T {
  const native = load();
  try {
    return body(native);
  } catch (err) {
    if ((err as NativeSyscallError).code === "EPACKET") throw new PacketError((err as Error).message);
    throw err;
  }
}

/** Parses the IP and TCP headers; throws PacketError for anything but a whole, unfragmented TCP segment. */
export function parseTcp(packet: Buffer, exid: number): TcpInfo {
  const f = packetCall((n) => n.parseTcp(packet, exid));
  return {
    family: f[0],
    src: f[1],
    dst: f[2],
    srcPort: f[3],
    dstPort: f[4],
    seq: f[5],
    ack: f[6],
    flags: f[7],
    tcpHeaderLength: f[8],
    payloadLength: f[9],
    hasToken: f[10],
  };
}

/**
 * The packet with the token option (TCP option 253 with `exid`) added and `token` as its payload;
 * IP length fields and IP/TCP checksums recomputed.
 */
export function insertToken(packet: Buffer, token: Buffer, exid: number): Buffer {
  return packetCall((n) => n.insertToken(packet, token, exid));
}

/** Removes the token option and payload; null when the segment carries no token option. */
export function extractToken(packet: Buffer, exid: number): { packet: Buffer; token: Buffer } | null {
  return packetCall((n) => n.extractToken(packet, exid));
}

/** The segment rewritten as RST|ACK (same addresses, ports, seq, ack; no options, no payload). */
export function rewriteAsReset(packet: Buffer): Buffer {
  return packetCall((n) => n.rewriteAsReset(packet));
}
