/**
 * A tiny authoritative DNS server on 127.0.0.1 (UDP) for suites that must resolve names without any
 * network: A and AAAA answers from a table the test edits, NXDOMAIN for unknown names, and names
 * whose queries are dropped (to exercise lookup timeouts). It counts the queries per name.
 */
import dgram from "node:dgram";

export interface ZoneRecord {
  readonly a?: readonly string[];
  readonly aaaa?: readonly string[];
  readonly ttl: number;
}

export interface TestDnsServer {
  /** `127.0.0.1:<port>`, for `Resolver.setServers` / the sidecar's `egressDns.servers`. */
  readonly server: string;
  readonly zone: Map<string, ZoneRecord>;
  /** Names whose queries get no answer at all. */
  readonly silent: Set<string>;
  queries(name: string): number;
  close(): Promise<void>;
}

const TYPE_A = 1;
const TYPE_AAAA = 28;

function ipv6Bytes(address: string): Buffer {
  const [head = "", tail] = address.split("::");
  const parse = (s: string): number[] => (s === "" ? [] : s.split(":").map((g) => parseInt(g, 16)));
  const left = parse(head);
  const right = tail === undefined ? [] : parse(tail);
  const groups = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

function readQuestion(msg: Buffer): { name: string; type: number; end: number } | null {
  let offset = 12;
  const labels: string[] = [];
  while (offset < msg.length) {
    const len = msg[offset] as number;
    offset++;
    if (len === 0) break;
    if (len > 63 || offset + len > msg.length) return null;
    labels.push(msg.toString("latin1", offset, offset + len));
    offset += len;
  }
  if (offset + 4 > msg.length) return null;
  return { name: labels.join(".").toLowerCase(), type: msg.readUInt16BE(offset), end: offset + 4 };
}

function answer(msg: Buffer, zone: Map<string, ZoneRecord>): Buffer | null {
  if (msg.length < 12) return null;
  const q = readQuestion(msg);
  if (q === null) return null;
  const record = zone.get(q.name);
  const question = msg.subarray(12, q.end);
  const rdatas: Buffer[] = [];
  if (record && q.type === TYPE_A)
    for (const a of record.a ?? []) rdatas.push(Buffer.from(a.split(".").map(Number)));
  if (record && q.type === TYPE_AAAA) for (const a of record.aaaa ?? []) rdatas.push(ipv6Bytes(a));
  const header = Buffer.alloc(12);
  header.writeUInt16BE(msg.readUInt16BE(0), 0);
  const rd = msg.readUInt16BE(2) & 0x0100;
  header.writeUInt16BE(0x8480 | rd | (record ? 0 : 3), 2); // QR, AA, RA; rcode NXDOMAIN when unknown
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(rdatas.length, 6);
  const answers = rdatas.map((rdata) => {
    const rr = Buffer.alloc(12);
    rr.writeUInt16BE(0xc00c, 0); // pointer to the question name
    rr.writeUInt16BE(q.type, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(record?.ttl ?? 0, 6);
    rr.writeUInt16BE(rdata.length, 10);
    return Buffer.concat([rr, rdata]);
  });
  return Buffer.concat([header, question, ...answers]);
}

export async function startDnsServer(): Promise<TestDnsServer> {
  const zone = new Map<string, ZoneRecord>();
  const silent = new Set<string>();
  const counts = new Map<string, number>();
  const socket = dgram.createSocket("udp4");
  socket.on("message", (msg, rinfo) => {
    const q = msg.length >= 12 ? readQuestion(msg) : null;
    if (q !== null) counts.set(q.name, (counts.get(q.name) ?? 0) + 1);
    if (q === null || silent.has(q.name)) return;
    const reply = answer(msg, zone);
    if (reply) socket.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  const { port } = socket.address();
  return {
    server: `127.0.0.1:${port}`,
    zone,
    silent,
    queries: (name) => counts.get(name) ?? 0,
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}
