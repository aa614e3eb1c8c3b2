/**
 * The native addon's typed face: every entry point wrapped so callers get TypeScript types and
 * typed errors instead of raw addon exceptions. Each job has its module beside this file, named
 * after its C++ source in src/; this one only gathers them.
 */
export type {
  PeerCredentials,
  QueueOptions,
  QueueStats,
  SocketAddress,
  VerdictCode,
  WarmKindStats,
  WarmMarks,
  WarmPacketKind,
  WarmSettings,
  WarmStats,
} from "./addon.ts";
export { VERDICT } from "./addon.ts";
export { NativeUnavailableError, nativeAvailable } from "./load.ts";
export { OriginalDestinationError, getOriginalDestination, originalDestinationOf } from "./original-dst.ts";
export { PeerCredentialsError, getPeerCredentials, peerCredentialsOf } from "./peer-credentials.ts";
export type { TcpInfo } from "./tcp-packet.ts";
export { PacketError, TCP_FLAGS, extractToken, insertToken, parseTcp, rewriteAsReset } from "./tcp-packet.ts";
export { threadCpuMicros } from "./thread-cpu.ts";
export { releaseFreeMemory } from "./release-memory.ts";
export type { QueuedPacket } from "./nfqueue.ts";
export { PacketQueue } from "./nfqueue.ts";
export type { ConnectionTuple, NonceCheck, WarmFlow, WarmVerdict } from "./warm-handshakes.ts";
export { WarmHandshakes } from "./warm-handshakes.ts";
