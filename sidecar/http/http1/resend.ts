import type { UpstreamConnection } from "../../upstream/http1-pool.ts";
import type { Exchange } from "./exchange.ts";

/** Methods whose repetition has the effect of one request (RFC 9110 §9.2.2): safe to send again. */
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/**
 * Whether an exchange whose upstream connection ended or broke may be sent again on another one
 * instead of being answered 502. Only when the failure is the known keep-alive race, and repeating
 * it cannot do what the client did not ask for:
 * - the connection was reused: an upstream closing an idle connection (its keep-alive timeout)
 *   while the request was on its way is the one failure a retry mends; a fresh connection failing
 *   is a real upstream problem;
 * - no byte of a response arrived, so nothing of it was relayed or can be lost;
 * - the method is idempotent, as a proxy may only repeat those unasked;
 * - the request has no body (nothing consumed from the client that could not be sent again) and
 *   asks for no protocol switch.
 */
export function mayResend(ex: Exchange, up: UpstreamConnection): boolean {
  return (
    up.reused &&
    !ex.response.receivedAny &&
    IDEMPOTENT.has(ex.req.method) &&
    !ex.upgrading &&
    !ex.req.chunked &&
    (ex.req.contentLength === null || ex.req.contentLength === 0)
  );
}
