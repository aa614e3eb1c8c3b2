/**
 * Real packets for the attack suite: capture handshake packets off a namespace's interface with
 * tcpdump (pcap parsed here), and inject crafted or replayed IPv4 packets from another namespace
 * through a raw socket (IPPROTO_RAW, the IP header as given).
 */
import { readFile, writeFile } from "node:fs/promises";
import type { Netns } from "../../support/netns.ts";
import { waitFor } from "../../support/netns.ts";
import { OutputLines } from "./process-output.ts";

const LINKTYPE_ETHERNET = 1;

/** IP packets (Ethernet payloads) of a classic little-endian pcap file. */
export function pcapPackets(file: Buffer): Buffer[] {
  const magic = file.readUInt32LE(0);
  if (magic !== 0xa1b2c3d4 && magic !== 0xa1b23c4d) throw new Error("not a little-endian pcap file");
  if (file.readUInt32LE(20) !== LINKTYPE_ETHERNET) throw new Error("pcap link type is not Ethernet");
  const out: Buffer[] = [];
  for (let at = 24; at + 16 <= file.length;) {
    const len = file.readUInt32LE(at + 8);
    const frame = file.subarray(at + 16, at + 16 + len);
    at += 16 + len;
    const ethertype = frame.readUInt16BE(12);
    if (ethertype === 0x0800 || ethertype === 0x86dd) out.push(Buffer.from(frame.subarray(14)));
  }
  return out;
}

/** Starts tcpdump for `count` packets matching `filter`; resolves once it is capturing. */
export async function startCapture(
  ns: Netns,
  iface: string,
  file: string,
  filter: string,
  count: number,
): Promise<{ done: () => Promise<Buffer[]> }> {
  const out = new OutputLines(
    ns.spawn(["tcpdump", "-i", iface, "-U", "-n", "-c", String(count), "-w", file, filter]),
  );
  await waitFor("tcpdump to start capturing", () => out.stderrText.includes("listening on"));
  return {
    done: async () => {
      await out.exit(10_000);
      return pcapPackets(await readFile(file));
    },
  };
}

const RAW_SEND =
  "import socket,sys\n" +
  "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)\n" +
  "s.sendto(bytes.fromhex(sys.argv[1]),(sys.argv[2],0))\n";

/** Sends one IPv4 packet exactly as given (header included) from inside `ns`. */
export async function sendRawIpv4(ns: Netns, packet: Buffer): Promise<void> {
  const dst = [...packet.subarray(16, 20)].join(".");
  await ns.execOk(["python3", "-c", RAW_SEND, packet.toString("hex"), dst]);
}

const RAW_BURST =
  "import socket,sys\n" +
  "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)\n" +
  "for line in open(sys.argv[1]):\n" +
  "    p=bytes.fromhex(line.strip())\n" +
  "    s.sendto(p,(socket.inet_ntoa(p[16:20]),0))\n";

/** Sends `packets` (IPv4, headers included) back to back from inside `ns`, as fast as one process can. */
export async function sendRawIpv4Burst(ns: Netns, packets: readonly Buffer[], file: string): Promise<void> {
  await writeFile(file, packets.map((p) => p.toString("hex")).join("\n"));
  await ns.execOk(["python3", "-c", RAW_BURST, file]);
}
