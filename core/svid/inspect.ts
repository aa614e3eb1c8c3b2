import { decodeJwt } from "jose";
import { decodeLabelsExtension, matchLabelsExtension } from "./labels-extension.ts";
import type { AttestedLabel } from "../labels.ts";
import { x509 } from "./x509.ts";

/** What an SVID claims, read without verifying anything (for display next to a verdict). */
export interface SvidClaims {
  readonly uriSans: readonly string[];
  readonly labels: readonly AttestedLabel[] | { readonly error: string };
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly isCa: boolean;
  readonly issuer: string;
}

export function readSvidClaims(der: Buffer): SvidClaims {
  const cert = new x509.X509Certificate(der);
  const uriSans =
    cert
      .getExtension(x509.SubjectAlternativeNameExtension)
      ?.names.items.filter((n) => n.type === "url")
      .map((n) => n.value) ?? [];
  let labels: SvidClaims["labels"] = [];
  try {
    for (const ext of cert.extensions) {
      const match = matchLabelsExtension(Buffer.from(ext.rawData));
      if (match) labels = decodeLabelsExtension(match.value);
    }
  } catch (err) {
    labels = { error: (err as Error).message };
  }
  return {
    uriSans,
    labels,
    serial: cert.serialNumber,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    isCa: cert.getExtension(x509.BasicConstraintsExtension)?.ca ?? false,
    issuer: cert.issuer,
  };
}

/** The certificates in a PEM or DER file, DER-encoded, in file order. */
export function certificatesFromFile(content: Buffer): Buffer[] {
  const text = content.toString("latin1");
  if (text.includes("-----BEGIN CERTIFICATE-----")) {
    const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    return blocks.map((b) => Buffer.from(x509.PemConverter.decodeFirst(b)));
  }
  return [Buffer.from(new x509.X509Certificate(content).rawData)];
}

/** True when `text` has the shape of a compact JWS (three base64url parts). */
export function looksLikeJwt(text: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(text.trim());
}

export function readJwtClaims(token: string): Record<string, unknown> {
  return decodeJwt(token.trim()) as Record<string, unknown>;
}
