/**
 * What the wire shows: a packet capture on the bridge (every workload's port, in the hub namespace),
 * read back with tshark for TLS ClientHellos and for SYNs carrying the L4 fast path's identity token,
 * and searched byte for byte for the plaintext of the requests the demo sends. Evidence for the
 * "encrypted" column, not an assumption.
 */
import { readFile } from "node:fs/promises";
import { inNetns, runOk } from "./exec.ts";
import type { Managed, Supervisor } from "./processes.ts";

export interface TlsHello {
  src: string;
  dst: string;
  dstPort: number;
  /** ALPN protocols offered, e.g. ["sigil/1;http1;8080"]. */
  alpn: string[];
}

/** A SYN that carried a fast-path identity token (TCP option 253, the RFC 6994 experimental kind). */
export interface TokenSyn {
  src: string;
  dst: string;
  dstPort: number;
}

export interface WireEvidence {
  hellos: TlsHello[];
  tokenSyns: TokenSyn[];
  /** Each needle, and whether it appeared anywhere in the captured bytes. */
  plaintextSeen: Map<string, boolean>;
  packets: number;
}

/** The TCP option kind the fast path's token travels in (sidecar/fastpath/README.md). */
const TOKEN_OPTION_KIND = 253;

let captures = 0;

export class WireCapture {
  private constructor(
    private readonly proc: Managed,
    readonly file: string,
  ) {}

  /**
   * Starts tcpdump in the hub namespace — on every port of the bridge, or on one workload's port
   * (`iface`, e.g. "api") — and resolves once it is capturing.
   */
  static async start(
    supervisor: Supervisor,
    hubNetns: string,
    file: string,
    { iface = "any", timeoutMs = 15_000 }: { iface?: string; timeoutMs?: number } = {},
  ): Promise<WireCapture> {
    // -U writes each packet as it arrives so the file is complete as soon as tcpdump exits; -Z root
    // keeps it from dropping to a user that cannot write the work directory. Each capture logs to a
    // file of its own, where waitForListening() looks for tcpdump's greeting.
    const proc = supervisor.start(
      `tcpdump-${iface}-${++captures}`,
      inNetns(hubNetns, [
        "tcpdump",
        "-i",
        iface,
        "--immediate-mode",
        "-U",
        "-n",
        "-Z",
        "root",
        "-s",
        "0",
        "-w",
        file,
        "tcp",
      ]),
    );
    await waitForListening(proc, timeoutMs);
    return new WireCapture(proc, file);
  }

  /** Stops the capture and reads it back. */
  async finish(needles: readonly string[], tlsPorts: readonly number[]): Promise<WireEvidence> {
    await this.proc.stop("SIGINT");
    return analyze(this.file, needles, tlsPorts);
  }
}

async function waitForListening(proc: Managed, timeoutMs: number): Promise<void> {
  // tcpdump announces "listening on any, ..." on stderr, which the supervisor logs to a file.
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const log = await readFile(proc.logFile, "utf8").catch(() => "");
    if (/listening on/.test(log)) return;
    if (!proc.running()) throw new Error(`tcpdump ended before capturing: ${log.trim()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`tcpdump not capturing after ${timeoutMs} ms (log: ${proc.logFile})`);
}

/** The given fields of every packet in `file` that matches the display filter, one row per packet. */
async function tsharkFields(
  file: string,
  filter: string,
  fields: readonly string[],
  extraArgs: readonly string[] = [],
): Promise<string[][]> {
  const out = await runOk(
    [
      "tshark",
      "-r",
      file,
      ...extraArgs,
      "-Y",
      filter,
      "-T",
      "fields",
      "-E",
      "separator=\t",
      ...fields.flatMap((f) => ["-e", f]),
    ],
    { timeoutMs: 60_000 },
  );
  return out
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => line.split("\t"));
}

export async function analyze(
  file: string,
  needles: readonly string[],
  tlsPorts: readonly number[],
): Promise<WireEvidence> {
  const decodeAs = tlsPorts.flatMap((port) => ["-d", `tcp.port==${port},tls`]);
  const hellos: TlsHello[] = (
    await tsharkFields(
      file,
      "tls.handshake.type == 1",
      ["ip.src", "ip.dst", "tcp.dstport", "tls.handshake.extensions_alpn_str"],
      decodeAs,
    )
  ).map(([src = "", dst = "", port = "", alpn = ""]) => ({
    src,
    dst,
    dstPort: Number(port),
    alpn: alpn === "" ? [] : alpn.split(","),
  }));
  const tokenSyns = (
    await tsharkFields(
      file,
      `tcp.flags.syn == 1 && tcp.flags.ack == 0 && tcp.option_kind == ${TOKEN_OPTION_KIND}`,
      ["ip.src", "ip.dst", "tcp.dstport"],
    )
  ).map(([src = "", dst = "", port = ""]) => ({ src, dst, dstPort: Number(port) }));
  const bytes = await readFile(file);
  const plaintextSeen = new Map(needles.map((n) => [n, bytes.includes(Buffer.from(n, "utf8"))] as const));
  const count = await runOk(["tshark", "-r", file, "-T", "fields", "-e", "frame.number"], {
    timeoutMs: 60_000,
  });
  return { hellos, tokenSyns, plaintextSeen, packets: count.split("\n").filter(Boolean).length };
}

/** Whether a TLS handshake from `src` to `dst` named application port `port` in its ALPN. */
export function tlsBetween(
  evidence: WireEvidence,
  src: string,
  dst: string,
  port: number,
): TlsHello | undefined {
  return evidence.hellos.find(
    (h) => h.src === src && h.dst === dst && h.alpn.some((p) => p.split(";").at(-1) === String(port)),
  );
}

/** Whether a SYN from `src` to `dst`:`port` carried a fast-path identity token. */
export function tokenBetween(evidence: WireEvidence, src: string, dst: string, port: number): boolean {
  return evidence.tokenSyns.some((s) => s.src === src && s.dst === dst && s.dstPort === port);
}
