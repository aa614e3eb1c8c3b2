/**
 * Reads the server name (SNI) and offered ALPN protocols from the first TLS record of a connection,
 * without terminating TLS. Used for egress decisions by DNS name and to recognise a mesh peer's hello.
 */

export interface ClientHelloInfo {
  readonly serverName?: string;
  readonly alpn: readonly string[];
}

export type ClientHelloParse =
  | { readonly state: "complete"; readonly hello: ClientHelloInfo }
  | { readonly state: "incomplete" }
  | { readonly state: "invalid" };

const RECORD_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const EXT_ALPN = 0x0010;
/** TLS caps a plaintext record at 2^14 bytes. */
const MAX_RECORD = 16384;

class Reader {
  constructor(
    private readonly buf: Buffer,
    public pos: number,
    private readonly end: number,
  ) {}
  remaining(): number {
    return this.end - this.pos;
  }
  u8(): number {
    if (this.pos + 1 > this.end) throw new RangeError("truncated");
    return this.buf[this.pos++] as number;
  }
  u16(): number {
    if (this.pos + 2 > this.end) throw new RangeError("truncated");
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  u24(): number {
    return (this.u8() << 16) | this.u16();
  }
  bytes(n: number): Buffer {
    if (this.pos + n > this.end) throw new RangeError("truncated");
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  sub(n: number): Reader {
    if (this.pos + n > this.end) throw new RangeError("truncated");
    const r = new Reader(this.buf, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }
}

/** True when the bytes so far can be the start of a TLS handshake record. */
export function looksLikeTls(buf: Buffer): boolean {
  if (buf.length === 0) return false;
  if (buf[0] !== RECORD_HANDSHAKE) return false;
  if (buf.length >= 2 && buf[1] !== 0x03) return false;
  return true;
}

export function parseClientHello(buf: Buffer): ClientHelloParse {
  if (!looksLikeTls(buf)) return { state: "invalid" };
  if (buf.length < 5) return { state: "incomplete" };
  const recordLength = buf.readUInt16BE(3);
  if (recordLength === 0 || recordLength > MAX_RECORD) return { state: "invalid" };
  if (buf.length < 5 + recordLength) return { state: "incomplete" };
  try {
    const r = new Reader(buf, 5, 5 + recordLength);
    if (r.u8() !== HANDSHAKE_CLIENT_HELLO) return { state: "invalid" };
    const length = r.u24();
    // A hello split over several records is legal but rare; its extensions are then unavailable.
    if (length > r.remaining()) return { state: "complete", hello: { alpn: [] } };
    const body = r.sub(length);
    body.bytes(2 + 32); // version, random
    body.bytes(body.u8()); // session id
    body.bytes(body.u16()); // cipher suites
    body.bytes(body.u8()); // compression methods
    if (body.remaining() === 0) return { state: "complete", hello: { alpn: [] } };
    const extensions = body.sub(body.u16());
    let serverName: string | undefined;
    const alpn: string[] = [];
    while (extensions.remaining() > 0) {
      const type = extensions.u16();
      const ext = extensions.sub(extensions.u16());
      if (type === EXT_SERVER_NAME) {
        const list = ext.sub(ext.u16());
        while (list.remaining() > 0) {
          const nameType = list.u8();
          const name = list.bytes(list.u16());
          if (nameType === 0 && serverName === undefined) serverName = name.toString("latin1");
        }
      } else if (type === EXT_ALPN) {
        const list = ext.sub(ext.u16());
        while (list.remaining() > 0) alpn.push(list.bytes(list.u8()).toString("latin1"));
      }
    }
    const hello: ClientHelloInfo = serverName === undefined ? { alpn } : { serverName, alpn };
    return { state: "complete", hello };
  } catch {
    return { state: "invalid" };
  }
}
