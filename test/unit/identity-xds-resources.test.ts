import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority } from "../../controlplane/ca/authority.ts";
import { TrustBundleError, bundleToDocument, parseBundle } from "../../core/svid/bundle.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import {
  revocationListFromResource,
  revocationListSpec,
  trustBundleFromResource,
  trustBundleSpec,
} from "../../core/svid/xds-resources.ts";

let dir: string;
let ca: CertificateAuthority;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sigil-xdsres-"));
  ca = await CertificateAuthority.open({ dataDir: dir });
  await ca.rotate({ activateInSeconds: 0 });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** What the xDS client hands over after decoding: snake_case, 64-bit integers as strings. */
function asDecoded(spec: object): Record<string, unknown> {
  return JSON.parse(
    JSON.stringify(spec, (_k, v: unknown) => (typeof v === "number" ? String(v) : v)).replace(
      /"(revoked_at|expires_at)":"([^"]+)"/g,
      (_m, k: string, iso: string) => `"${k}":{"seconds":"${Math.floor(Date.parse(iso) / 1000)}","nanos":0}`,
    ),
  ) as Record<string, unknown>;
}

describe("identity xDS resources", () => {
  it("round-trips a trust bundle with both roots of a rotation", () => {
    const spec = trustBundleSpec(ca.bundle());
    expect(spec.x509_roots_pem).toHaveLength(2);
    const decoded = asDecoded(spec);
    decoded.sequence = String(spec.sequence);
    const bundle = trustBundleFromResource(decoded);
    expect(bundle.sequence).toBe(2);
    expect(bundle.x509Authorities.map((c) => c.fingerprint256)).toEqual(
      ca.bundle().x509Authorities.map((c) => c.fingerprint256),
    );
  });

  it("refuses a trust bundle resource whose parts disagree", () => {
    const spec = trustBundleSpec(ca.bundle());
    expect(() => trustBundleFromResource({ ...spec, sequence: "7" })).toThrow(/sequence 7 disagrees/);
    expect(() =>
      trustBundleFromResource({
        ...spec,
        x509_roots_pem: ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"],
      }),
    ).toThrow(/root that its bundle document does not hold/);
    expect(() => trustBundleFromResource({ ...spec, trust_domain: "" })).toThrow(/trust_domain/);
  });

  it("refuses bundle documents with a mismatched key, a missing kid or a private key", () => {
    const doc = bundleToDocument(ca.bundle());
    const [x509Key, , jwtKey] = doc.keys as Record<string, unknown>[];
    expect(() =>
      parseBundle("sigil.local", { ...doc, keys: [{ ...x509Key, x: (jwtKey as { x: string }).x }] }),
    ).toThrow(TrustBundleError);
    expect(() => parseBundle("sigil.local", { ...doc, keys: [{ ...jwtKey, kid: undefined }] })).toThrow(
      /needs a kid/,
    );
    expect(() => parseBundle("sigil.local", { ...doc, keys: [{ ...jwtKey, d: "secret" }] })).toThrow(
      /private key/,
    );
    expect(() => parseBundle("sigil.local", "{")).toThrow(/not JSON/);
  });

  it("round-trips a revocation list and the index refuses exactly the revoked IDs", () => {
    const list = {
      trustDomain: "sigil.local",
      sequence: 4,
      entries: [
        {
          spiffeId: "spiffe://sigil.local/workload/a",
          revokedAtMs: 1_700_000_000_000,
          expiresAtMs: 1_700_003_600_000,
          reason: "compromised",
        },
      ],
    };
    const back = revocationListFromResource(asDecoded(revocationListSpec(list)));
    expect(back).toEqual(list);
    const index = new RevocationIndex(back);
    expect(index.revoking("spiffe://sigil.local/workload/a")?.reason).toBe("compromised");
    expect(index.revoking("spiffe://sigil.local/workload/b")).toBeUndefined();
    expect(() =>
      revocationListFromResource({
        trust_domain: "sigil.local",
        sequence: "x",
        spiffe_ids: [],
        certificates: [],
      }),
    ).toThrow(/sequence/);
  });
});
