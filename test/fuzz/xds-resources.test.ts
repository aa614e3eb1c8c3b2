/**
 * The xDS resources a sidecar reads from the control plane (trust bundle, revocation list, peer
 * directory, policy set): any bytes under any of these type URLs are decoded by the registry and
 * read by the sidecar's validator to a value or to an Error the client NACKs with; a validator never
 * stumbles (TypeError, ReferenceError) on what it was given. The corpus holds each resource as
 * JSON, encoded here, so it stays readable in review.
 */
import { describe, expect, it } from "vitest";
import { revocationListFromResource, trustBundleFromResource } from "../../core/svid/xds-resources.ts";
import { decodePeerDirectory } from "../../sidecar/agent/peer-directory.ts";
import { decodePolicySet } from "../../core/policy/codec.ts";
import { defaultTypeRegistry } from "../../xds/registry.ts";
import * as T from "../../xds/type-urls.ts";
import { corpus, fuzz, mutatedBytes } from "./fuzz.ts";

const registry = defaultTypeRegistry();
const READERS: readonly (readonly [string, (message: unknown) => unknown])[] = [
  [T.TRUST_BUNDLE, trustBundleFromResource],
  [T.REVOCATION_LIST, revocationListFromResource],
  [T.PEER_DIRECTORY, (m) => decodePeerDirectory(m, { trustDomain: "sigil.local", sidecarPort: 15006 })],
  [T.POLICY_SET, decodePolicySet],
];

/** One input: a byte choosing the type URL, then the resource bytes. */
function encodeSeed(json: Buffer): Buffer {
  const { typeUrl, message } = JSON.parse(json.toString("utf8")) as { typeUrl: string; message: object };
  const index = READERS.findIndex(([url]) => url === typeUrl);
  if (index < 0) throw new Error(`corpus entry of unknown type ${typeUrl}`);
  const type = registry.typeOf(typeUrl);
  return Buffer.concat([Buffer.from([index]), type.encode(type.fromObject(message)).finish()]);
}

function read(input: Buffer): unknown {
  const [typeUrl, reader] = READERS[(input[0] ?? 0) % READERS.length] as (typeof READERS)[number];
  let message: unknown;
  try {
    message = registry.decode(typeUrl, input.subarray(1)).message;
  } catch {
    return undefined; // not a protobuf of that type: NACKed before any validator runs
  }
  return reader(message);
}

describe("fuzz: xDS resources a sidecar reads", () => {
  const seeds = corpus("xds-resources").map(encodeSeed);

  it("reads the genuine resources (the control that makes the property meaningful)", () => {
    for (const seed of seeds) expect(read(seed)).toBeDefined();
  });

  it("reads any bytes to a resource or to an error naming the problem", async () => {
    const { runs } = await fuzz("xds-resources", seeds, mutatedBytes(seeds), (input) => {
      try {
        read(input);
      } catch (err) {
        expect(err).toBeInstanceOf(Error);
        expect(err).not.toBeInstanceOf(TypeError);
        expect(err).not.toBeInstanceOf(ReferenceError);
        expect((err as Error).message).not.toBe("");
      }
    });
    expect(runs).toBeGreaterThan(seeds.length);
  });
});
