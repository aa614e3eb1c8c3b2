import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { WorkloadEndpoint } from "./endpoint.ts";
import { JwtSvidCache } from "./jwt-svids.ts";
import type { JwtSvidSigner } from "./jwt-svids.ts";
import { workloadApiDefinition } from "./proto.ts";
import { workloadApiHandlers } from "./service.ts";
import type { IdentitySource } from "./service.ts";

export interface WorkloadApiOptions {
  /** Absolute path of the Unix socket (`--workload-api-socket`). */
  readonly socketPath: string;
  /** The workload's uids (`--workload-api-uid`); the sidecar's own is refused here. */
  readonly allowedUids: readonly number[];
  readonly identity: IdentitySource;
  readonly signJwtSvid: JwtSvidSigner;
  readonly log: Logger;
}

export interface WorkloadApi {
  readonly socketPath: string;
  close(): Promise<void>;
}

export class WorkloadApiConfigError extends Error {
  override readonly name = "WorkloadApiConfigError";
}

/** Largest request taken: requests carry at most a token and its audience. */
const MAX_REQUEST_BYTES = 64 * 1024;

/** Serves the SPIFFE Workload API on a Unix socket for the processes of the workload's uids. */
export async function startWorkloadApi(options: WorkloadApiOptions): Promise<WorkloadApi> {
  const ownUid = process.getuid?.() ?? 0;
  if (options.allowedUids.length === 0)
    throw new WorkloadApiConfigError("the workload API needs the workload's uids (--workload-api-uid)");
  if (options.allowedUids.includes(ownUid))
    throw new WorkloadApiConfigError(
      `--workload-api-uid ${ownUid} is the sidecar's own uid: the sidecar is never the workload (run the application as another user)`,
    );
  const server = new grpc.Server({ "grpc.max_receive_message_length": MAX_REQUEST_BYTES });
  // Handlers reach the endpoint's attested callers; it listens only once they are registered.
  const bound: { endpoint?: WorkloadEndpoint } = {};
  server.addService(
    workloadApiDefinition(),
    workloadApiHandlers({
      identity: options.identity,
      jwt: new JwtSvidCache(options.signJwtSvid),
      callers: {
        allowedUids: new Set(options.allowedUids),
        ownUid,
        callerOf: (call) => bound.endpoint?.callerOf(call),
      },
      log: options.log,
    }),
  );
  const listening = await WorkloadEndpoint.listen(options.socketPath, server, options.log);
  bound.endpoint = listening;
  options.log.info(
    { socket: options.socketPath, uids: options.allowedUids },
    "SPIFFE Workload API listening",
  );
  return {
    socketPath: options.socketPath,
    async close() {
      await listening.close();
      server.forceShutdown();
    },
  };
}
