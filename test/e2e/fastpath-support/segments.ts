/**
 * Handshake segments as Linux sends them, for suites and benchmarks that hand packets to the
 * enforcer directly instead of through NFQUEUE.
 */
import { TCP_FLAGS } from "../../../native/index.ts";

/** A Linux-style IPv4 SYN or SYN-ACK (MSS, SACK-permitted, timestamps, window scale), checksums left 0:
 * the enforcer's packet code recomputes them on every packet it rewrites. */
export function segment(src: number[], dst: number[], sport: number, dport: number, flags: number): Buffer {
  const options = Buffer.from("020405b40402080a0001e2400000000001030307", "hex");
  const p = Buffer.alloc(20 + 20 + options.length);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p[8] = 64;
  p[9] = 6;
  Buffer.from(src).copy(p, 12);
  Buffer.from(dst).copy(p, 16);
  p.writeUInt16BE(sport, 20);
  p.writeUInt16BE(dport, 22);
  p.writeUInt32BE(0x1000, 24);
  if (flags & TCP_FLAGS.ACK) p.writeUInt32BE(0x2001, 28);
  p[32] = (40 / 4) << 4;
  p[33] = flags;
  p.writeUInt16BE(64240, 34);
  options.copy(p, 40);
  return p;
}
