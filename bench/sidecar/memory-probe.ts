/**
 * Loaded with `--import` into a process the bench did not write (the `sigil sidecar` command), so
 * its memory can be read after garbage collection: on the IPC message `{ memory: true }` it collects
 * twice (the process must run with --expose-gc) and answers `{ memory: { heapUsedBytes, heapTotalBytes,
 * externalBytes } }`. Resident figures are read from /proc by the parent.
 */
process.on("message", (m: unknown) => {
  if (typeof m !== "object" || m === null || !("memory" in m)) return;
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("memory-probe needs --expose-gc");
  gc();
  gc();
  const u = process.memoryUsage();
  process.send?.({
    memory: { heapUsedBytes: u.heapUsed, heapTotalBytes: u.heapTotal, externalBytes: u.external },
  });
});
// The IPC channel must not keep the process alive on its own: the sidecar's listeners do.
process.channel?.unref();
