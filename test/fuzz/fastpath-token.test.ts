/**
 * The fast-path handshake token, the one structure the enforcer reads from any host on the network:
 * any bytes decode to a token or a "malformed" refusal; a genuine token changed in any way, or
 * moved to any other connection (client or server address, either port), never verifies. The
 * verifier's clock is fixed, so a refusal is never "expired" because the machine was slow.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import { TokenError, decodeToken, encodeToken, newNonce } from "../../sidecar/fastpath/token.ts";
import type { FourTuple } from "../../sidecar/fastpath/token.ts";
import { TokenVerifier } from "../../sidecar/fastpath/verifier.ts";
import { TRUST_DOMAIN, TestPki } from "../e2e/fastpath-support/pki.ts";
import { corpus, fuzz, mutatedBytes } from "./fuzz.ts";

const TUPLE: FourTuple = {
  clientAddress: "198.18.0.1",
  clientPort: 40000,
  serverAddress: "198.18.0.2",
  serverPort: 7000,
};
const PAIR_KEY = Buffer.alloc(32, 7);
const KEY_ID = Buffer.alloc(32, 9);

function refusal(run: () => unknown): TokenError {
  try {
    run();
  } catch (err) {
    if (err instanceof TokenError) return err;
    throw err;
  }
  throw new Error("accepted");
}

describe("fuzz: fast-path token decoding and verification", () => {
  let pki: TestPki;
  let genuine: Buffer[];
  let verifier: TokenVerifier;

  beforeAll(async () => {
    pki = await TestPki.create();
    const web = await pki.identity("web", { app: "web" });
    // The verifier's clock stops here: every verdict below is the same on a slow machine.
    const now = Date.now();
    const fields = { type: "syn" as const, timestampMs: now, tuple: TUPLE };
    genuine = [
      encodeToken(web, { ...fields, nonce: newNonce() }),
      encodeToken(web, { ...fields, nonce: newNonce(), mac: { key: PAIR_KEY, keyId: KEY_ID } }),
    ];
    verifier = new TokenVerifier(
      { bundle: pki.ca.bundle(), revocations: RevocationIndex.empty(TRUST_DOMAIN) },
      {
        windowMs: 10_000,
        identityCacheEntries: 64,
        // Replays are the native table's concern; here every nonce is new.
        replays: { rememberNonce: () => "ok" },
        now: () => now,
      },
    );
  });

  afterAll(async () => {
    await pki?.destroy();
  });

  const verify = (bytes: Buffer, tuple: FourTuple): unknown =>
    verifier.verify(bytes, "syn", tuple, undefined, (keyId) => (keyId.equals(KEY_ID) ? PAIR_KEY : null));

  it("decodes any bytes to a token or a malformed refusal", async () => {
    const seeds = corpus("fastpath-token");
    await fuzz("fastpath-token", seeds, mutatedBytes(seeds), (input) => {
      try {
        decodeToken(input);
      } catch (err) {
        expect(err).toBeInstanceOf(TokenError);
        expect((err as TokenError).reason).toBe("malformed");
      }
    });
  });

  it("verifies the genuine tokens, and no other bytes", async () => {
    for (const token of genuine) expect(verify(token, TUPLE)).toBeDefined();
    await fuzz("fastpath-token", [], mutatedBytes(genuine), (input) => {
      if (genuine.some((g) => g.equals(input))) return;
      refusal(() => verify(input, TUPLE));
    });
  });

  it("refuses a genuine token moved to another address or port (every combination)", () => {
    const moves: FourTuple[] = [];
    for (const clientAddress of [TUPLE.clientAddress, "198.18.0.3", "198.19.255.254"])
      for (const clientPort of [TUPLE.clientPort, 40001, 1])
        for (const serverAddress of [TUPLE.serverAddress, "198.18.0.4", "198.18.0.1"])
          for (const serverPort of [TUPLE.serverPort, 7001, 8080])
            moves.push({ clientAddress, clientPort, serverAddress, serverPort });
    for (const token of genuine)
      for (const tuple of moves.slice(1))
        expect(refusal(() => verify(token, tuple)).reason, JSON.stringify(tuple)).toBe("bad-signature");
  });
});
