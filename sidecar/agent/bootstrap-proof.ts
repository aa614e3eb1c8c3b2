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
 * How the sidecar proves itself for its first SVID, and again when its certificate can no longer
 * prove it (revoked by serial): a projected Kubernetes service-account token, or a one-time join
 * token. Files are read at start (failing early) and anew on every bootstrap: the kubelet rotates a
 * service-account token, and an operator puts a new join token in the file for a workload whose
 * certificate was revoked, since the first one is used up.
 */
export async function bootstrapProofSource(o: AgentOptions): Promise<() => Promise<BootstrapProof>> {
  if (o.serviceAccountTokenFile !== undefined) {
    const file = o.serviceAccountTokenFile;
    await readSecretFile(file, "service-account token");
    return async () => ({ serviceAccountToken: await readSecretFile(file, "service-account token") });
  }
  if (o.joinTokenFile !== undefined) {
    const file = o.joinTokenFile;
    await readSecretFile(file, "join token");
    return async () => ({ joinToken: await readSecretFile(file, "join token") });
  }
  const joinToken = o.joinToken as string;
  return () => Promise.resolve({ joinToken });
}
