import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

/**
 * A throwaway CA and two leaf certificates (the client-side and the server-side proxy) for the
 * nginx and HAProxy pairs, made with openssl in the run's temporary directory. ECDSA P-256 like
 * Sigil's SVIDs, so every pair pays for the same kind of handshake and signatures.
 */

const run = promisify(execFile);

export interface PeerPki {
  readonly caCert: string;
  readonly server: {
    readonly cert: string;
    readonly key: string;
    /** cert + key in one file (HAProxy). */ readonly pem: string;
  };
  readonly client: { readonly cert: string; readonly key: string; readonly pem: string };
}

/** Names the proxies check: the server-side proxy's SAN and the client-side proxy's CN. */
export const SERVER_NAME = "server.bench";
export const CLIENT_NAME = "client.bench";

async function openssl(args: readonly string[]): Promise<void> {
  try {
    await run("openssl", args);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`openssl ${args[0] ?? ""}: ${e.stderr ?? e.message}`);
  }
}

async function leaf(
  dir: string,
  name: string,
  usage: "serverAuth" | "clientAuth",
  ca: { cert: string; key: string },
) {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.crt`);
  const ext = join(dir, `${name}.ext`);
  await writeFile(
    ext,
    `subjectAltName=DNS:${name}\nextendedKeyUsage=${usage}\nbasicConstraints=critical,CA:FALSE\n`,
  );
  await openssl([
    "req",
    "-new",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    key,
    "-out",
    csr,
    "-subj",
    `/CN=${name}`,
  ]);
  await openssl([
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    ca.cert,
    "-CAkey",
    ca.key,
    "-CAcreateserial",
    "-days",
    "2",
    "-out",
    cert,
    "-extfile",
    ext,
  ]);
  const pem = join(dir, `${name}.pem`);
  await writeFile(pem, (await readFile(cert, "utf8")) + (await readFile(key, "utf8")));
  return { cert, key, pem };
}

export async function makePeerPki(dir: string): Promise<PeerPki> {
  const ca = { cert: join(dir, "ca.crt"), key: join(dir, "ca.key") };
  await openssl([
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    ca.key,
    "-out",
    ca.cert,
    "-days",
    "2",
    "-subj",
    "/CN=bench throwaway CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  const server = await leaf(dir, SERVER_NAME, "serverAuth", ca);
  const client = await leaf(dir, CLIENT_NAME, "clientAuth", ca);
  return { caCert: ca.cert, server, client };
}
