import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import type { TrustBundle } from "../../../core/svid/bundle.ts";
import { parseBundle } from "../../../core/svid/bundle.ts";
import {
  certificatesFromFile,
  looksLikeJwt,
  readJwtClaims,
  readSvidClaims,
} from "../../../core/svid/inspect.ts";
import { JwtSvidError, verifyJwtSvid } from "../../../core/svid/jwt.ts";
import { RevocationIndex } from "../../../core/svid/revocation.ts";
import type { RevocationList } from "../../../core/svid/revocation.ts";
import { SvidVerificationError, verifySvid } from "../../../core/svid/verify.ts";
import { CertificateAuthority } from "../../../controlplane/ca/authority.ts";
import { processIo } from "../cli-support.ts";
import type { CliIo } from "../cli-support.ts";
import { apiTarget, identityApi } from "../identity-api.ts";

interface InspectOptions {
  bundle?: string;
  trustDomain: string;
  dataDir?: string;
  api?: string;
  tokenFile?: string;
  audience?: string;
}

interface TrustSource {
  readonly bundle: TrustBundle;
  readonly revocations?: RevocationIndex;
  readonly from: string;
}

async function trustSource(opts: InspectOptions): Promise<TrustSource | string> {
  if (opts.bundle) {
    const text = await readFile(opts.bundle, "utf8");
    if (text.includes("-----BEGIN CERTIFICATE-----")) {
      const { X509Certificate } = await import("node:crypto");
      const roots = certificatesFromFile(Buffer.from(text)).map((der) => new X509Certificate(der));
      return {
        bundle: {
          trustDomain: opts.trustDomain,
          sequence: 0,
          refreshHintSeconds: 300,
          x509Authorities: roots,
          jwtAuthorities: [],
        },
        from: opts.bundle,
      };
    }
    return { bundle: parseBundle(opts.trustDomain, text), from: opts.bundle };
  }
  if (opts.dataDir) {
    if (!(await CertificateAuthority.exists(opts.dataDir))) return `no CA in ${opts.dataDir}/ca`;
    const ca = await CertificateAuthority.open({ dataDir: opts.dataDir });
    return { bundle: ca.bundle(), from: `${opts.dataDir}/ca` };
  }
  if (opts.api) {
    try {
      const api = apiTarget({ api: opts.api, tokenFile: opts.tokenFile });
      const info = await identityApi<{ trustDomain: string }>(api, "GET", "api/identity/ca");
      const doc = await identityApi<unknown>(api, "GET", "api/identity/bundle");
      const list = await identityApi<RevocationList>(api, "GET", "api/identity/revocations");
      return {
        bundle: parseBundle(info.trustDomain, doc),
        revocations: new RevocationIndex(list),
        from: opts.api,
      };
    } catch (err) {
      return (err as Error).message;
    }
  }
  return "no trust bundle given (--bundle, --data-dir or --api)";
}

function until(date: Date, now: Date): string {
  const minutes = Math.round((date.getTime() - now.getTime()) / 60_000);
  return minutes >= 0 ? `in ${minutes}m` : `EXPIRED ${-minutes}m ago`;
}

/** `sigil identity inspect <cert-or-jwt-file>` */
export function register(program: Command, io: CliIo = processIo): void {
  const identity = program
    .command("identity")
    .description("workload identity documents (X.509-SVIDs, JWT-SVIDs)");
  identity
    .command("inspect <file>")
    .description(
      "show the SPIFFE ID, labels and expiry of an SVID (PEM/DER certificate chain or JWT) and check it against the trust bundle",
    )
    .option("--bundle <file>", "trust bundle: SPIFFE bundle JSON or PEM roots")
    .option("--trust-domain <name>", "trust domain of --bundle", "sigil.local")
    .option("--data-dir <dir>", "take the trust bundle from this control plane data directory")
    .option("--api <url>", "take the trust bundle and revocations from this control plane API")
    .option("--token-file <path>", "admin token for --api (default: $SIGIL_TOKEN_FILE, else the local one)")
    .option("--audience <aud>", "audience a JWT-SVID must carry", "sigil")
    .action(async (file: string, opts: InspectOptions) => {
      const content = await readFile(file).catch((err: Error) => {
        throw new Error(`cannot read ${file}: ${err.message}`);
      });
      const now = new Date();
      const trust = await trustSource(opts);
      const lines: string[] = [];
      let valid: boolean | null = null;
      const text = content.toString("utf8");
      if (looksLikeJwt(text)) {
        let claims: Record<string, unknown>;
        try {
          claims = readJwtClaims(text);
        } catch (err) {
          throw new Error(`${file} is not a readable JWT: ${(err as Error).message}`);
        }
        const exp = typeof claims.exp === "number" ? new Date(claims.exp * 1000) : null;
        lines.push(
          "type:       JWT-SVID",
          `SPIFFE ID:  ${String(claims.sub)}`,
          `audience:   ${JSON.stringify(claims.aud)}`,
        );
        for (const [k, v] of Object.entries((claims.labels as Record<string, string>) ?? {}))
          lines.push(`label:      ${k}=${v}`);
        lines.push(`expires:    ${exp ? `${exp.toISOString()} (${until(exp, now)})` : "no exp claim"}`);
        if (typeof trust !== "string") {
          try {
            await verifyJwtSvid(text.trim(), {
              bundle: trust.bundle,
              audience: opts.audience ?? "sigil",
              now,
            });
            valid = true;
            lines.push(`signature:  valid against the ${trust.bundle.trustDomain} bundle from ${trust.from}`);
          } catch (err) {
            if (!(err instanceof JwtSvidError)) throw err;
            valid = false;
            lines.push(`signature:  INVALID: ${err.message}`);
          }
        }
      } else {
        let chain: Buffer[];
        try {
          chain = certificatesFromFile(content);
        } catch (err) {
          throw new Error(
            `${file} holds neither a certificate (PEM/DER) nor a JWT: ${(err as Error).message}`,
          );
        }
        if (chain.length === 0) throw new Error(`${file} holds no certificate`);
        const claims = readSvidClaims(chain[0] as Buffer);
        lines.push("type:       X.509-SVID", `SPIFFE ID:  ${claims.uriSans.join(", ") || "(no URI SAN)"}`);
        if ("error" in claims.labels) lines.push(`labels:     UNREADABLE: ${claims.labels.error}`);
        else for (const l of claims.labels) lines.push(`label:      ${l.key}=${l.value}  (${l.provenance})`);
        lines.push(
          `serial:     ${claims.serial}`,
          `issuer:     ${claims.issuer}`,
          `valid:      ${claims.notBefore.toISOString()} .. ${claims.notAfter.toISOString()} (expires ${until(claims.notAfter, now)})`,
        );
        if (typeof trust !== "string") {
          try {
            verifySvid(chain, {
              bundle: trust.bundle,
              purpose: "client",
              revocations: trust.revocations,
              now,
            });
            valid = true;
            lines.push(`chain:      valid against the ${trust.bundle.trustDomain} bundle from ${trust.from}`);
          } catch (err) {
            if (!(err instanceof SvidVerificationError)) throw err;
            valid = false;
            lines.push(`chain:      INVALID (${err.reason}): ${err.message}`);
          }
        }
      }
      if (typeof trust === "string") lines.push(`chain:      not checked: ${trust}`);
      io.out(`${lines.join("\n")}\n`);
      if (valid === false) process.exitCode = 1;
    });
}
