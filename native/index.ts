/**
 * Typed loader for the native addon (native/build/Release/sigil_native.node, built by node-gyp on
 * `npm ci`). Every native entry point is wrapped here so callers get TypeScript types and typed
 * errors instead of raw addon exceptions.
 */
import { createRequire } from "node:module";
import type { Socket } from "node:net";

export interface SocketAddress {
  readonly address: string;
  readonly port: number;
}

/** Raw errors thrown by the addon carry the failing system call and the errno name. */
interface NativeSyscallError extends Error {
  code?: string;
  errno?: number;
  syscall?: string;
}

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

/** One packet handed over by NFQUEUE. */
export interface QueuedPacket {
  /** Kernel packet id, the key of the verdict. */
  readonly id: number;
  /** Netfilter hook: 0 PREROUTING, 1 INPUT, 2 FORWARD, 3 OUTPUT, 4 POSTROUTING. */
  readonly hook: number;
  readonly family: 4 | 6;
  /** The packet mark (skb->mark) when it was queued. */
  readonly mark: number;
  /** The IP packet, starting at the IP header. */
  readonly packet: Buffer;
}

export const VERDICT = { DROP: 0, ACCEPT: 1, REPEAT: 4 } as const;
export type VerdictCode = (typeof VERDICT)[keyof typeof VERDICT];

export interface QueueStats {
  readonly queue: number;
  readonly received: number;
  readonly accepted: number;
  readonly dropped: number;
  readonly repeated: number;
  readonly modified: number;
  /** Messages the kernel dropped because the socket buffer was full (ENOBUFS). */
  readonly overruns: number;
  readonly receiveErrors: number;
  readonly callbackErrors: number;
}

export interface QueueOptions {
  /** Kernel queue length (packets waiting for a verdict); default 1024. */
  readonly maxLength?: number;
  /** Accept instead of drop when the kernel queue is full (NFQA_CFG_F_FAIL_OPEN). Default false. */
  readonly failOpen?: boolean;
  /** Netlink receive buffer in bytes; default 4 MiB. */
  readonly receiveBuffer?: number;
}

interface NativeQueue {
  verdict(id: number, verdict: VerdictCode, mark?: number, packet?: Buffer): void;
  stats(): QueueStats;
  close(): void;
}

interface NativeBinding {
  getOriginalDestination(fd: number, family: 4 | 6): SocketAddress;
  parseTcp(packet: Buffer, exid: number): ParsedFields;
  insertToken(packet: Buffer, token: Buffer, exid: number): Buffer;
  extractToken(packet: Buffer, exid: number): { packet: Buffer; token: Buffer } | null;
  rewriteAsReset(packet: Buffer): Buffer;
  threadCpuMicros(): number;
  hasNfQueue: boolean;
  NfQueue?: new (
    queue: number,
    options: QueueOptions,
    onPacket: (id: number, hook: number, family: 4 | 6, mark: number, packet: Buffer) => void,
  ) => NativeQueue;
}

/** A packet is malformed or cannot take the requested change; the message names the field. */
export class PacketError extends Error {
  override readonly name = "PacketError";
}

/** The addon could not be loaded (not built, or built for another Node ABI). */
export class NativeUnavailableError extends Error {
  override readonly name = "NativeUnavailableError";
}

/** SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST failed; `code` is the errno name, `meaning` says why. */
export class OriginalDestinationError extends Error {
  override readonly name = "OriginalDestinationError";
  constructor(
    readonly code: string,
    readonly errno: number,
    readonly fd: number,
    readonly family: 4 | 6,
    readonly meaning: string,
  ) {
    super(`original destination of fd ${fd} (IPv${family}): ${code}: ${meaning}`);
  }
}

const ORIGINAL_DST_MEANINGS: Readonly<Record<string, string>> = {
  ENOENT:
    "the connection was not redirected by iptables (no NAT in its conntrack entry), or the entry is gone",
  ENOTCONN: "the socket is not connected",
  EBADF: "the file descriptor is not open",
  ENOTSOCK: "the file descriptor is not a socket",
  ENOPROTOOPT:
    "the option is unknown for this socket: wrong address family for the socket, or the conntrack module for it is not loaded",
  EINVAL: "the socket is not a TCP/UDP socket of that family",
  EOPNOTSUPP:
    "the socket's address family is not the requested one (IPv4 socket asked as IPv6 or the reverse)",
};

let binding: NativeBinding | null = null;
let loadError: Error | null = null;

function load(): NativeBinding {
  if (binding) return binding;
  if (loadError) throw loadError;
  const require = createRequire(import.meta.url);
  try {
    binding = require("./build/Release/sigil_native.node") as NativeBinding;
    return binding;
  } catch (err) {
    loadError = new NativeUnavailableError(
      `native addon not loadable (run \`npm ci\` or \`node-gyp rebuild --directory native\`): ${(err as Error).message}`,
    );
    throw loadError;
  }
}

/** True when the addon is built and loadable in this process. */
export function nativeAvailable(): boolean {
  try {
    load();
    return true;
  } catch {
    return false;
  }
}

/** Original destination of a redirected, accepted TCP socket given its file descriptor. */
export function getOriginalDestination(fd: number, family: 4 | 6): SocketAddress {
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`fd must be a non-negative integer, got ${fd}`);
  if (family !== 4 && family !== 6) throw new RangeError(`family must be 4 or 6, got ${String(family)}`);
  const native = load();
  try {
    return native.getOriginalDestination(fd, family);
  } catch (err) {
    const e = err as NativeSyscallError;
    if (typeof e.code === "string" && typeof e.errno === "number") {
      throw new OriginalDestinationError(
        e.code,
        e.errno,
        fd,
        family,
        ORIGINAL_DST_MEANINGS[e.code] ?? e.message,
      );
    }
    throw err;
  }
}

/**
 * Original destination of an accepted `net.Socket`. The address family is the one of the
 * connection as conntrack saw it: an IPv4 client on a dual-stack listener (`::ffff:a.b.c.d`) is IPv4.
 */
export function originalDestinationOf(socket: Socket): SocketAddress {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } })._handle;
  const fd = handle?.fd;
  if (typeof fd !== "number" || fd < 0) {
    throw new OriginalDestinationError(
      "EBADF",
      9,
      -1,
      4,
      "the socket has no open file descriptor (closed or not a TCP socket)",
    );
  }
  const local = socket.localAddress ?? "";
  const family: 4 | 6 = socket.localFamily === "IPv6" && !/^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(local) ? 6 : 4;
  return getOriginalDestination(fd, family);
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

/** parseTcp's fields as the addon returns them, in this order (an array is cheaper to build than an object). */
type ParsedFields = [
  family: 4 | 6,
  src: string,
  dst: string,
  srcPort: number,
  dstPort: number,
  seq: number,
  ack: number,
  flags: number,
  tcpHeaderLength: number,
  payloadLength: number,
  hasToken: boolean,
];

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

/** CPU time (user + system) the calling thread has used, in µs: per-thread accounting for worker threads. */
export function threadCpuMicros(): number {
  return load().threadCpuMicros();
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

/** True when the addon was built with libnetfilter_queue (the fast-path datapath). */
export function nfqueueAvailable(): boolean {
  return nativeAvailable() && load().hasNfQueue;
}

/** An NFQUEUE queue bound in this process's network namespace; every delivered packet needs a verdict. */
export class PacketQueue {
  private readonly native: NativeQueue;

  constructor(
    readonly queue: number,
    options: QueueOptions,
    onPacket: (packet: QueuedPacket) => void,
  ) {
    const binding = load();
    if (!binding.NfQueue) {
      throw new NativeUnavailableError(
        "the native addon was built without libnetfilter_queue (install libnetfilter-queue-dev and libmnl-dev, then rebuild)",
      );
    }
    // The addon passes each packet's fields as arguments (cheaper than a native-built object).
    this.native = new binding.NfQueue(queue, options, (id, hook, family, mark, packet) =>
      onPacket({ id, hook, family, mark, packet }),
    );
  }

  /** Gives the verdict for packet `id`, optionally setting its mark and replacing its bytes. */
  verdict(id: number, verdict: VerdictCode, mark?: number, packet?: Buffer): void {
    this.native.verdict(id, verdict, mark, packet);
  }

  stats(): QueueStats {
    return this.native.stats();
  }

  /** Unbinds the queue and closes the netlink socket; idempotent. */
  close(): void {
    this.native.close();
  }
}
