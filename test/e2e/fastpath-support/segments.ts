/**
 * Handshake segments as Linux sends them, for suites and benchmarks that hand packets to the
 * enforcer directly instead of through NFQUEUE.
 */
import { TCP_FLAGS } from "../../../native/index.ts";

const TCP_OPTIONS = Buffer.from("020405b40402080a0001e2400000000001030307", "hex");
const TCP_HEADER_BYTES = 20 + TCP_OPTIONS.length;

/** The TCP header of a Linux-style SYN or SYN-ACK (MSS, SACK-permitted, timestamps, window scale). */
function tcpHeader(sport: number, dport: number, flags: number): Buffer {
  const t = Buffer.alloc(TCP_HEADER_BYTES);
  t.writeUInt16BE(sport, 0);
  t.writeUInt16BE(dport, 2);
  t.writeUInt32BE(0x1000, 4);
  if (flags & TCP_FLAGS.ACK) t.writeUInt32BE(0x2001, 8);
  t[12] = (TCP_HEADER_BYTES / 4) << 4;
  t[13] = flags;
  t.writeUInt16BE(64240, 14);
  TCP_OPTIONS.copy(t, 20);
  return t;
}

/** A Linux-style IPv4 SYN or SYN-ACK, checksums left 0: the enforcer's packet code recomputes them
 * on every packet it rewrites. */
export function segment(src: number[], dst: number[], sport: number, dport: number, flags: number): Buffer {
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + TCP_HEADER_BYTES, 2);
  ip[8] = 64;
  ip[9] = 6;
  Buffer.from(src).copy(ip, 12);
  Buffer.from(dst).copy(ip, 16);
  return Buffer.concat([ip, tcpHeader(sport, dport, flags)]);
}

/** The same as an IPv6 segment; addresses are 16 bytes each. */
export function segment6(src: number[], dst: number[], sport: number, dport: number, flags: number): Buffer {
  if (src.length !== 16 || dst.length !== 16) throw new RangeError("IPv6 addresses are 16 bytes");
  const ip = Buffer.alloc(40);
  ip[0] = 0x60;
  ip.writeUInt16BE(TCP_HEADER_BYTES, 4);
  ip[6] = 6;
  ip[7] = 64;
  Buffer.from(src).copy(ip, 8);
  Buffer.from(dst).copy(ip, 24);
  return Buffer.concat([ip, tcpHeader(sport, dport, flags)]);
}
