import { readFile } from "node:fs/promises";
import { createServer, type RequestListener, type Server } from "node:http";
import { createServer as createTlsServer } from "node:https";
import { LISTENER_TLS_OPTIONS } from "../../core/tls-policy.ts";

/** The serving certificate source the gRPC listener uses, renewed together. */
export interface ServingSource {
  readonly latest: { readonly keyPem: string; readonly certPem: string } | undefined;
  onRenew(listener: (tls: { readonly keyPem: string; readonly certPem: string }) => void): void;
}

/**
 * The HTTP API and UI server: HTTPS with Sigil's listener TLS (TLS 1.3, or 1.2 with ECDHE AEAD
 * suites) and either the control plane's CA-issued serving certificate, replaced at each renewal,
 * or the operator's own files; or plain HTTP when `tls` is "off" (loopback by default).
 */
export async function createApiServer(
  handler: RequestListener,
  tls: "sigil" | "off" | { readonly certFile: string; readonly keyFile: string },
  serving: ServingSource,
): Promise<Server> {
  if (tls === "off") return createServer(handler);
  if (tls === "sigil") {
    const material = serving.latest;
    if (!material) throw new Error("the control plane's serving certificate is not issued yet");
    const server = createTlsServer(
      { ...LISTENER_TLS_OPTIONS, key: material.keyPem, cert: material.certPem },
      handler,
    );
    serving.onRenew((next) =>
      server.setSecureContext({ ...LISTENER_TLS_OPTIONS, key: next.keyPem, cert: next.certPem }),
    );
    return server;
  }
  const read = async (path: string, what: string) => {
    try {
      return await readFile(path, "utf8");
    } catch (err) {
      throw new Error(`HTTP API TLS ${what} ${path}: ${(err as Error).message}`);
    }
  };
  const [cert, key] = await Promise.all([read(tls.certFile, "certificate"), read(tls.keyFile, "key")]);
  try {
    return createTlsServer({ ...LISTENER_TLS_OPTIONS, key, cert }, handler);
  } catch (err) {
    throw new Error(`HTTP API TLS ${tls.certFile} / ${tls.keyFile}: ${(err as Error).message}`);
  }
}
