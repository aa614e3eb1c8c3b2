/**
 * Runs inside the client namespace: measures TCP connect time to host:port.
 *
 *   latency <host> <port> <count>                sequential connects; prints per-connect µs summary
 *   rate    <host> <port> <seconds> <parallel>   as many connects as possible; prints connects/s
 *
 * Each connection is closed with a RST right after it is established, so no TIME_WAIT piles up and
 * the measurement is the handshake alone. Prints one JSON line.
 */
import { connect } from "node:net";

const [mode, host, portText, a, b] = process.argv.slice(2);
const port = Number(portText);

function once(): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const sock = connect({ host: host as string, port, noDelay: true });
    sock.once("connect", () => {
      const us = Number(process.hrtime.bigint() - started) / 1000;
      sock.resetAndDestroy();
      resolve(us);
    });
    sock.once("error", reject);
  });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

if (mode === "latency") {
  const count = Number(a);
  // The first connection pays for cold caches (identity verification, ARP, JIT); report it apart.
  const cold = await once();
  const samples: number[] = [];
  for (let i = 0; i < count; i++) samples.push(await once());
  samples.sort((x, y) => x - y);
  console.log(
    JSON.stringify({
      coldUs: cold,
      count,
      p50Us: percentile(samples, 50),
      p90Us: percentile(samples, 90),
      p99Us: percentile(samples, 99),
      meanUs: samples.reduce((s, x) => s + x, 0) / samples.length,
    }),
  );
} else if (mode === "rate") {
  const seconds = Number(a);
  const parallel = Number(b);
  const deadline = performance.now() + seconds * 1000;
  let done = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (performance.now() < deadline) {
        try {
          await once();
          done++;
        } catch {
          failed++;
        }
      }
    }),
  );
  console.log(JSON.stringify({ seconds, parallel, connects: done, failed, perSecond: done / seconds }));
} else {
  throw new Error("usage: connect-probe.ts latency|rate <host> <port> ...");
}
