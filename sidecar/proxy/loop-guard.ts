import { isIP } from "node:net";
import { networkInterfaces } from "node:os";
import type { Socket } from "node:net";

/**
 * Captured mode: a connection whose original destination is one of this sidecar's own listeners
 * (an application dialing 15001/15006/15000 on this host, or a redirect that points back at the
 * sidecar) would loop through the proxy forever. Such destinations are refused.
 */

export class LoopError extends Error {
  constructor(address: string, port: number) {
    super(`original destination ${address}:${port} is the sidecar's own listener`);
    this.name = "LoopError";
  }
}

function canonical(address: string): string {
  const lower = address.toLowerCase();
  return lower.startsWith("::ffff:") && isIP(lower.slice(7)) === 4 ? lower.slice(7) : lower;
}

function isLoopback(address: string): boolean {
  return address === "::1" || address.startsWith("127.");
}

/** Whether `address` is this host's (loopback, a local interface, or an advertised address). */
export function localAddressTest(advertised: readonly string[]): (address: string) => boolean {
  const own = new Set(advertised.map(canonical));
  for (const list of Object.values(networkInterfaces()))
    for (const i of list ?? []) own.add(canonical(i.address));
  return (address) => {
    const a = canonical(address);
    return isLoopback(a) || own.has(a) || a === "0.0.0.0" || a === "::";
  };
}

/** Wraps an original-destination reader so it throws LoopError for the sidecar's own ports on this host. */
export function guardOriginalDestination(
  read: (socket: Socket) => { address: string; port: number },
  ownPorts: () => ReadonlySet<number>,
  isLocal: (address: string) => boolean,
): (socket: Socket) => { address: string; port: number } {
  return (socket) => {
    const dest = read(socket);
    if (ownPorts().has(dest.port) && isLocal(dest.address)) throw new LoopError(dest.address, dest.port);
    return dest;
  };
}
