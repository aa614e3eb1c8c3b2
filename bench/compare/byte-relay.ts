import net from "node:net";
import type { Socket } from "node:net";
import tls from "node:tls";

/**
 * The data path of the bare Node pipes that stand for the floor of a Node proxy (`node-pipes.ts`,
 * `../sidecar/tls-pipe-pair.ts`): each connection relayed byte for byte to one of its own.
 */

/**
 * Relays both directions between two sockets as they are: every chunk read on one is written to the
 * other, reading pauses while the other side's buffer is full, an end is passed on and an error or
 * close tears both down. `open` holds the sockets alive, so that whoever stops the pipes can destroy
 * them.
 */
export function relayBytes(a: Socket, b: Socket, open: Set<Socket>): void {
  open.add(a).add(b);
  a.setNoDelay(true);
  b.setNoDelay(true);
  const oneWay = (from: Socket, to: Socket): void => {
    from.on("data", (chunk: Buffer) => {
      if (!to.write(chunk)) from.pause();
    });
    to.on("drain", () => from.resume());
    from.on("end", () => to.end());
  };
  oneWay(a, b);
  oneWay(b, a);
  const done = (): void => {
    a.destroy();
    b.destroy();
    open.delete(a);
    open.delete(b);
  };
  a.on("error", done).on("close", done);
  b.on("error", done).on("close", done);
}

/**
 * One listener of a pipe pair, not yet listening. "server": TLS in (client certificate required,
 * checked against `secure.ca`), plaintext out to port `to`. "client": plaintext in, TLS out to port
 * `to` with `secure`'s certificate, the server's checked as `verify` says.
 */
export function pipeListener(
  side: "client" | "server",
  to: number,
  secure: tls.SecureContextOptions,
  verify: Pick<tls.ConnectionOptions, "servername" | "checkServerIdentity">,
  open: Set<Socket>,
): net.Server {
  if (side === "server")
    return tls.createServer({ ...secure, requestCert: true, rejectUnauthorized: true }, (s) =>
      relayBytes(s, net.connect(to, "127.0.0.1"), open),
    );
  const secureContext = tls.createSecureContext(secure);
  return net.createServer((s) =>
    relayBytes(s, tls.connect({ port: to, host: "127.0.0.1", secureContext, ...verify }), open),
  );
}
