import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** PEM key and certificate chain for a test's TLS listener (the xDS server suites and bench). */
export interface ServingCert {
  readonly keyPem: string;
  readonly certPem: string;
}

const DNS_NAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/;

/** A fresh self-signed serving certificate (made with openssl) for `dnsNames` plus 127.0.0.1 and ::1. */
export async function createSelfSignedServingCert(dnsNames: readonly string[]): Promise<ServingCert> {
  for (const name of dnsNames) {
    if (!DNS_NAME.test(name))
      throw new Error(`serving certificate name is not a DNS name: ${JSON.stringify(name)}`);
  }
  const sans = [...dnsNames.map((n) => `DNS:${n}`), "IP:127.0.0.1", "IP:::1"].join(",");
  const work = await mkdtemp(join(tmpdir(), "sigil-cert-"));
  try {
    const keyPath = join(work, "key.pem");
    const certPath = join(work, "cert.pem");
    await run("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-days",
      "365",
      "-subj",
      `/CN=${dnsNames[0] ?? "sigil-controlplane"}`,
      "-addext",
      `subjectAltName=${sans}`,
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-addext",
      "keyUsage=critical,digitalSignature",
      "-addext",
      "extendedKeyUsage=serverAuth",
      "-keyout",
      keyPath,
      "-out",
      certPath,
    ]);
    const [keyPem, certPem] = await Promise.all([readFile(keyPath, "utf8"), readFile(certPath, "utf8")]);
    return { keyPem, certPem };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
