import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { WorkloadIdentity } from "../../core/identity.ts";
import type { PolicySnapshot } from "../inputs/sources.ts";

/**
 * The admin server (loopback unless configured otherwise): `/ready` (200 once listening with a valid SVID, 503 while starting or
 * draining), `/stats/prometheus`, and `/config_dump` (the effective configuration and live state as
 * JSON; never key material).
 */
export interface AdminState {
  ready(): boolean;
  configDump(): unknown;
}

/** What every sidecar's `/config_dump` starts with: settings, the public identity, enforcement. */
export function configDumpBase(
  config: unknown,
  identity: Pick<WorkloadIdentity, "spiffeId" | "labels" | "serial" | "notAfter">,
  snapshot: PolicySnapshot,
): Record<string, unknown> {
  return {
    config,
    identity: {
      spiffeId: identity.spiffeId,
      labels: identity.labels,
      serial: identity.serial,
      notAfter: identity.notAfter,
    },
    enforcement: snapshot.mode,
    revocations: snapshot.revocations.list.entries.length,
    revokedCertificates: snapshot.revocations.list.certificates?.length ?? 0,
  };
}

/** Where `/stats/prometheus` reads from: one registry, or an aggregate of several processes. */
export interface AdminMetrics {
  readonly registry: Pick<Registry, "metrics" | "contentType">;
}

export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  const v4 = address.startsWith("::ffff:") ? address.slice(7) : address;
  return v4 === "::1" || (net.isIPv4(v4) && v4.startsWith("127."));
}

export async function startAdmin(
  host: string,
  port: number,
  metrics: AdminMetrics,
  state: AdminState,
  log: Logger,
): Promise<{ server: http.Server; address: AddressInfo }> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/ready") {
      const ready = state.ready();
      res
        .writeHead(ready ? 200 : 503, { "content-type": "text/plain" })
        .end(ready ? "LIVE\n" : "NOT READY\n");
      return;
    }
    if (path === "/stats/prometheus") {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(text),
        (err: Error) => {
          log.warn({ err: err.message }, "metrics collection failed");
          res.writeHead(500).end();
        },
      );
      return;
    }
    if (path === "/config_dump") {
      // The admin listener may face the network for scraping; the configuration is for the host.
      if (!isLoopback(req.socket.remoteAddress)) {
        res.writeHead(403, { "content-type": "text/plain" }).end("config_dump is served to loopback only\n");
        return;
      }
      res
        .writeHead(200, { "content-type": "application/json" })
        .end(`${JSON.stringify(state.configDump(), null, 2)}\n`);
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return { server, address: server.address() as AddressInfo };
}
