/**
 * One side of the bare Node mTLS pipe pair, the comparison's floor for a proxy written on Node: the
 * same hops as the Sigil pair (plaintext in on the client side, TLS 1.3 with client certificates
 * between the sides, plaintext out to the backend), each connection relayed byte for byte to a
 * connection of its own, nothing parsed, decided or recorded (`byte-relay.ts`). Whatever a Node
 * proxy does per request costs at least what this does.
 *
 *   node node-pipes.mjs <spec.json>   (bundled by paths.ts; stops on SIGTERM)
 */
import { readFileSync } from "node:fs";
import type { Socket } from "node:net";
import { pipeListener } from "./byte-relay.ts";

export interface NodePipesSpec {
  /** "client": plaintext in, TLS out; "server": TLS in (client certificate required), plaintext out. */
  readonly side: "client" | "server";
  readonly routes: readonly { readonly listen: number; readonly to: number }[];
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
  /** The name the client side expects in the server side's certificate. */
  readonly serverName: string;
}

const specFile = process.argv[2];
if (specFile === undefined) throw new Error("usage: node-pipes <spec.json>");
const spec = JSON.parse(readFileSync(specFile, "utf8")) as NodePipesSpec;
const secure = {
  cert: readFileSync(spec.certFile),
  key: readFileSync(spec.keyFile),
  ca: readFileSync(spec.caFile),
  minVersion: "TLSv1.3" as const,
};
const open = new Set<Socket>();
const servers = spec.routes.map(({ listen, to }) =>
  pipeListener(spec.side, to, secure, { servername: spec.serverName }, open).listen(listen, "127.0.0.1"),
);
process.once("SIGTERM", () => {
  for (const s of servers) s.close();
  for (const s of open) s.destroy();
});
