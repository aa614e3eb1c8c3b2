import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority } from "../../controlplane/ca/authority.ts";
import { TrustBundleError, bundleToDocument, parseBundle } from "../../core/svid/bundle.ts";
import { RevocationIndex, canonicalSerial } from "../../core/svid/revocation.ts";
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
    expect(back).toEqual({ ...list, certificates: [] });
    const index = new RevocationIndex(back);
    expect(index.revoking({ spiffeId: "spiffe://sigil.local/workload/a", serial: "01" })?.reason).toBe(
      "compromised",
    );
    expect(index.revoking({ spiffeId: "spiffe://sigil.local/workload/b", serial: "01" })).toBeUndefined();
    expect(() =>
      revocationListFromResource({
        trust_domain: "sigil.local",
        sequence: "x",
        spiffe_ids: [],
        certificates: [],
      }),
    ).toThrow(/sequence/);
  });

  it("round-trips revoked certificates and the index refuses exactly that serial, in any spelling", () => {
    const list = {
      trustDomain: "sigil.local",
      sequence: 5,
      entries: [],
      certificates: [
        {
          serial: canonicalSerial("0A:1B:2C"),
          spiffeId: "spiffe://sigil.local/workload/a",
          revokedAtMs: 1_700_000_000_000,
          expiresAtMs: 1_700_003_600_000,
          reason: "key leaked",
        },
      ],
    };
    expect(list.certificates[0]?.serial).toBe("a1b2c");
    const back = revocationListFromResource(asDecoded(revocationListSpec(list)));
    expect(back).toEqual(list);
    const index = new RevocationIndex(back);
    const a = "spiffe://sigil.local/workload/a";
    // Node prints serials in upper case, with a leading zero byte kept.
    for (const serial of ["0A1B2C", "0a1b2c", "a1b2c"])
      expect(index.revoking({ spiffeId: a, serial })?.reason).toBe("key leaked");
    // Another certificate of the same workload is not revoked; nor is the workload.
    expect(index.revoking({ spiffeId: a, serial: "0a1b2d" })).toBeUndefined();
    expect(index.revokingWorkload(a)).toBeUndefined();
    expect(() =>
      revocationListFromResource({
        trust_domain: "sigil.local",
        sequence: "6",
        spiffe_ids: [],
        certificates: [{ serial: "zz", spiffe_id: a, reason: "x" }],
      }),
    ).toThrow(/certificates\.0\.serial: serial "zz" is not hexadecimal/);
  });

  it("reads serials as an operator pastes them and refuses what is not one", () => {
    expect(canonicalSerial("  0x00FF  ")).toBe("ff");
    expect(canonicalSerial("00:00")).toBe("0");
    expect(() => canonicalSerial("")).toThrow(/empty/);
    expect(() => canonicalSerial("12g4")).toThrow(/not hexadecimal/);
    expect(() => canonicalSerial("1".repeat(41))).toThrow(/longer than 20 bytes/);
    // A positive serial whose first byte has its high bit set is printed with a 00 byte before it.
    expect(canonicalSerial(`00${"f".repeat(40)}`)).toBe("f".repeat(40));
  });
});
