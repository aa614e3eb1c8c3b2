import * as grpc from "@grpc/grpc-js";
import type { PeerCertificate } from "node:tls";
import type {
  WireSignJwtSvidRequest,
  WireSignJwtSvidResponse,
  WireSignSvidRequest,
  WireSignSvidResponse,
} from "../../core/svid/wire.ts";
import { IdentityServiceClient } from "../../core/svid/wire.ts";

/** The control plane refused or could not be reached; `code` is the gRPC status. */
export class IdentityRequestError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

export interface IdentityClientOptions {
  /** `host:port` of the control plane's gRPC listener. */
  readonly address: string;
  /** PEM roots the control plane's serving certificate must chain to (given at bootstrap). */
  readonly caPem: string;
  /**
   * When set, the serving certificate must carry this URI SAN (e.g.
   * `spiffe://sigil.local/sigil/controlplane`) instead of matching the host name.
   */
  readonly serverSpiffeId?: string;
  readonly timeoutMs?: number;
  /** Replaces the credentials built from `caPem`/`serverSpiffeId` (the agent's own server check). */
  readonly credentials?: grpc.ChannelCredentials;
  readonly channelOptions?: grpc.ChannelOptions;
}

/**
 * The sidecar's side of `sigil.v1.IdentityService`. Server-authenticated TLS only: before it has an
 * SVID the sidecar has nothing to present; it proves itself with the attestation in the request.
 */
export class IdentityClient {
  private readonly client: grpc.Client & Record<string, unknown>;
  private readonly timeoutMs: number;

  constructor(options: IdentityClientOptions) {
    const expected = options.serverSpiffeId;
    const credentials =
      options.credentials ??
      grpc.credentials.createSsl(Buffer.from(options.caPem), null, null, {
        checkServerIdentity: expected
          ? (_host: string, cert: PeerCertificate) => {
              const uris = (cert.subjectaltname ?? "")
                .split(", ")
                .filter((n) => n.startsWith("URI:"))
                .map((n) => n.slice(4));
              return uris.includes(expected)
                ? undefined
                : new Error(
                    `control plane certificate names ${uris.join(", ") || "no URI"}, expected ${expected}`,
                  );
            }
          : undefined,
      });
    // With a SPIFFE ID check the host name plays no part; naming one keeps TLS from sending an IP
    // address as SNI.
    const channelOptions = {
      ...options.channelOptions,
      ...(expected ? { "grpc.ssl_target_name_override": "sigil-controlplane" } : {}),
    };
    this.client = new IdentityServiceClient(options.address, credentials, channelOptions) as grpc.Client &
      Record<string, unknown>;
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  signSvid(request: WireSignSvidRequest): Promise<WireSignSvidResponse> {
    return this.call("SignSvid", "SVID", request);
  }

  /**
   * A JWT-SVID for the SPIFFE ID of the SVID this client presents: only meaningful on a client built
   * with the sidecar's mTLS credentials (`credentials`), which the control plane authenticates.
   */
  signJwtSvid(request: WireSignJwtSvidRequest): Promise<WireSignJwtSvidResponse> {
    return this.call("SignJwtSvid", "JWT-SVID", request);
  }

  private call<Req, Res>(rpc: string, what: string, request: Req): Promise<Res> {
    const method = this.client[rpc] as (
      req: Req,
      options: grpc.CallOptions,
      cb: (err: grpc.ServiceError | null, res?: Res) => void,
    ) => void;
    return new Promise((resolve, reject) => {
      method.call(this.client, request, { deadline: Date.now() + this.timeoutMs }, (err, res) => {
        if (err)
          reject(
            new IdentityRequestError(
              err.code,
              `${what} request failed (${grpc.status[err.code]}): ${err.details}`,
            ),
          );
        else if (!res)
          reject(new IdentityRequestError(grpc.status.INTERNAL, `${what} request returned no response`));
        else resolve(res);
      });
    });
  }

  close(): void {
    this.client.close();
  }
}
