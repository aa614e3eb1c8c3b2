/**
 * The primary ↔ worker relay messages: state survives the trip through the IPC channel's
 * serialization (v8 structured clone, as node:cluster's "advanced" mode sends it) and comes out
 * equal, and malformed messages are refused with the field named instead of half-applied.
 */
import { deserialize, serialize } from "node:v8";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import { TrustBundleError } from "../../core/svid/bundle.ts";
import type { PolicySnapshot, TlsCredentials } from "../../sidecar/inputs/sources.ts";
import {
  credentialsFromWire,
  credentialsToWire,
  parseToWorker,
  policyFromWire,
  policyToWire,
  RelayMessageError,
} from "../../sidecar/worker-processes/relay-protocol.ts";
import type { WireCredentials } from "../../sidecar/worker-processes/relay-protocol.ts";
import { apiIngressPolicy } from "../support/api-ingress.ts";
import { MeshPki, policySet, TRUST_DOMAIN } from "../support/sidecar-mesh.ts";

const POLICY = `${apiIngressPolicy({ methods: ["GET"], paths: ["/api/*/orders"] })}---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: api-mtls }
spec:
  selector: { matchLabels: { app: api } }
  mode: STRICT
  portLevel: { "9090": PERMISSIVE }
`;

const overIpc = <T>(value: T): T => deserialize(serialize(value)) as T;

let pki: MeshPki;
let creds: TlsCredentials;

beforeAll(async () => {
  pki = await MeshPki.create();
  creds = await pki.credentials("api", { app: "api" });
});

afterAll(async () => {
  await pki?.close();
});

describe("worker relay protocol", () => {
  it("carries credentials, trust bundle included, through the channel unchanged", () => {
    const wire = overIpc(credentialsToWire(creds));
    const parsed = parseToWorker({ t: "credentials", credentials: wire });
    expect(parsed.t).toBe("credentials");
    const back = credentialsFromWire(wire);
    expect(back.privateKeyPem).toBe(creds.privateKeyPem);
    expect(back.certChainPem).toBe(creds.certChainPem);
    expect(back.bundle.trustDomain).toBe(TRUST_DOMAIN);
    expect(back.bundle.x509Authorities.map((c) => c.fingerprint256)).toEqual(
      creds.bundle.x509Authorities.map((c) => c.fingerprint256),
    );
  });

  it("carries a policy snapshot that recompiles to the same documents, mode and revocations", () => {
    const snapshot: PolicySnapshot = {
      policies: policySet(POLICY),
      mode: "observe",
      revocations: new RevocationIndex({
        trustDomain: TRUST_DOMAIN,
        sequence: 7,
        entries: [{ spiffeId: pki.spiffeId("evil"), revokedAtMs: 1, expiresAtMs: 2, reason: "compromised" }],
      }),
    };
    const wire = overIpc(policyToWire(snapshot));
    expect(parseToWorker({ t: "policy", policy: wire }).t).toBe("policy");
    const back = policyFromWire(wire);
    expect(back.policies.documents).toEqual(snapshot.policies.documents);
    expect(back.mode).toBe("observe");
    expect(back.revocations.revokingWorkload(pki.spiffeId("evil"))?.reason).toBe("compromised");
    expect(back.revocations.list.sequence).toBe(7);
  });

  it("refuses malformed messages and names the field", () => {
    const wire = credentialsToWire(creds);
    const refused = (message: unknown): string => {
      try {
        parseToWorker(message);
      } catch (err) {
        expect(err).toBeInstanceOf(RelayMessageError);
        return (err as Error).message;
      }
      throw new Error("accepted");
    };
    expect(refused({ t: "reload" })).toMatch(/^worker relay message t:/);
    expect(refused(null)).toMatch(/worker relay message/);
    expect(refused({ t: "credentials", credentials: { ...wire, privateKeyPem: "not a key" } })).toMatch(
      /credentials\.privateKeyPem: expected a PEM PRIVATE KEY/,
    );
    expect(refused({ t: "policy", policy: { ...policyToWire(snapshotOf()), mode: "permissive" } })).toMatch(
      /policy\.mode/,
    );
    expect(
      refused({
        t: "peers",
        peers: [
          [
            { address: "198.18.0.1", port: 0 },
            {
              identity: { spiffeId: pki.spiffeId("db"), trustDomain: TRUST_DOMAIN, labels: {} },
              sidecar: { host: "198.18.0.1", port: 15006 },
              mtls: true,
            },
          ],
        ],
      }),
    ).toMatch(/peers\.0\.0\.port/);
    expect(refused({ t: "init", init: { config: {}, logLevel: "info", loopGuard: null } })).toMatch(
      /init\.credentials/,
    );
  });

  it("refuses credentials whose trust bundle does not parse", () => {
    const bad: WireCredentials = { ...credentialsToWire(creds), bundle: { keys: "none" } };
    expect(() => credentialsFromWire(bad)).toThrow(TrustBundleError);
  });
});

function snapshotOf(): PolicySnapshot {
  return { policies: policySet(POLICY), mode: "enforce", revocations: RevocationIndex.empty(TRUST_DOMAIN) };
}
