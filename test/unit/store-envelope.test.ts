import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EnvelopeError, loadEnvelopeKey, open, seal } from "../../controlplane/store/envelope.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sg-envelope-"));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe("envelope sealing of secrets stored in etcd", () => {
  const key = randomBytes(32);
  const pem = "-----BEGIN PRIVATE KEY-----\nMIG...\n-----END PRIVATE KEY-----\n";

  it("round-trips, and the sealed form holds no plaintext", () => {
    const sealed = seal(key, "ca/generations/g1/ca.key", pem);
    expect(sealed).not.toContain("PRIVATE KEY");
    expect(open(key, "ca/generations/g1/ca.key", sealed)).toBe(pem);
  });

  it("refuses another key, a value moved to another store key, and a tampered value", () => {
    const sealed = seal(key, "a", pem);
    expect(() => open(randomBytes(32), "a", sealed)).toThrow(/does not open with this envelope key/);
    expect(() => open(key, "b", sealed)).toThrow(EnvelopeError);
    const parts = sealed.split(":");
    const body = Buffer.from(parts[3] as string, "base64");
    body[0] = (body[0] as number) ^ 1;
    expect(() => open(key, "a", [...parts.slice(0, 3), body.toString("base64")].join(":"))).toThrow(
      EnvelopeError,
    );
    expect(() => open(key, "a", "plain text")).toThrow(/not a sealed value/);
  });

  it("loads a key from a 0600 file (hex) or the environment (base64), refusing loose modes and bad lengths", async () => {
    const file = join(dir, "key");
    await writeFile(file, key.toString("hex") + "\n", { mode: 0o600 });
    expect((await loadEnvelopeKey({ file })).equals(key)).toBe(true);
    expect((await loadEnvelopeKey({}, { SIGIL_ENVELOPE_KEY: key.toString("base64") })).equals(key)).toBe(
      true,
    );
    const loose = join(dir, "loose");
    await writeFile(loose, key.toString("hex"), { mode: 0o644 });
    await expect(loadEnvelopeKey({ file: loose })).rejects.toThrow(/mode 644; it must be 0600/);
    await expect(loadEnvelopeKey({}, { SIGIL_ENVELOPE_KEY: "abcd" })).rejects.toThrow(/256-bit key/);
    await expect(loadEnvelopeKey({}, {})).rejects.toThrow(/no envelope key/);
    await expect(loadEnvelopeKey({ file: join(dir, "missing") })).rejects.toThrow(
      /cannot read envelope key file/,
    );
  });
});
