import type { Socket } from "node:net";
import type { NativeSyscallError, PeerCredentials } from "./addon.ts";
import { load } from "./load.ts";

/** SO_PEERCRED failed; `code` is the errno name, `meaning` says why. */
export class PeerCredentialsError extends Error {
  override readonly name = "PeerCredentialsError";
  constructor(
    readonly code: string,
    readonly fd: number,
    readonly meaning: string,
  ) {
    super(`peer credentials of fd ${fd}: ${code}: ${meaning}`);
  }
}

const PEER_CRED_MEANINGS: Readonly<Record<string, string>> = {
  EBADF: "the file descriptor is not open",
  ENOTSOCK: "the file descriptor is not a socket",
  ENOPROTOOPT: "the socket is not a Unix domain socket",
  ENOTCONN: "the socket is not connected (the kernel names no peer process)",
  EINVAL: "the kernel returned no complete credentials",
};

/**
 * The pid, uid and gid the kernel recorded for the process that connected this Unix domain socket
 * (at its connect(), not now: a process that changes user afterwards keeps the recorded one).
 */
export function getPeerCredentials(fd: number): PeerCredentials {
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`fd must be a non-negative integer, got ${fd}`);
  try {
    return load().getPeerCredentials(fd);
  } catch (err) {
    const e = err as NativeSyscallError;
    if (typeof e.code === "string" && typeof e.errno === "number") {
      throw new PeerCredentialsError(e.code, fd, PEER_CRED_MEANINGS[e.code] ?? e.message);
    }
    throw err;
  }
}

/** The credentials of the process at the other end of an accepted Unix-socket `net.Socket`. */
export function peerCredentialsOf(socket: Socket): PeerCredentials {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) {
    throw new PeerCredentialsError("EBADF", -1, "the socket has no open file descriptor (closed)");
  }
  return getPeerCredentials(fd);
}
