/**
 * SO_PEERCRED through the addon: the uid, gid and pid of whoever connected a Unix socket, read from
 * the kernel, for a client in this process and for one started as another user; a TCP socket, whose
 * SO_PEERCRED names no process, and a descriptor that is no socket are refused with a typed error.
 */
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PeerCredentialsError, getPeerCredentials, peerCredentialsOf } from "../../native/index.ts";
import type { PeerCredentials } from "../../native/index.ts";

const NOBODY = 65534;
let dir: string;
let server: net.Server;
let socketPath: string;
const accepted: ((creds: PeerCredentials | Error) => void)[] = [];

/** The credentials the server reads for the next connection it accepts. */
function nextPeer(): Promise<PeerCredentials | Error> {
  return new Promise((resolve) => accepted.push(resolve));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sigil-peercred-"));
  await chmod(dir, 0o755);
  socketPath = join(dir, "peer.sock");
  server = net.createServer((socket) => {
    let result: PeerCredentials | Error;
    try {
      result = peerCredentialsOf(socket);
    } catch (err) {
      result = err as Error;
    }
    socket.end();
    accepted.shift()?.(result);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  await chmod(socketPath, 0o777);
});

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

describe("getPeerCredentials (SO_PEERCRED)", () => {
  it("names this process for a connection made here", async () => {
    const peer = nextPeer();
    const client = net.connect(socketPath);
    client.on("error", () => undefined);
    expect(await peer).toEqual({ pid: process.pid, uid: process.getuid?.(), gid: process.getgid?.() });
    client.destroy();
  });

  it("names the connecting process and its user when it runs as another uid", async () => {
    const peer = nextPeer();
    const child = spawn(
      process.execPath,
      [
        "-e",
        `require("node:net").connect(${JSON.stringify(socketPath)}).on("close", () => process.exit(0));`,
      ],
      { uid: NOBODY, gid: NOBODY, stdio: "ignore" },
    );
    const exited = new Promise((resolve) => child.on("exit", resolve));
    expect(await peer).toEqual({ pid: child.pid, uid: NOBODY, gid: NOBODY });
    await exited;
  });

  it("refuses a TCP socket, whose SO_PEERCRED would name no process", async () => {
    const tcp = net.createServer();
    const peer = new Promise<PeerCredentials | Error>((resolve) =>
      tcp.once("connection", (socket) => {
        try {
          resolve(peerCredentialsOf(socket));
        } catch (err) {
          resolve(err as Error);
        }
        socket.destroy();
      }),
    );
    await new Promise<void>((resolve) => tcp.listen(0, "127.0.0.1", resolve));
    const client = net.connect((tcp.address() as net.AddressInfo).port, "127.0.0.1");
    client.on("error", () => undefined);
    const result = await peer;
    client.destroy();
    await new Promise((resolve) => tcp.close(resolve));
    expect(result).toBeInstanceOf(PeerCredentialsError);
    expect((result as PeerCredentialsError).code).toBe("ENOPROTOOPT");
  });

  it("refuses descriptors that are not sockets or not open", () => {
    const file = openSync(socketPath.replace(/peer\.sock$/, "plain"), "w");
    try {
      expect(() => getPeerCredentials(file)).toThrow(/ENOTSOCK/);
    } finally {
      closeSync(file);
    }
    expect(() => getPeerCredentials(1_000_000)).toThrow(/EBADF/);
    expect(() => getPeerCredentials(-1)).toThrow(RangeError);
  });
});
