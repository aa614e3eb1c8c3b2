/**
 * The least a pair of Node proxies can do for a request, in this process: the same hops as a
 * sidecar pair (plain TCP in, mutual TLS 1.3 with the mesh's certificates between the two, plain TCP
 * to the application), every chunk relayed as it is (`../compare/byte-relay.ts`, as the
 * comparison's node-pipes path), nothing parsed, decided or recorded. Its CPU per request is the
 * floor of any data path that runs its bytes through Node's streams and TLS: what `cpu.ts --floor`
 * puts beside the sidecar pair.
 */
import net from "node:net";
import tls from "node:tls";
import { once } from "node:events";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import { relayBytes } from "../compare/byte-relay.ts";
import type { MeshPki } from "../../test/support/sidecar-mesh.ts";

export interface TlsPipePair {
  readonly port: number;
  close(): Promise<void>;
}

async function listen(server: net.Server): Promise<number> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return (server.address() as net.AddressInfo).port;
}

/** A pipe pair in front of the application at `appPort`. */
export async function startTlsPipePair(pki: MeshPki, appPort: number): Promise<TlsPipePair> {
  const [client, server] = await Promise.all([
    pki.credentials("pipe-client", { app: "web" }),
    pki.credentials("pipe-server", { app: "api" }),
  ]);
  const context = (c: typeof client): tls.SecureContextOptions => ({
    key: c.privateKeyPem,
    cert: c.certChainPem,
    ca: bundleRootsPem(c.bundle),
    minVersion: "TLSv1.3",
  });
  const open = new Set<net.Socket>();
  const inbound = tls.createServer({ ...context(server), requestCert: true, rejectUnauthorized: true }, (s) =>
    relayBytes(s, net.connect(appPort, "127.0.0.1"), open),
  );
  const inboundPort = await listen(inbound);
  const clientContext = tls.createSecureContext(context(client));
  const outbound = net.createServer((s) =>
    relayBytes(
      s,
      tls.connect({
        port: inboundPort,
        host: "127.0.0.1",
        secureContext: clientContext,
        // The mesh names workloads by SPIFFE ID, not host name; the chain is still verified.
        checkServerIdentity: () => undefined,
      }),
      open,
    ),
  );
  const port = await listen(outbound);
  return {
    port,
    async close() {
      outbound.close();
      inbound.close();
      for (const s of open) s.destroy();
    },
  };
}
