import type { Supervised } from "./procs.ts";

/** Where the application's traffic enters one path under test, and the proxy processes on it. */
export interface PathUnderTest {
  readonly name: PathName;
  /** The client connects here with plain HTTP/1.1, h2c gRPC and plain TCP (iperf3). */
  readonly h1Port: number;
  readonly grpcPort: number;
  /** Null: this path does not carry plain TCP in the comparison. */
  readonly tcpPort: number | null;
  /** Client-side and server-side proxy processes (empty for direct). */
  readonly proxies: readonly {
    readonly side: "client" | "server";
    readonly proc: Supervised;
    /** The proxy's loopback admin port when it has one (Sigil: metrics with its memory breakdown). */
    readonly adminPort?: number;
  }[];
}

export type PathName = "direct" | "sigil" | "node-pipes" | "nginx" | "haproxy";

/** The backend's ports (HTTP/1.1 and gRPC servers, iperf3 server), the same for every path. */
export interface BackendPorts {
  readonly h1: number;
  readonly grpc: number;
  readonly iperf: number;
}

/** Ports a proxy pair listens on: client side (plaintext, the app's side) and server side (mTLS). */
export interface PairPorts {
  readonly clientH1: number;
  readonly clientGrpc: number;
  readonly clientTcp: number;
  readonly serverH1: number;
  readonly serverGrpc: number;
  readonly serverTcp: number;
}
