import type { Socket } from "node:net";
import type { NativeSyscallError, SocketAddress } from "./addon.ts";
import { load } from "./load.ts";

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
