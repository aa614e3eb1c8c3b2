/**
 * Probes a TLS listener with Debian's `openssl s_client` offering exactly one protocol version and
 * cipher list, as a scanner does, and reports what was negotiated.
 */
import { execFile } from "node:child_process";

export interface TlsProbeResult {
  /** The negotiated protocol ("TLSv1.3", "TLSv1.2"), or null when the handshake was refused. */
  readonly protocol: string | null;
  /** The negotiated cipher (OpenSSL name), or null when refused. */
  readonly cipher: string | null;
  /** s_client's output, for failure messages. */
  readonly output: string;
}

export type ProbeVersion = "tls1" | "tls1_1" | "tls1_2" | "tls1_3";

/**
 * Opens one handshake to `host:port` offering only `version` (and, below TLS 1.3, only `cipher`).
 * Legacy versions need security level 0 on the client side, or OpenSSL 3 would not even offer
 * them and the server would never be tested.
 */
export function probeTls(
  host: string,
  port: number,
  version: ProbeVersion,
  cipher?: string,
  alpn = "h2,http/1.1",
): Promise<TlsProbeResult> {
  const args = ["s_client", "-connect", `${host}:${port}`, "-servername", "localhost", `-${version}`];
  args.push("-alpn", alpn);
  if (version === "tls1_3") {
    if (cipher) args.push("-ciphersuites", cipher);
  } else {
    const legacy = version === "tls1" || version === "tls1_1";
    args.push("-cipher", `${cipher ?? "DEFAULT"}${legacy ? ":@SECLEVEL=0" : ""}`);
  }
  return new Promise((resolve) => {
    const child = execFile("openssl", args, { timeout: 10_000 }, (_err, stdout, stderr) => {
      const output = `${stdout}${stderr}`;
      const match = /New, (TLSv[\d.]+|\(NONE\)), Cipher is (\S+)/.exec(output);
      const protocol = match && match[1] !== "(NONE)" ? (match[1] ?? null) : null;
      resolve({ protocol, cipher: protocol ? (match?.[2] ?? null) : null, output });
    });
    child.stdin?.end();
  });
}
