import { z } from "zod";
import { accessLogSchema } from "./authz/access-log.ts";
import { userAccessSchema } from "./user-access/config.ts";

/** The sidecar's static configuration (the CLI and tests build it; xDS delivers what changes). */

const port = z.number().int().min(0).max(65535);
const destPort = z.number().int().min(1).max(65535);
const host = z.string().min(1);

export const sidecarConfigSchema = z
  .object({
    /**
     * captured: connections arrive redirected by iptables and the original destination is read from
     * the socket. explicit: no capture; outbound listeners each stand for one destination.
     */
    mode: z.enum(["captured", "explicit"]).default("explicit"),
    outbound: z
      .object({
        /** The capture listener (captured mode). */
        host: host.default("127.0.0.1"),
        port: port.default(15001),
        /** Explicit mode: one listener per destination the application calls. */
        targets: z
          .array(
            z
              .object({
                host: host.default("127.0.0.1"),
                port,
                destination: z.object({ host, port: destPort }).strict(),
                /** Declared framing; "auto" detects it from the first bytes (bounded by detectTimeoutMs). */
                protocol: z.enum(["auto", "http1", "h2", "tcp"]).default("auto"),
              })
              .strict(),
          )
          .default([]),
      })
      .strict()
      .default({ host: "127.0.0.1", port: 15001, targets: [] }),
    inbound: z
      .object({
        host: host.default("0.0.0.0"),
        port: port.default(15006),
        /** Where the local application listens (the port comes from the connection). */
        appHost: host.default("127.0.0.1"),
        /** Explicit mode: the application port for plaintext (non-mesh) clients; unset refuses them. */
        plaintextAppPort: destPort.optional(),
        /**
         * Application ports that speak HTTP only: served as HTTP/1.1 or HTTP/2 (per-request policy,
         * x-forwarded-client-cert) and never carried as opaque TCP — a mesh tunnel asked for them, or
         * a plaintext client whose first bytes are not HTTP within detectTimeoutMs, is refused. An
         * application that trusts x-forwarded-client-cert needs its port here.
         */
        httpPorts: z.array(destPort).default([]),
        /** Ports served to people: OpenID Connect sign-in, sessions, bearer tokens (`user-access/`). */
        userAccess: userAccessSchema.optional(),
      })
      .strict()
      .default({ host: "0.0.0.0", port: 15006, appHost: "127.0.0.1", httpPorts: [] }),
    /**
     * The admin server. Loopback by default; another address (`0.0.0.0`) lets a cluster's
     * Prometheus scrape `/stats/prometheus`, while `/config_dump` stays answered to loopback only.
     */
    admin: z
      .object({
        host: host.default("127.0.0.1"),
        port: port.default(15000),
        /** Label sets per group of mesh metric families before new ones fold into overflow series. */
        maxLabelSets: z.number().int().min(1).max(100_000).default(1000),
      })
      .strict()
      .default({ host: "127.0.0.1", port: 15000, maxLabelSets: 1000 }),
    /**
     * How long to wait for a client's first bytes before carrying the connection as opaque TCP (so
     * server-speaks-first protocols work). A client slower than this to send its request is carried
     * as TCP: declare `protocol` on targets whose framing is known.
     */
    detectTimeoutMs: z.number().int().min(1).max(60_000).default(1_000),
    handshakeTimeoutMs: z.number().int().min(1).default(10_000),
    /**
     * Connections the kernel may hold accepted-but-not-yet-taken on each data-path listener (the
     * kernel caps it at net.core.somaxconn). Node's default of 511 overflowed under a burst of
     * 2,000 new mTLS connections: the kernel dropped the overflow's handshake completions, the
     * clients' hellos waited out retransmission backoff, and the handshake bound refused them.
     */
    listenBacklog: z.number().int().min(1).max(65_535).default(4096),
    connectTimeoutMs: z.number().int().min(1).default(5_000),
    /** Largest HTTP/1 request head and HTTP/2 header list accepted; larger is a 400. */
    maxHeaderBytes: z
      .number()
      .int()
      .min(1024)
      .max(1024 * 1024)
      .default(16 * 1024),
    headersTimeoutMs: z.number().int().min(1).default(30_000),
    keepAliveTimeoutMs: z.number().int().min(1).default(60_000),
    /**
     * HTTP/1.1 connections kept per mesh destination (sidecar, port) on the mTLS hop; requests
     * beyond that wait for a free one. Every new hop costs a handshake on both sidecars, and under a
     * burst of new client connections an unbounded pool spends the sidecars on handshakes instead of
     * requests. A request that holds its connection (long poll, slow stream) counts against it.
     */
    meshConnectionsPerDestination: z.number().int().min(1).max(4096).default(64),
    /**
     * HTTP/1.1 connections per direct destination (the local application inbound, a destination
     * outside the mesh outbound); requests beyond that wait for a free one. Each is held by one
     * request at a time, so this also caps the requests in flight to one application port.
     */
    directConnectionsPerDestination: z.number().int().min(1).max(65_536).default(1024),
    /**
     * Of those, how many are kept open while idle (up to keepAliveTimeoutMs); one returned beyond
     * that is closed. A burst of concurrent requests otherwise leaves one idle connection per request
     * behind it, each holding memory in the sidecar and the application until the timeout.
     */
    directIdleConnectionsPerDestination: z.number().int().min(0).max(65_536).default(64),
    /**
     * How long an idle connection to a direct destination is kept. Shorter than the keep-alive
     * timeout of the servers behind it (node:http's default is 5 s, and many are similar), so the
     * sidecar closes an idle connection before the server does: a request sent on a connection the
     * server is closing is lost in flight (`http/http1/resend.ts` repeats only idempotent ones).
     */
    directIdleTimeoutMs: z.number().int().min(1).default(4_000),
    /** On SIGTERM: how long connections in flight may take before they are cut. */
    drainTimeoutMs: z.number().int().min(0).default(15_000),
    /**
     * Resolving the DNS names egress rules allow, to check that the destination address is one the
     * claimed name resolves to (`egress-dns.ts`). No servers = the system's resolv.conf. Names in
     * `hostsFile` are answered from it first, as applications' resolvers do; "" reads none.
     */
    egressDns: z
      .object({
        servers: z.array(z.string().min(1)).default([]),
        timeoutMs: z.number().int().min(1).max(30_000).default(2_000),
        maxEntries: z.number().int().min(1).max(1_000_000).default(4_096),
        failureTtlMs: z.number().int().min(0).max(3_600_000).default(5_000),
        hostsFile: z.string().default("/etc/hosts"),
      })
      .strict()
      .default({
        servers: [],
        timeoutMs: 2_000,
        maxEntries: 4_096,
        failureTtlMs: 5_000,
        hostsFile: "/etc/hosts",
      }),
    /**
     * The `x-forwarded-client-cert` field on inbound HTTP requests. Whatever a client sent is always
     * removed (outbound requests too); "sanitize_set" then sets one for a caller verified by mTLS
     * (its SPIFFE ID and certificate hash, `client-cert.ts`), "sanitize" sets none.
     */
    forwardClientCert: z.enum(["sanitize_set", "sanitize"]).default("sanitize_set"),
    /**
     * A GET or HEAD request carrying a body (Content-Length above 0, chunked, HTTP/2 DATA): "refuse"
     * answers 400; "forward" passes it on framed. An application that ignores Content-Length on
     * GET (the method defines no body) reads such a body as a second request nobody decided (the
     * CL.0 class), so only a workload whose application reads those bodies should forward them.
     */
    bodiesOnGetHead: z.enum(["refuse", "forward"]).default("refuse"),
    /**
     * How HTTP/2 and gRPC are proxied: "sessions" through node:http2, each downstream stream
     * forwarded over one upstream session shared per destination; "relay" frame by frame with
     * Sigil's own framing and HPACK (`http/http2/relay/`), one upstream connection per downstream
     * connection, at a fraction of the CPU and allocation per stream.
     */
    http2Engine: z.enum(["sessions", "relay"]).default("relay"),
    logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
    /** Access-log lines per port: all, denied (the default) or off, each with a sampled share. */
    accessLog: accessLogSchema,
  })
  .strict();

export type SidecarConfigInput = z.input<typeof sidecarConfigSchema>;
export type SidecarConfig = z.output<typeof sidecarConfigSchema>;

export class SidecarConfigError extends Error {}

/** Validates a configuration object; the error names the field and the rule it breaks. */
export function parseSidecarConfig(input: unknown): SidecarConfig {
  const result = sidecarConfigSchema.safeParse(input);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`);
    throw new SidecarConfigError(`invalid sidecar configuration: ${lines.join("; ")}`);
  }
  return result.data;
}
