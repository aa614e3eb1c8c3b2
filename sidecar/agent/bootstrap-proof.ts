import { readFile } from "node:fs/promises";
import type { BootstrapProof } from "../identity/rotation.ts";
import type { AgentOptions } from "./options.ts";

export class BootstrapProofError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BootstrapProofError";
  }
}

async function readSecretFile(file: string, what: string): Promise<string> {
  let text: string;
  try {
    text = (await readFile(file, "utf8")).trim();
  } catch (err) {
    throw new BootstrapProofError(`cannot read ${what} file ${file}: ${(err as Error).message}`);
  }
  if (!text) throw new BootstrapProofError(`${what} file ${file} is empty`);
  return text;
}

/**
 * How the sidecar proves itself for its first SVID: a one-time join token (given or read once at
 * start, failing early), or a projected Kubernetes service-account token read anew on every
 * bootstrap, since the kubelet rotates the file and an old token may have expired.
 */
export async function bootstrapProofSource(o: AgentOptions): Promise<() => Promise<BootstrapProof>> {
  if (o.serviceAccountTokenFile !== undefined) {
    const file = o.serviceAccountTokenFile;
    await readSecretFile(file, "service-account token");
    return async () => ({ serviceAccountToken: await readSecretFile(file, "service-account token") });
  }
  const joinToken = o.joinToken ?? (await readSecretFile(o.joinTokenFile as string, "join token"));
  return () => Promise.resolve({ joinToken });
}
