import type { Logger } from "pino";
import { IdentityClient } from "../identity/identity-client.ts";
import type { RotationManager } from "../identity/rotation.ts";
import type { WorkloadApi } from "../workload-api/server.ts";
import type { ServerIdentityCheck, SvidCertificateProvider } from "./control-plane-tls.ts";
import { svidChannelCredentials } from "./control-plane-tls.ts";
import type { AgentOptions } from "./options.ts";

/**
 * The SPIFFE Workload API when `--workload-api-socket` is given: the rotation manager's SVID and
 * bundle, and JWT-SVIDs signed by the control plane for the SVID this sidecar presents over mTLS
 * (its own client, so the bootstrap client never carries a certificate). Null when not asked for.
 */
export async function startAgentWorkloadApi(
  o: AgentOptions,
  deps: {
    readonly rotation: RotationManager;
    readonly target: string;
    readonly caPem: string;
    readonly provider: SvidCertificateProvider;
    readonly check: ServerIdentityCheck;
    readonly log: Logger;
  },
): Promise<WorkloadApi | null> {
  if (o.workloadApiSocket === undefined) return null;
  // The control plane authenticates the certificate a connection was opened with, so each SVID
  // gets a client of its own: a local subchannel pool keeps it from reusing the previous SVID's
  // connection, which would be refused once that certificate expires.
  const connect = (): IdentityClient =>
    new IdentityClient({
      address: deps.target,
      caPem: deps.caPem,
      credentials: svidChannelCredentials(deps.provider, deps.check),
      channelOptions: { "grpc.use_local_subchannel_pool": 1 },
    });
  let client = connect();
  const reconnect = (): void => {
    const previous = client;
    client = connect();
    previous.close();
  };
  deps.rotation.on("rotated", reconnect);
  try {
    // The server, its gRPC service definition and the JWT libraries load only when the API is served.
    const { startWorkloadApi } = await import("../workload-api/server.ts");
    const api = await startWorkloadApi({
      socketPath: o.workloadApiSocket,
      allowedUids: o.workloadApiUid,
      identity: deps.rotation,
      signJwtSvid: async (audience) => {
        const r = await client.signJwtSvid({ audience: [...audience], ttlSeconds: 0 });
        return { spiffeId: r.spiffeId, token: r.jwtSvid, expiresAt: new Date(r.expiresAtUnixMs) };
      },
      log: deps.log,
    });
    return {
      socketPath: api.socketPath,
      async close() {
        deps.rotation.off("rotated", reconnect);
        await api.close();
        client.close();
      },
    };
  } catch (err) {
    deps.rotation.off("rotated", reconnect);
    client.close();
    throw err;
  }
}
