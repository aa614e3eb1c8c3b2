/**
 * A deadline on I/O that does not expire ahead of I/O which has already happened. libuv runs expired
 * timers before it polls for I/O, so on a starved event loop (a burst of handshakes, a loaded host)
 * a plain timer fires while the bytes or the connection it waits for sit unread in the kernel, and a
 * peer that was on time is refused. The expiry is therefore confirmed one poll later: `onExpired`
 * runs from the check phase, after the loop has read what was pending, unless `cancel` came first.
 */
export interface IoDeadline {
  cancel(): void;
}

export function ioDeadline(ms: number, onExpired: () => void): IoDeadline {
  let immediate: NodeJS.Immediate | undefined;
  const timer = setTimeout(() => {
    immediate = setImmediate(onExpired);
  }, ms);
  return {
    cancel() {
      clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
    },
  };
}
