import { readFileSync } from "node:fs";
import { CliError, EXIT } from "./exit-codes.ts";

/**
 * `fetch` for the control plane's API. With a CA file (a context's `ca-file`, `--ca-file` or
 * `$SIGIL_CA_FILE`) an HTTPS API is trusted by that CA alone, as the control plane's own certificate
 * is issued by the Sigil CA rather than a public one; undici is loaded only then.
 */
export function apiFetch(caFile: string | undefined): typeof fetch {
  if (!caFile) return fetch;
  let ca: string;
  try {
    ca = readFileSync(caFile, "utf8");
  } catch (err) {
    throw new CliError(`cannot read the CA file ${caFile}: ${(err as Error).message}`, EXIT.failure);
  }
  let trusting: Promise<typeof fetch> | undefined;
  const load = async (): Promise<typeof fetch> => {
    const undici = await import("undici");
    const dispatcher = new undici.Agent({ connect: { ca } });
    return ((input: string | URL | Request, init?: RequestInit) =>
      undici.fetch(input as string, { ...(init as object), dispatcher })) as unknown as typeof fetch;
  };
  return (async (input: string | URL | Request, init?: RequestInit) => {
    trusting ??= load();
    return (await trusting)(input, init);
  }) as typeof fetch;
}
