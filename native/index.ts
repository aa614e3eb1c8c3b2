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
  /** Verdicts of natively decided packets that could not be sent (the packet stays queued). */
  readonly verdictErrors: number;
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

/** A connection, client side first. */
export interface ConnectionTuple {
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly serverAddress: string;
  readonly serverPort: number;
}

/** Mark values the warm table sets, as the fast path's rules expect them (sidecar/fastpath/marks.ts). */
export interface WarmMarks {
  readonly mask: number;
  readonly accepted: number;
  readonly deny: number;
  readonly pendingOut: number;
  readonly pendingIn: number;
  readonly refused: number;
}

export interface WarmSettings {
  /** RFC 6994 ExID of the token option. */
  readonly exid: number;
  /** Token timestamp tolerance, either way; nonces are kept twice as long. */
  readonly windowMs: number;
  /** Live nonces the replay cache holds before it refuses new tokens. */
  readonly replayEntries: number;
  readonly marks: WarmMarks;
}

export type NonceCheck = "ok" | "replayed" | "full";
export type WarmPacketKind = "ourSyn" | "peerSyn" | "ourSynAck" | "peerSynAck";
const WARM_KINDS: readonly WarmPacketKind[] = ["ourSyn", "peerSyn", "ourSynAck", "peerSynAck"];
const NONCE_CHECKS: readonly NonceCheck[] = ["ok", "replayed", "full"];

/** A decision the warm table made, for a flow record. */
export interface WarmFlow {
  readonly direction: "ingress" | "egress";
  readonly tuple: ConnectionTuple;
  readonly peerRef: number;
  readonly decisionRef: number;
  readonly timeMs: number;
}

export interface WarmKindStats {
  /** Packets of this kind the table decided, and those it left to JS. */
  readonly handled: number;
  readonly handedToJs: number;
  /** Sums over the handled packets (wall clock, µs): deciding, and inside the verdict call. */
  readonly decideUs: number;
  readonly verdictUs: number;
}

export interface WarmStats {
  readonly synSigned: number;
  readonly synAccepted: number;
  readonly synDenied: number;
  readonly synAckSigned: number;
  readonly synAckAccepted: number;
  readonly synAckRefused: number;
  readonly macProofs: number;
  readonly policyRefusals: number;
  readonly peers: number;
  readonly servers: number;
  readonly decisions: number;
  readonly replayEntries: number;
  readonly kinds: Record<WarmPacketKind, WarmKindStats>;
}

/** A verdict the warm table gave to a packet handed to it directly (not through a queue). */
export interface WarmVerdict {
  readonly verdict: VerdictCode;
  readonly mark: number | undefined;
  readonly packet: Buffer | undefined;
  readonly kind: WarmPacketKind;
}

type TupleArgs = [clientAddress: string, clientPort: number, serverAddress: string, serverPort: number];

interface NativeWarm {
  setLocal(chainSection: Buffer, digest: Buffer): void;
  learnServer(address: string, port: number, digest: Buffer, key: Buffer): void;
  forgetServer(address: string, port: number): void;
  rememberPeer(
    chainSection: Buffer,
    purpose: "client" | "server",
    digest: Buffer,
    ref: number,
    validUntilMs: number,
    key: Buffer,
  ): void;
  rememberDecision(
    direction: 0 | 1,
    peerRef: number,
    peerAddress: string,
    port: number,
    allow: boolean,
    decisionRef: number,
  ): void;
  forgetPeers(): void;
  forgetDecisions(): void;
  rememberNonce(nonce: Buffer, nowMs: number): 0 | 1 | 2;
  pendingOut(...args: [...TupleArgs, nowMs: number]): Buffer[] | null;
  setPendingOut(...args: [...TupleArgs, nonces: Buffer[], nowMs: number]): void;
  deletePendingOut(...args: TupleArgs): void;
  pendingIn(...args: [...TupleArgs, nowMs: number]): [Buffer, Buffer | null, Buffer | null] | null;
  setPendingIn(
    ...args: [...TupleArgs, clientNonce: Buffer, key: Buffer | null, keyId: Buffer | null, nowMs: number]
  ): void;
  handle(
    hook: number,
    mark: number,
    packet: Buffer,
    nowMs: number,
  ): [VerdictCode, number | null, Buffer | null, number] | null;
  takeFlows(): [0 | 1, string, number, string, number, number, number, number][];
  stats(): WarmStats;
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
    warm?: NativeWarm,
  ) => NativeQueue;
  WarmHandshakes: new (settings: WarmSettings) => NativeWarm;
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

function tupleArgs(t: ConnectionTuple): TupleArgs {
  return [t.clientAddress, t.clientPort, t.serverAddress, t.serverPort];
}

/**
 * The fast path's warm handshakes in native code (native/src/warm_handshake.h): the enforcer teaches
 * it verified peers, servers with their pair keys and policy decisions, and the queues given it
 * decide warm handshakes from that without calling into JS. It also holds the per-connection state
 * both paths share: nonces sent, clients' nonces and the replay cache.
 */
export class WarmHandshakes {
  /** @internal the addon object, handed to the queues. */
  readonly native: NativeWarm;

  constructor(settings: WarmSettings) {
    this.native = new (load().WarmHandshakes)(settings);
  }

  /** This side's certificate section (as tokens carry it) and chain digest; voids peers, servers, decisions. */
  setLocal(chainSection: Buffer, digest: Buffer): void {
    this.native.setLocal(chainSection, digest);
  }

  learnServer(address: string, port: number, digest: Buffer, pairKey: Buffer): void {
    this.native.learnServer(address, port, digest, pairKey);
  }

  forgetServer(address: string, port: number): void {
    this.native.forgetServer(address, port);
  }

  /**
   * A peer whose chain (exactly these certificate-section bytes) verified for `purpose` (a client's
   * SYN or a server's SYN-ACK), until `validUntilMs`; it is taken for that purpose only.
   */
  rememberPeer(
    chainSection: Buffer,
    purpose: "client" | "server",
    digest: Buffer,
    ref: number,
    validUntilMs: number,
    pairKey: Buffer,
  ): void {
    this.native.rememberPeer(chainSection, purpose, digest, ref, validUntilMs, pairKey);
  }

  /** Policy's answer for this peer at this address and port, in one direction. */
  rememberDecision(
    direction: "ingress" | "egress",
    peerRef: number,
    peerAddress: string,
    port: number,
    allow: boolean,
    decisionRef: number,
  ): void {
    this.native.rememberDecision(
      direction === "ingress" ? 0 : 1,
      peerRef,
      peerAddress,
      port,
      allow,
      decisionRef,
    );
  }

  /** Forgets every peer (and so every decision): new trust. */
  forgetPeers(): void {
    this.native.forgetPeers();
  }

  /** Forgets every decision: new policy. */
  forgetDecisions(): void {
    this.native.forgetDecisions();
  }

  rememberNonce(nonce: Buffer, nowMs: number): NonceCheck {
    return NONCE_CHECKS[this.native.rememberNonce(nonce, nowMs)] as NonceCheck;
  }

  /** Nonces our SYN(s) for this connection carried, or null. */
  pendingOut(t: ConnectionTuple, nowMs: number): Buffer[] | null {
    return this.native.pendingOut(...tupleArgs(t), nowMs);
  }

  setPendingOut(t: ConnectionTuple, nonces: Buffer[], nowMs: number): void {
    this.native.setPendingOut(...tupleArgs(t), nonces, nowMs);
  }

  deletePendingOut(t: ConnectionTuple): void {
    this.native.deletePendingOut(...tupleArgs(t));
  }

  /** The accepted client's nonce and, when it proved itself by MAC, the pair key to answer in kind. */
  pendingIn(
    t: ConnectionTuple,
    nowMs: number,
  ): { clientNonce: Buffer; mac: { key: Buffer; keyId: Buffer } | null } | null {
    const p = this.native.pendingIn(...tupleArgs(t), nowMs);
    if (!p) return null;
    return { clientNonce: p[0], mac: p[1] && p[2] ? { key: p[1], keyId: p[2] } : null };
  }

  setPendingIn(
    t: ConnectionTuple,
    clientNonce: Buffer,
    mac: { key: Buffer; keyId: Buffer } | null,
    nowMs: number,
  ): void {
    this.native.setPendingIn(...tupleArgs(t), clientNonce, mac?.key ?? null, mac?.keyId ?? null, nowMs);
  }

  /** Decides a packet handed over directly (tests, benchmarks); null when it is JS's to decide. */
  handle(hook: number, mark: number, packet: Buffer, nowMs: number): WarmVerdict | null {
    const r = this.native.handle(hook, mark, packet, nowMs);
    if (!r) return null;
    return {
      verdict: r[0],
      mark: r[1] ?? undefined,
      packet: r[2] ?? undefined,
      kind: WARM_KINDS[r[3]] as WarmPacketKind,
    };
  }

  /** The decisions made since the last call, oldest first. */
  takeFlows(): WarmFlow[] {
    return this.native.takeFlows().map((f) => ({
      direction: f[0] === 0 ? "ingress" : "egress",
      tuple: { clientAddress: f[1], clientPort: f[2], serverAddress: f[3], serverPort: f[4] },
      peerRef: f[5],
      decisionRef: f[6],
      timeMs: f[7],
    }));
  }

  stats(): WarmStats {
    return this.native.stats();
  }
}

/** An NFQUEUE queue bound in this process's network namespace; every delivered packet needs a verdict. */
export class PacketQueue {
  private readonly native: NativeQueue;

  /** With `warm`, packets the warm table can decide never reach `onPacket`. */
  constructor(
    readonly queue: number,
    options: QueueOptions,
    onPacket: (packet: QueuedPacket) => void,
    warm?: WarmHandshakes,
  ) {
    const binding = load();
    if (!binding.NfQueue) {
      throw new NativeUnavailableError(
        "the native addon was built without libnetfilter_queue (install libnetfilter-queue-dev and libmnl-dev, then rebuild)",
      );
    }
    // The addon passes each packet's fields as arguments (cheaper than a native-built object).
    this.native = new binding.NfQueue(
      queue,
      options,
      (id, hook, family, mark, packet) => onPacket({ id, hook, family, mark, packet }),
      warm?.native,
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
