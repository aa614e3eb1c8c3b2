import { describe, expect, it } from "vitest";
import {
  PacketError,
  TCP_FLAGS,
  extractToken,
  insertToken,
  parseTcp,
  rewriteAsReset,
} from "../../native/index.ts";

const EXID = 0x5347;

/** Independent ones'-complement sum, so the addon's checksums are checked against a second implementation. */
function sum16(buf: Buffer, acc = 0): number {
  for (let i = 0; i + 1 < buf.length; i += 2) acc += buf.readUInt16BE(i);
  if (buf.length % 2) acc += (buf[buf.length - 1] as number) << 8;
  return acc;
}
function fold(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  return ~acc & 0xffff;
}

function tcpChecksum(packet: Buffer): number {
  const v6 = (packet[0] as number) >> 4 === 6;
  const ipLen = v6 ? 40 : ((packet[0] as number) & 0x0f) * 4;
  const seg = Buffer.from(packet.subarray(ipLen));
  seg.writeUInt16BE(0, 16);
  const pseudo = Buffer.alloc(v6 ? 40 : 12);
  if (v6) {
    packet.copy(pseudo, 0, 8, 40);
    pseudo.writeUInt32BE(seg.length, 32);
    pseudo[39] = 6;
  } else {
    packet.copy(pseudo, 0, 12, 20);
    pseudo[9] = 6;
    pseudo.writeUInt16BE(seg.length, 10);
  }
  return fold(sum16(seg, sum16(pseudo)));
}

function ipv4Checksum(packet: Buffer): number {
  const h = Buffer.from(packet.subarray(0, 20));
  h.writeUInt16BE(0, 10);
  return fold(sum16(h));
}

function checksumsValid(packet: Buffer): boolean {
  const v6 = (packet[0] as number) >> 4 === 6;
  const ipLen = v6 ? 40 : 20;
  if (!v6 && packet.readUInt16BE(10) !== ipv4Checksum(packet)) return false;
  return packet.readUInt16BE(ipLen + 16) === tcpChecksum(packet);
}

/** A SYN as Linux sends it: MSS, SACK-permitted, timestamps, NOP, window scale (20 option bytes). */
function syn(family: 4 | 6, opts: { options?: Buffer; payload?: Buffer; flags?: number } = {}): Buffer {
  const options = opts.options ?? Buffer.from("020405b40402080a0001e2400000000001030307", "hex");
  const payload = opts.payload ?? Buffer.alloc(0);
  const tcp = Buffer.alloc(20 + options.length);
  tcp.writeUInt16BE(40123, 0);
  tcp.writeUInt16BE(5432, 2);
  tcp.writeUInt32BE(0xdeadbeef, 4);
  tcp.writeUInt32BE(0, 8);
  tcp[12] = ((20 + options.length) / 4) << 4;
  tcp[13] = opts.flags ?? TCP_FLAGS.SYN;
  tcp.writeUInt16BE(64240, 14);
  options.copy(tcp, 20);
  let ip: Buffer;
  if (family === 4) {
    ip = Buffer.alloc(20);
    ip[0] = 0x45;
    ip.writeUInt16BE(20 + tcp.length + payload.length, 2);
    ip.writeUInt16BE(0x4000, 6);
    ip[8] = 64;
    ip[9] = 6;
    Buffer.from([198, 18, 0, 1]).copy(ip, 12);
    Buffer.from([198, 18, 0, 2]).copy(ip, 16);
  } else {
    ip = Buffer.alloc(40);
    ip[0] = 0x60;
    ip.writeUInt16BE(tcp.length + payload.length, 4);
    ip[6] = 6;
    ip[7] = 64;
    Buffer.from("20010002000000000000000000000001", "hex").copy(ip, 8);
    Buffer.from("20010002000000000000000000000002", "hex").copy(ip, 24);
  }
  const packet = Buffer.concat([ip, tcp, payload]);
  const ipLen = family === 4 ? 20 : 40;
  packet.writeUInt16BE(tcpChecksum(packet), ipLen + 16);
  if (family === 4) packet.writeUInt16BE(ipv4Checksum(packet), 10);
  return packet;
}

describe.each([4, 6] as const)("native TCP packet surgery (IPv%i)", (family) => {
  const token = Buffer.from("a signed token: identity, nonce, timestamp, proof".repeat(12));

  it("parses addresses, ports, flags and options", () => {
    const info = parseTcp(syn(family), EXID);
    expect(info).toMatchObject({
      family,
      src: family === 4 ? "198.18.0.1" : "2001:2::1",
      dst: family === 4 ? "198.18.0.2" : "2001:2::2",
      srcPort: 40123,
      dstPort: 5432,
      seq: 0xdeadbeef,
      flags: TCP_FLAGS.SYN,
      tcpHeaderLength: 40,
      payloadLength: 0,
      hasToken: false,
    });
  });

  it("inserts the option and the token with correct lengths and checksums, and strips them back byte for byte", () => {
    const original = syn(family);
    const withToken = insertToken(original, token, EXID);
    expect(withToken.length).toBe(original.length + 4 + token.length);
    expect(checksumsValid(withToken)).toBe(true);
    const info = parseTcp(withToken, EXID);
    expect(info.hasToken).toBe(true);
    expect(info.tcpHeaderLength).toBe(44);
    expect(info.payloadLength).toBe(token.length);
    if (family === 4) expect(withToken.readUInt16BE(2)).toBe(withToken.length);
    else expect(withToken.readUInt16BE(4)).toBe(withToken.length - 40);
    // A different ExID is someone else's experiment, not our token.
    expect(parseTcp(withToken, EXID + 1).hasToken).toBe(false);
    expect(extractToken(withToken, EXID + 1)).toBeNull();

    const stripped = extractToken(withToken, EXID);
    expect(stripped?.token.equals(token)).toBe(true);
    expect(stripped?.packet.equals(original)).toBe(true);
  });

  it("returns null when there is no token to strip", () => {
    expect(extractToken(syn(family), EXID)).toBeNull();
  });

  it("refuses segments that cannot take a token", () => {
    const tokened = insertToken(syn(family), token, EXID);
    expect(() => insertToken(tokened, token, EXID)).toThrow(/already carries a token/);
    expect(() => insertToken(syn(family, { payload: Buffer.from("data") }), token, EXID)).toThrow(
      /already carries payload/,
    );
    const fullOptions = Buffer.alloc(40, 1); // 40 NOPs: data offset 15, no room left
    expect(() => insertToken(syn(family, { options: fullOptions }), token, EXID)).toThrow(
      /no room for the token option/,
    );
    expect(() => insertToken(syn(family), Buffer.alloc(0), EXID)).toThrow(PacketError);
  });

  it("rejects malformed input with a PacketError naming the field", () => {
    const p = syn(family);
    expect(() => parseTcp(p.subarray(0, family === 4 ? 30 : 50), EXID)).toThrow(/length|truncated/);
    const badOption = syn(family, { options: Buffer.from([2, 40, 0, 0]) });
    expect(() => parseTcp(badOption, EXID)).toThrow(/TCP option length invalid/);
    const twice = syn(family, {
      options: Buffer.from([253, 4, 0x53, 0x47, 253, 4, 0x53, 0x47]),
    });
    expect(() => parseTcp(twice, EXID)).toThrow(/present twice/);
    if (family === 4) {
      const frag = Buffer.from(p);
      frag.writeUInt16BE(0x2000, 6); // more fragments
      expect(() => parseTcp(frag, EXID)).toThrow(/fragment/);
      const udp = Buffer.from(p);
      udp[9] = 17;
      expect(() => parseTcp(udp, EXID)).toThrow(/not TCP/);
    } else {
      const frag = Buffer.from(p);
      frag[6] = 44;
      expect(() => parseTcp(frag, EXID)).toThrow(/fragment/);
    }
    expect(() => parseTcp(Buffer.from([0x15, 0, 0]), EXID)).toThrow(PacketError);
  });

  it("rewrites a SYN-ACK carrying a token into a bare RST|ACK", () => {
    const synAck = insertToken(syn(family, { flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK }), token, EXID);
    const rst = rewriteAsReset(synAck);
    const info = parseTcp(rst, EXID);
    expect(info.flags).toBe(TCP_FLAGS.RST | TCP_FLAGS.ACK);
    expect(info.payloadLength).toBe(0);
    expect(info.tcpHeaderLength).toBe(20);
    expect(info.seq).toBe(0xdeadbeef);
    expect(checksumsValid(rst)).toBe(true);
  });
});
