import type { SidecarLoopWindow } from "./loop-stats.ts";
import type { ProxyMemory } from "./memory-sampling.ts";
import type { LoadResult } from "./latency.ts";
import type { PathName } from "./topology.ts";

/** Everything one harness run measured, as saved in results/latest.json and rendered into BENCHMARKS.md. */

export interface ProxyCost {
  readonly side: "client" | "server";
  /** CPU seconds of the proxy process tree during the measured window. */
  readonly cpuSeconds: number;
}

export interface LoadMeasurement {
  readonly load: LoadResult;
  /** Per proxy process, during the measured window (empty for direct). */
  readonly proxies: readonly ProxyCost[];
  /** Event-loop delay and GC pauses of each Sigil sidecar during the measured window (others: empty). */
  readonly loop: readonly SidecarLoopWindow[];
}

export interface ProtocolResults {
  readonly rate: LoadMeasurement | null;
  readonly max: LoadMeasurement | null;
}

export interface TcpResult {
  readonly gbitPerSecond: number;
  readonly proxyCpuSeconds: number;
  readonly seconds: number;
}

export interface PathResults {
  readonly path: PathName;
  /** Why the path was not measured (it failed to start or to carry a request), else null. */
  readonly failure: string | null;
  readonly h1: ProtocolResults;
  readonly grpc: ProtocolResults;
  /** Peak RSS (VmHWM, summed over the process tree) of each proxy process over the whole run. */
  readonly peakRssBytes: readonly { readonly side: "client" | "server"; readonly bytes: number }[];
  /** The same, read after the HTTP/1.1 and gRPC runs and before the iperf3 run. */
  readonly peakRssHttpBytes: readonly { readonly side: "client" | "server"; readonly bytes: number }[];
  /** RSS, PSS and USS of each proxy process tree: idle after start, and the most at the fixed rate. */
  readonly memory: readonly ProxyMemory[];
}

export interface TcpRow {
  readonly name: string;
  readonly result: TcpResult | null;
  /** Direct throughput of the same topology when the row was measured elsewhere (null: loopback direct). */
  readonly baselineGbitPerSecond: number | null;
  /** Why the row was not measured, or how it was measured when that differs from the others. */
  readonly note: string | null;
}

export interface XdsRow {
  readonly clients: number;
  readonly protocol: string;
  readonly syncMs: number;
  readonly convergeMedianMs: number;
  readonly convergeMaxMs: number;
  readonly heapPerClientKb: number;
}

export interface MachineInfo {
  readonly nproc: number;
  readonly cpuModel: string;
  readonly kernel: string;
  readonly node: string;
  readonly nginx: string;
  readonly haproxy: string;
  readonly iperf3: string;
  readonly openssl: string;
  readonly loadBefore: readonly number[];
  readonly loadAfter: readonly number[];
}

export interface RunResults {
  readonly startedAt: string;
  readonly command: string;
  readonly quick: boolean;
  readonly rateRps: number;
  readonly durationSeconds: number;
  /** The discarded fixed-rate run before each protocol's measured runs, per path. */
  readonly warmRateSeconds: number;
  /** Node/V8 flags the Sigil sidecars ran with. */
  readonly sidecarNodeFlags: readonly string[];
  readonly machine: MachineInfo;
  readonly paths: readonly PathResults[];
  readonly tcp: readonly TcpRow[];
  readonly xds: readonly XdsRow[] | null;
  readonly xdsNote: string | null;
  readonly elapsedSeconds: number;
}
