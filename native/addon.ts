/**
 * The addon's shape as its N-API functions hand it over, with the plain data they take and return.
 * Only the wrappers beside this file call it; everyone else imports `index.ts`.
 */

export interface SocketAddress {
  readonly address: string;
  readonly port: number;
}

/** The process that connected a Unix domain socket, as the kernel recorded it (SO_PEERCRED). */
export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** Raw errors thrown by the addon carry the failing system call and the errno name. */
export interface NativeSyscallError extends Error {
  code?: string;
  errno?: number;
  syscall?: string;
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

export interface NativeQueue {
  verdict(id: number, verdict: VerdictCode, mark?: number, packet?: Buffer): void;
  stats(): QueueStats;
  close(): void;
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

export type WarmPacketKind = "ourSyn" | "peerSyn" | "ourSynAck" | "peerSynAck";

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

export type TupleArgs = [
  clientAddress: string,
  clientPort: number,
  serverAddress: string,
  serverPort: number,
];

export interface NativeWarm {
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

/** parseTcp's fields as the addon returns them, in this order (an array is cheaper to build than an object). */
export type ParsedFields = [
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

export interface NativeBinding {
  getOriginalDestination(fd: number, family: 4 | 6): SocketAddress;
  getPeerCredentials(fd: number): PeerCredentials;
  parseTcp(packet: Buffer, exid: number): ParsedFields;
  insertToken(packet: Buffer, token: Buffer, exid: number): Buffer;
  extractToken(packet: Buffer, exid: number): { packet: Buffer; token: Buffer } | null;
  rewriteAsReset(packet: Buffer): Buffer;
  threadCpuMicros(): number;
  /** Absent from an addon built before it was added. */
  releaseFreeMemory?(): boolean;
  hasNfQueue: boolean;
  NfQueue?: new (
    queue: number,
    options: QueueOptions,
    onPacket: (id: number, hook: number, family: 4 | 6, mark: number, packet: Buffer) => void,
    warm?: NativeWarm,
  ) => NativeQueue;
  WarmHandshakes: new (settings: WarmSettings) => NativeWarm;
}
