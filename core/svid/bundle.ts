import { X509Certificate } from "node:crypto";
import { z } from "zod";

/** A JWT-SVID signing key as published in the bundle (public half only). */
export interface JwtAuthority {
  readonly kid: string;
  readonly jwk: Readonly<Record<string, string>>;
}

/**
 * The trust anchors of one trust domain: X.509 roots that SVID chains must end at and the keys that
 * sign JWT-SVIDs. Several roots at once is normal during a CA rotation's overlap.
 */
export interface TrustBundle {
  readonly trustDomain: string;
  /** Increases on every change, so a receiver can ignore stale copies. */
  readonly sequence: number;
  readonly refreshHintSeconds: number;
  readonly x509Authorities: readonly X509Certificate[];
  readonly jwtAuthorities: readonly JwtAuthority[];
}

/** The SPIFFE bundle document (a JWK set with SPIFFE's two extra members). */
export interface SpiffeBundleDocument {
  readonly keys: readonly Record<string, unknown>[];
  readonly spiffe_sequence: number;
  readonly spiffe_refresh_hint: number;
}

/** A bundle document that cannot be used, with the key index and member at fault. */
export class TrustBundleError extends Error {}

function publicJwk(cert: X509Certificate): Record<string, string> {
  const jwk = cert.publicKey.export({ format: "jwk" }) as Record<string, unknown>;
  return Object.fromEntries(
    Object.entries(jwk).filter((e): e is [string, string] => typeof e[1] === "string"),
  );
}

export function bundleToDocument(bundle: TrustBundle): SpiffeBundleDocument {
  return {
    keys: [
      ...bundle.x509Authorities.map((cert) => ({
        use: "x509-svid",
        ...publicJwk(cert),
        x5c: [cert.raw.toString("base64")],
      })),
      ...bundle.jwtAuthorities.map((a) => ({ use: "jwt-svid", ...a.jwk, kid: a.kid })),
    ],
    spiffe_sequence: bundle.sequence,
    spiffe_refresh_hint: bundle.refreshHintSeconds,
  };
}

export function bundleToJson(bundle: TrustBundle): string {
  return JSON.stringify(bundleToDocument(bundle), null, 2);
}

/** The X.509 roots as concatenated PEM, the form `openssl verify -CAfile` and `tls` `ca` take. */
export function bundleRootsPem(bundle: TrustBundle): string {
  return bundle.x509Authorities.map((c) => c.toString()).join("");
}

const keySchema = z
  .object({
    use: z.enum(["x509-svid", "jwt-svid"]),
    kty: z.string(),
    kid: z.string().min(1).optional(),
    x5c: z.array(z.string()).optional(),
  })
  .passthrough();

const documentSchema = z.object({
  keys: z.array(keySchema),
  spiffe_sequence: z.number().int().nonnegative(),
  spiffe_refresh_hint: z.number().int().positive(),
});

/** Parses and checks a SPIFFE bundle document (object or JSON text) for `trustDomain`. */
export function parseBundle(trustDomain: string, input: unknown): TrustBundle {
  let value = input;
  if (typeof input === "string") {
    try {
      value = JSON.parse(input);
    } catch (err) {
      throw new TrustBundleError(`trust bundle is not JSON: ${(err as Error).message}`);
    }
  }
  const parsed = documentSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new TrustBundleError(`trust bundle ${issue?.path.join(".") || "document"}: ${issue?.message}`);
  }
  const x509Authorities: X509Certificate[] = [];
  const jwtAuthorities: JwtAuthority[] = [];
  for (const [index, key] of parsed.data.keys.entries()) {
    const { use, x5c, ...rest } = key;
    const members = Object.fromEntries(
      Object.entries(rest).filter((e): e is [string, string] => typeof e[1] === "string"),
    );
    if (use === "x509-svid") {
      if (!x5c || x5c.length !== 1)
        throw new TrustBundleError(`trust bundle keys[${index}]: x509-svid needs exactly one x5c`);
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(Buffer.from(x5c[0] as string, "base64"));
      } catch (err) {
        throw new TrustBundleError(`trust bundle keys[${index}].x5c[0]: ${(err as Error).message}`);
      }
      if (!cert.ca) throw new TrustBundleError(`trust bundle keys[${index}]: certificate is not a CA`);
      const certJwk = publicJwk(cert);
      for (const member of ["kty", "crv", "x", "y", "n", "e"]) {
        if (certJwk[member] !== members[member]) {
          throw new TrustBundleError(
            `trust bundle keys[${index}].${member} does not match the x5c certificate`,
          );
        }
      }
      x509Authorities.push(cert);
    } else {
      if (!key.kid) throw new TrustBundleError(`trust bundle keys[${index}]: jwt-svid key needs a kid`);
      if (members.d) throw new TrustBundleError(`trust bundle keys[${index}]: contains a private key`);
      const { kid, ...jwk } = members;
      jwtAuthorities.push({ kid: kid as string, jwk });
    }
  }
  return {
    trustDomain,
    sequence: parsed.data.spiffe_sequence,
    refreshHintSeconds: parsed.data.spiffe_refresh_hint,
    x509Authorities,
    jwtAuthorities,
  };
}
