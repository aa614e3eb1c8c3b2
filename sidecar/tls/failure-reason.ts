/**
 * A stable code for why a TLS handshake failed, to log beside the message: the message is
 * OpenSSL's text ("error:0A000418:SSL routines::tlsv1 alert unknown ca"), which changes between
 * OpenSSL versions and is no key a log pipeline can group by. The code comes from the error's
 * `code` (OpenSSL's reason name as Node exposes it, ERR_SSL_<REASON>, or Node's own ERR_TLS_* and
 * socket errors), lower-cased with dashes: `tls-tlsv1-alert-unknown-ca`, `tls-wrong-version-number`,
 * `connection-reset`; `tls-error` when the error carries none.
 */
export function tlsFailureReason(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string" || !/^[A-Z0-9_]+$/.test(code)) return "tls-error";
  const dashed = (s: string): string => s.toLowerCase().replaceAll("_", "-");
  if (code.startsWith("ERR_SSL_")) return `tls-${dashed(code.slice("ERR_SSL_".length))}`;
  if (code.startsWith("ERR_TLS_")) return `tls-${dashed(code.slice("ERR_TLS_".length))}`;
  const socket: Record<string, string> = {
    ECONNRESET: "connection-reset",
    EPIPE: "connection-reset",
    ETIMEDOUT: "timeout",
    ECONNREFUSED: "connection-refused",
  };
  return socket[code] ?? `tls-${dashed(code)}`;
}
