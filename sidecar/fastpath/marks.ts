/**
 * Packet/connection mark values of the fast path. They live in one 4-bit field (bits 20-23) so
 * they coexist with other users of the mark; the verdict sets the packet mark, the rules save it
 * into the connmark, and the rules match the connmark to keep decided connections in the kernel.
 */
export const MARK_MASK = 0x00f00000;
/** Connection accepted: nothing more of it goes to userspace. */
export const MARK_ACCEPTED = 0x00100000;
/** Refused: the rules answer the SYN with a TCP RST (REJECT --reject-with tcp-reset). */
export const MARK_DENY = 0x00200000;
/** Client side: our SYN carried a token; the SYN-ACK must be verified. */
export const MARK_PENDING_OUT = 0x00300000;
/** Server side: a token-carrying SYN was accepted; our SYN-ACK must carry a token. */
export const MARK_PENDING_IN = 0x00400000;
/** Client side: the SYN-ACK was refused and rewritten into a RST for the local socket. */
export const MARK_REFUSED = 0x00500000;

export function withMark(current: number, value: number): number {
  return ((current & ~MARK_MASK) | value) >>> 0;
}

export function hex(value: number): string {
  return `0x${value.toString(16)}`;
}

/** Every value, as the native warm table takes them. */
export const MARKS = {
  mask: MARK_MASK,
  accepted: MARK_ACCEPTED,
  deny: MARK_DENY,
  pendingOut: MARK_PENDING_OUT,
  pendingIn: MARK_PENDING_IN,
  refused: MARK_REFUSED,
} as const;
