/**
 * The least a pair of Node proxies can do for a request, in this process: the same hops as a
 * sidecar pair (plain TCP in, mutual TLS 1.3 with the mesh's certificates between the two, plain TCP
 * to the application), every chunk relayed as it is (`../compare/byte-relay.ts`, as the
 * comparison's node-pipes path), nothing parsed, decided or recorded. Its CPU per request is the
 * floor of any data path that runs its bytes through Node's streams and TLS: what `cpu.ts --floor`
 * puts beside the sidecar pair.
 */
import type { Socket } from "node:net";
import type tls from "node:tls";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import { pipeListener } from "../compare/byte-relay.ts";
import { listen } from "../../test/support/sidecar-apps.ts";
import type { MeshPki } from "../../test/support/sidecar-mesh.ts";

export interface TlsPipePair {
  readonly port: number;
  close(): Promise<void>;
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
  const open = new Set<Socket>();
  const inbound = pipeListener("server", appPort, context(server), {}, open);
  const inboundPort = await listen(inbound);
  // The mesh names workloads by SPIFFE ID, not host name; the chain is still verified.
  const outbound = pipeListener(
    "client",
    inboundPort,
    context(client),
    { checkServerIdentity: () => undefined },
    open,
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
