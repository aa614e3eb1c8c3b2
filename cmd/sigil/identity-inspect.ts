import { readFile } from "node:fs/promises";
import type { AttestedLabel } from "../../core/labels.ts";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import { parseBundle } from "../../core/svid/bundle.ts";
import {
  certificatesFromFile,
  looksLikeJwt,
  readJwtClaims,
  readSvidClaims,
} from "../../core/svid/inspect.ts";
import { JwtSvidError, verifyJwtSvid } from "../../core/svid/jwt.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import type { RevocationList } from "../../core/svid/revocation.ts";
import { SvidVerificationError, verifySvid } from "../../core/svid/verify.ts";
import { apiTarget, identityApi } from "./identity-api.ts";

/**
 * What `sigil identity inspect` finds in an SVID file, as data: the document's claims and whether
 * it checks out against a trust bundle. `commands/identity.ts` prints it as text, JSON or YAML.
 */

export interface InspectOptions {
  bundle?: string;
  trustDomain: string;
  dataDir?: string;
  api?: string;
  tokenFile?: string;
  audience?: string;
}

/** The trust check: not made (and why), passed (against which bundle), or failed (and why). */
export type Verification =
  | { readonly checked: false; readonly reason: string }
  | { readonly checked: true; readonly valid: true; readonly trustDomain: string; readonly from: string }
  | { readonly checked: true; readonly valid: false; readonly reason?: string; readonly message: string };

export interface X509Inspection {
  readonly type: "X.509-SVID";
  readonly spiffeIds: readonly string[];
  readonly labels: readonly AttestedLabel[] | { readonly error: string };
  readonly serial: string;
  readonly issuer: string;
  readonly notBefore: string;
  readonly notAfter: string;
  readonly verification: Verification;
}

export interface JwtInspection {
  readonly type: "JWT-SVID";
  readonly spiffeId: string;
  readonly audience: unknown;
  readonly labels: Readonly<Record<string, string>>;
  readonly expiresAt: string | null;
  readonly verification: Verification;
}

export type Inspection = X509Inspection | JwtInspection;

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
    const { CertificateAuthority } = await import("../../controlplane/ca/authority.ts");
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

/** Runs `check` against the trust source; a refusal (X.509 with its rejection reason, or JWT) is a failed check. */
async function verify(
  trust: TrustSource | string,
  check: (trust: TrustSource) => Promise<unknown> | unknown,
): Promise<Verification> {
  if (typeof trust === "string") return { checked: false, reason: trust };
  try {
    await check(trust);
    return { checked: true, valid: true, trustDomain: trust.bundle.trustDomain, from: trust.from };
  } catch (err) {
    if (err instanceof SvidVerificationError)
      return { checked: true, valid: false, reason: err.reason, message: err.message };
    if (err instanceof JwtSvidError) return { checked: true, valid: false, message: err.message };
    throw err;
  }
}

async function inspectJwt(
  file: string,
  text: string,
  trust: TrustSource | string,
  opts: InspectOptions,
  now: Date,
): Promise<JwtInspection> {
  let claims: Record<string, unknown>;
  try {
    claims = readJwtClaims(text);
  } catch (err) {
    throw new Error(`${file} is not a readable JWT: ${(err as Error).message}`);
  }
  const verification = await verify(trust, (t) =>
    verifyJwtSvid(text.trim(), { bundle: t.bundle, audience: opts.audience ?? "sigil", now }),
  );
  return {
    type: "JWT-SVID",
    spiffeId: String(claims.sub),
    audience: claims.aud,
    labels: (claims.labels as Record<string, string>) ?? {},
    expiresAt: typeof claims.exp === "number" ? new Date(claims.exp * 1000).toISOString() : null,
    verification,
  };
}

async function inspectX509(
  file: string,
  content: Buffer,
  trust: TrustSource | string,
  now: Date,
): Promise<X509Inspection> {
  let chain: Buffer[];
  try {
    chain = certificatesFromFile(content);
  } catch (err) {
    throw new Error(`${file} holds neither a certificate (PEM/DER) nor a JWT: ${(err as Error).message}`);
  }
  if (chain.length === 0) throw new Error(`${file} holds no certificate`);
  const claims = readSvidClaims(chain[0] as Buffer);
  const verification = await verify(trust, (t) =>
    verifySvid(chain, { bundle: t.bundle, purpose: "client", revocations: t.revocations, now }),
  );
  return {
    type: "X.509-SVID",
    spiffeIds: claims.uriSans,
    labels: claims.labels,
    serial: claims.serial,
    issuer: claims.issuer,
    notBefore: claims.notBefore.toISOString(),
    notAfter: claims.notAfter.toISOString(),
    verification,
  };
}

/** Reads `file` (a certificate chain, PEM or DER, or a JWT) and checks it against the trust source opts name. */
export async function inspectSvidFile(file: string, opts: InspectOptions, now: Date): Promise<Inspection> {
  const content = await readFile(file).catch((err: Error) => {
    throw new Error(`cannot read ${file}: ${err.message}`);
  });
  const trust = await trustSource(opts);
  const text = content.toString("utf8");
  return looksLikeJwt(text)
    ? inspectJwt(file, text, trust, opts, now)
    : inspectX509(file, content, trust, now);
}
