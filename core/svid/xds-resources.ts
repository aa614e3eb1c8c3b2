import { z } from "zod";
import type { TrustBundle } from "./bundle.ts";
import { bundleRootsPem, bundleToJson, parseBundle } from "./bundle.ts";
import { canonicalSerial } from "./revocation.ts";
import type { Revocation, RevocationList, RevokedCertificate } from "./revocation.ts";

/**
 * Translation between the identity data model and Sigil's xDS resources
 * (core/proto/sigil/v1/trust_bundle.proto, revocation.proto). `*Spec` results have the shape the
 * control plane's resource builders take (snake_case fields, Dates); `*FromResource` read what
 * the xDS client decodes (snake_case, 64-bit integers as strings) and validate it.
 */

export interface TrustBundleSpecShape {
  readonly trust_domain: string;
  readonly x509_roots_pem: readonly string[];
  readonly jwks_json: string;
  readonly sequence: number;
  readonly refresh_hint_seconds: number;
}

export interface RevocationListSpecShape {
  readonly trust_domain: string;
  readonly certificates: readonly {
    serial: string;
    spiffe_id: string;
    revoked_at: Date;
    expires_at: Date;
    reason: string;
  }[];
  readonly spiffe_ids: readonly string[];
  readonly sequence: number;
}

export function trustBundleSpec(bundle: TrustBundle): TrustBundleSpecShape {
  return {
    trust_domain: bundle.trustDomain,
    x509_roots_pem: bundle.x509Authorities.map((c) => c.toString()),
    jwks_json: bundleToJson(bundle),
    sequence: bundle.sequence,
    refresh_hint_seconds: bundle.refreshHintSeconds,
  };
}

/**
 * A revoked workload is never issued again, so every certificate carrying its SPIFFE ID is refused:
 * the IDs go in `spiffe_ids`, and `certificates` repeats them (with an empty serial) with time and
 * reason. A revoked single certificate is a `certificates` entry with its serial.
 */
export function revocationListSpec(list: RevocationList): RevocationListSpecShape {
  const entry = (e: Revocation, serial: string) => ({
    serial,
    spiffe_id: e.spiffeId,
    revoked_at: new Date(e.revokedAtMs),
    expires_at: new Date(e.expiresAtMs),
    reason: e.reason,
  });
  return {
    trust_domain: list.trustDomain,
    spiffe_ids: list.entries.map((e) => e.spiffeId),
    sequence: list.sequence,
    certificates: [
      ...list.entries.map((e) => entry(e, "")),
      ...(list.certificates ?? []).map((c) => entry(c, c.serial)),
    ],
  };
}

/** The latest instant a JavaScript Date can hold. */
const MAX_DATE_MS = 8.64e15;

const uint64 = z.union([z.string().regex(/^\d+$/), z.number().int().nonnegative()]).transform(Number);
const timestamp = z
  .object({ seconds: uint64, nanos: z.number().int().default(0) })
  .transform((t) => t.seconds * 1000 + Math.floor(t.nanos / 1e6));

const trustBundleMessage = z.object({
  trust_domain: z.string().min(1),
  jwks_json: z.string(),
  x509_roots_pem: z.array(z.string()),
  sequence: uint64,
});

const revocationMessage = z.object({
  trust_domain: z.string().min(1),
  sequence: uint64,
  spiffe_ids: z.array(z.string()),
  certificates: z.array(
    z.object({
      serial: z.string().default(""),
      spiffe_id: z.string(),
      reason: z.string(),
      revoked_at: timestamp.nullable().optional(),
      expires_at: timestamp.nullable().optional(),
    }),
  ),
});

function checked<T>(schema: z.ZodType<T>, message: unknown, what: string): T {
  const parsed = schema.safeParse(message);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${what} resource ${issue?.path.join(".") || "message"}: ${issue?.message}`);
  }
  return parsed.data;
}

/** Reads a decoded `sigil.v1.TrustBundle`; the SPIFFE bundle document in `jwks_json` is authoritative. */
export function trustBundleFromResource(message: unknown): TrustBundle {
  const m = checked(trustBundleMessage, message, "TrustBundle");
  const bundle = parseBundle(m.trust_domain, m.jwks_json);
  if (bundle.sequence !== m.sequence) {
    throw new Error(
      `TrustBundle resource sequence ${m.sequence} disagrees with its bundle document (${bundle.sequence})`,
    );
  }
  const pem = bundleRootsPem(bundle);
  for (const root of m.x509_roots_pem) {
    if (!pem.includes(root.trim()))
      throw new Error("TrustBundle resource lists a root that its bundle document does not hold");
  }
  return bundle;
}

/**
 * Reads a decoded `sigil.v1.RevocationList`: every ID in `spiffe_ids` is revoked, a `certificates`
 * entry without serial for the same ID supplies its time, expiry and reason; a `certificates` entry
 * with a serial revokes that one certificate (a serial that is not hex refuses the whole list, since
 * leaving it out would accept the certificate it names).
 */
export function revocationListFromResource(message: unknown): RevocationList {
  const m = checked(revocationMessage, message, "RevocationList");
  const details = new Map(m.certificates.filter((c) => c.serial === "").map((c) => [c.spiffe_id, c]));
  const certificates: RevokedCertificate[] = [];
  m.certificates.forEach((c, i) => {
    if (c.serial === "") return;
    let serial: string;
    try {
      serial = canonicalSerial(c.serial);
    } catch (err) {
      throw new Error(`RevocationList resource certificates.${i}.serial: ${(err as Error).message}`);
    }
    certificates.push({
      serial,
      spiffeId: c.spiffe_id,
      revokedAtMs: c.revoked_at ?? 0,
      expiresAtMs: c.expires_at ?? MAX_DATE_MS,
      reason: c.reason || "revoked",
    });
  });
  return {
    trustDomain: m.trust_domain,
    sequence: m.sequence,
    entries: m.spiffe_ids.map((spiffeId) => {
      const d = details.get(spiffeId);
      return {
        spiffeId,
        revokedAtMs: d?.revoked_at ?? 0,
        expiresAtMs: d?.expires_at ?? MAX_DATE_MS,
        reason: d?.reason || "revoked",
      };
    }),
    certificates,
  };
}
