import { chmod, lstat, unlink } from "node:fs/promises";
import net from "node:net";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { peerCredentialsOf } from "../../native/index.ts";
import type { PeerCredentials } from "../../native/index.ts";
import { prepareSocketPath } from "./socket-path.ts";

/** Connections open at once; each holds a few streams, a workload needs a handful. */
const MAX_CONNECTIONS = 256;

/**
 * The Unix socket the Workload API is served on, with each connection's caller attested by the
 * kernel. grpc-js hands a handler no file descriptor, so the sidecar accepts connections itself:
 * on each it reads SO_PEERCRED (pid, uid, gid recorded at connect()), names the connection with a
 * label of its own as its remote address (a Unix socket has none, and the client cannot set it),
 * and only then hands the socket to the gRPC server through a connection injector. A handler finds
 * its caller by that label (`callerOf`); a connection the kernel names no peer for is closed unserved.
 */
export class WorkloadEndpoint {
  private readonly peers = new Map<string, PeerCredentials>();
  private readonly sockets = new Set<net.Socket>();
  private sequence = 0;
  private inode = 0;

  private constructor(
    readonly path: string,
    private readonly listener: net.Server,
    private readonly injector: grpc.ConnectionInjector,
    private readonly log: Logger,
  ) {}

  /** Listens on `path` (prepared by `prepareSocketPath`) and feeds `server` the attested connections. */
  static async listen(path: string, server: grpc.Server, log: Logger): Promise<WorkloadEndpoint> {
    await prepareSocketPath(path, process.getuid?.() ?? 0);
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const listener = net.createServer();
    listener.maxConnections = MAX_CONNECTIONS;
    const endpoint = new WorkloadEndpoint(path, listener, injector, log);
    listener.on("connection", (socket) => endpoint.accept(socket));
    await new Promise<void>((resolve, reject) => {
      listener.once("error", reject);
      listener.listen(path, () => {
        listener.off("error", reject);
        resolve();
      });
    });
    listener.on("error", (err) => log.error({ err: err.message, path }, "workload API socket failed"));
    // Any local user may connect: who gets what is decided per call by the caller's kernel-attested
    // uid, and a refused caller then learns why (PERMISSION_DENIED) instead of meeting EACCES.
    await chmod(path, 0o666);
    endpoint.inode = (await lstat(path)).ino;
    return endpoint;
  }

  /** The attested process behind the connection a call arrived on, or undefined when unknown. */
  callerOf(call: { getPeer(): string }): PeerCredentials | undefined {
    return this.peers.get(call.getPeer());
  }

  private accept(socket: net.Socket): void {
    let peer: PeerCredentials;
    try {
      peer = peerCredentialsOf(socket);
    } catch (err) {
      this.log.warn({ reason: (err as Error).message }, "workload API connection without peer credentials");
      socket.destroy();
      return;
    }
    const label = `workload-api-peer-${++this.sequence}`;
    Object.defineProperty(socket, "remoteAddress", { value: label, configurable: true });
    this.peers.set(label, peer);
    this.sockets.add(socket);
    socket.once("close", () => {
      this.peers.delete(label);
      this.sockets.delete(socket);
    });
    this.injector.injectConnection(socket);
  }

  /** Stops accepting, ends every connection and removes the socket file if it is still this one's. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.listener.close(() => resolve()));
    this.injector.destroy();
    for (const socket of this.sockets) socket.destroy();
    await closed;
    const current = await lstat(this.path).catch(() => null);
    if (current?.ino === this.inode) await unlink(this.path).catch(() => undefined);
  }
}
