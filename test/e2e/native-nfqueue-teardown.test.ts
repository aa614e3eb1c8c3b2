import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import type { Netns } from "../support/netns.ts";
import { createNetns } from "../support/netns.ts";

const ADDON = fileURLToPath(new URL("../../native/build/Release/sigil_native.node", import.meta.url));

/**
 * The fast path binds its queues in worker threads and stops by terminating them. A worker's
 * teardown unloads the addon before its loop finishes closing handles, so a queue still bound then
 * must not leave a close callback of the addon behind (that was a SIGSEGV of the whole sidecar).
 */
const SCRIPT = `
const { Worker } = require("node:worker_threads");
const worker = new Worker(
  'const { parentPort, workerData } = require("node:worker_threads");' +
  'const { NfQueue } = require(workerData.addon);' +
  'globalThis.queue = new NfQueue(4711, {}, () => {});' +
  'parentPort.postMessage("bound");',
  { eval: true, workerData: { addon: process.argv[1] } },
);
worker.once("error", (err) => { console.error(err); process.exit(3); });
worker.once("message", async () => {
  await worker.terminate();
  setImmediate(() => { console.log("survived"); process.exit(0); });
});
`;

describe("NFQUEUE binding at a worker thread's teardown", () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await createNetns("nfqtd");
  });

  afterAll(async () => {
    await ns?.destroy();
  });

  it("a worker terminated with its queue still bound ends cleanly, the process goes on", async () => {
    const result = await ns.exec(["node", "-e", SCRIPT, ADDON], { timeoutMs: 30_000 });
    expect(result.stderr).toBe("");
    expect(result.stdout.trim()).toBe("survived");
    expect(result.code).toBe(0);
  });
});
