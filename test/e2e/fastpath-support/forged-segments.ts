/**
 * IPv4 TCP segments an attacker writes by hand, for the attack suites: any addresses, ports,
 * sequence numbers, flags and payload, with correct IP and TCP checksums (a receiving stack, and
 * conntrack before it, discard a segment whose checksum is wrong, which would hide what the
 * defence did). Also the fields of a captured segment, to continue its connection.
 */
const IP_HEADER = 20;
const TCP_HEADER = 20;

export const FLAGS = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

export interface SegmentFields {
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
  readonly seq: number;
  readonly ack: number;
  readonly flags: number;
  readonly payload?: Buffer;
}

function sum16(buf: Buffer, initial = 0): number {
  let s = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) s += buf.readUInt16BE(i);
  if (buf.length % 2 === 1) s += (buf.at(-1) as number) << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** Sets the IPv4 header checksum and the TCP checksum of `packet` (IPv4, any TCP options) in place. */
export function fixChecksums4(packet: Buffer): Buffer {
  const ihl = ((packet[0] as number) & 0x0f) * 4;
  packet.writeUInt16BE(0, 10);
  packet.writeUInt16BE(~sum16(packet.subarray(0, ihl)) & 0xffff, 10);
  const tcp = packet.subarray(ihl, packet.readUInt16BE(2));
  tcp.writeUInt16BE(0, 16);
  const pseudo = Buffer.alloc(12);
  packet.copy(pseudo, 0, 12, 20);
  pseudo[9] = 6;
  pseudo.writeUInt16BE(tcp.length, 10);
  tcp.writeUInt16BE(~sum16(tcp, sum16(pseudo)) & 0xffff, 16);
  return packet;
}

/** A complete IPv4 TCP segment (no options) with the given fields. */
export function forgedSegment(f: SegmentFields): Buffer {
  const payload = f.payload ?? Buffer.alloc(0);
  const packet = Buffer.alloc(IP_HEADER + TCP_HEADER + payload.length);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64;
  packet[9] = 6;
  Buffer.from(f.src.split(".").map(Number)).copy(packet, 12);
  Buffer.from(f.dst.split(".").map(Number)).copy(packet, 16);
  packet.writeUInt16BE(f.sport, 20);
  packet.writeUInt16BE(f.dport, 22);
  packet.writeUInt32BE(f.seq >>> 0, 24);
  packet.writeUInt32BE(f.ack >>> 0, 28);
  packet[32] = (TCP_HEADER / 4) << 4;
  packet[33] = f.flags;
  packet.writeUInt16BE(64240, 34);
  payload.copy(packet, IP_HEADER + TCP_HEADER);
  return fixChecksums4(packet);
}

/** The fields of a captured IPv4 TCP segment. */
export function segmentFields(packet: Buffer): Required<SegmentFields> {
  const ihl = ((packet[0] as number) & 0x0f) * 4;
  const dataAt = ihl + ((packet[ihl + 12] as number) >> 4) * 4;
  return {
    src: [...packet.subarray(12, 16)].join("."),
    dst: [...packet.subarray(16, 20)].join("."),
    sport: packet.readUInt16BE(ihl),
    dport: packet.readUInt16BE(ihl + 2),
    seq: packet.readUInt32BE(ihl + 4),
    ack: packet.readUInt32BE(ihl + 8),
    flags: packet[ihl + 13] as number,
    payload: packet.subarray(dataAt, packet.readUInt16BE(2)),
  };
}
