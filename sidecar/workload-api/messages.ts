import { createPrivateKey } from "node:crypto";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import type { WorkloadCredentials } from "../identity/rotation.ts";

// The Workload API's response messages built from what the sidecar holds, as the SPIFFE Workload
// API asks for them: DER everywhere (no PEM), every message the full current state.

export interface X509SvidMessage {
  spiffeId: string;
  x509Svid: Buffer;
  x509SvidKey: Buffer;
  bundle: Buffer;
  hint: string;
}

export interface X509SvidResponse {
  svids: X509SvidMessage[];
  crl: Buffer[];
  federatedBundles: Record<string, Buffer>;
}

export interface X509BundlesResponse {
  crl: Buffer[];
  bundles: Record<string, Buffer>;
}

export interface JwtBundlesResponse {
  bundles: Record<string, Buffer>;
}

/** `spiffe://<td>`: bundles are keyed by the trust domain's SPIFFE ID. */
export function trustDomainId(bundle: TrustBundle): string {
  return `spiffe://${bundle.trustDomain}`;
}

/** The trust domain's CA certificates, DER, one after the other. */
export function x509BundleDer(bundle: TrustBundle): Buffer {
  return Buffer.concat(bundle.x509Authorities.map((cert) => cert.raw));
}

/**
 * The JWT-SVID keys as a plain JWK Set (RFC 7517): `kid` and `alg` on each, and no `use`, since
 * SPIFFE's `jwt-svid` use is no JWK value and generic JWKS readers skip keys of another use.
 */
export function jwtBundleJson(bundle: TrustBundle): Buffer {
  const keys = bundle.jwtAuthorities.map((a) => ({ ...a.jwk, kid: a.kid, alg: "ES256" }));
  return Buffer.from(JSON.stringify({ keys }));
}

/** The workload's one X.509-SVID: leaf-first chain, its key as unencrypted PKCS#8, its trust domain's bundle. */
export function x509SvidResponse(credentials: WorkloadCredentials): X509SvidResponse {
  const key = createPrivateKey(credentials.privateKeyPem).export({ format: "der", type: "pkcs8" });
  return {
    svids: [
      {
        spiffeId: credentials.spiffeId,
        x509Svid: Buffer.concat([...credentials.certChain]),
        x509SvidKey: key,
        bundle: x509BundleDer(credentials.bundle),
        hint: "",
      },
    ],
    crl: [],
    federatedBundles: {},
  };
}

export function x509BundlesResponse(bundle: TrustBundle): X509BundlesResponse {
  return { crl: [], bundles: { [trustDomainId(bundle)]: x509BundleDer(bundle) } };
}

export function jwtBundlesResponse(bundle: TrustBundle): JwtBundlesResponse {
  return { bundles: { [trustDomainId(bundle)]: jwtBundleJson(bundle) } };
}

type StructValue =
  | { nullValue: "NULL_VALUE" }
  | { numberValue: number }
  | { stringValue: string }
  | { boolValue: boolean }
  | { structValue: { fields: Record<string, StructValue> } }
  | { listValue: { values: StructValue[] } };

function structValue(value: unknown): StructValue {
  if (value === null || value === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof value === "number") return { numberValue: value };
  if (typeof value === "string") return { stringValue: value };
  if (typeof value === "boolean") return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(structValue) } };
  if (typeof value === "object") return { structValue: toStruct(value as Record<string, unknown>) };
  return { stringValue: String(value) };
}

/** A JSON object (a JWT's claims) as `google.protobuf.Struct` in proto-loader's object form. */
export function toStruct(object: Readonly<Record<string, unknown>>): { fields: Record<string, StructValue> } {
  return { fields: Object.fromEntries(Object.entries(object).map(([k, v]) => [k, structValue(v)])) };
}
