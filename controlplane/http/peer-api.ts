import { rootCertificates } from "node:tls";
import { Agent, fetch as undiciFetch } from "undici";

/**
 * How one replica reaches another's HTTP API: the URL it announces, and a `fetch` that trusts the
 * public roots and the Sigil CA's (the default TLS of a replica's API is a Sigil certificate).
 */

/**
 * The URL other replicas reach this one's API at: `advertise` when given, else the listen address;
 * none for a wildcard listen address (0.0.0.0, ::), which names no host another replica can reach.
 */
export function advertisedApi(
  advertise: string | undefined,
  host: string,
  port: number,
  tls: boolean,
): string | undefined {
  if (advertise) {
    let url: URL | undefined;
    try {
      url = new URL(advertise);
    } catch {
      url = undefined;
    }
    if (url?.protocol !== "http:" && url?.protocol !== "https:")
      throw new Error(`--api-advertise "${advertise}" is not an http(s) URL (e.g. https://10.0.0.2:15080)`);
    return advertise.replace(/\/$/, "");
  }
  if (host === "0.0.0.0" || host === "::" || host === "") return undefined;
  return `${tls ? "https" : "http"}://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** A fetch trusting `roots()` besides the public roots; the agent is rebuilt when the roots change. */
export function peerFetch(roots: () => string): typeof fetch {
  let agent: { roots: string; dispatcher: Agent } | undefined;
  return ((input: string, init?: RequestInit) => {
    const current = roots();
    if (agent?.roots !== current) {
      void agent?.dispatcher.close();
      agent = { roots: current, dispatcher: new Agent({ connect: { ca: [...rootCertificates, current] } }) };
    }
    return undiciFetch(input, { ...(init as object), dispatcher: agent.dispatcher });
  }) as unknown as typeof fetch;
}
