import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { readFile, stat } from "node:fs/promises";

/**
 * Envelope encryption of the secrets the control plane keeps in a shared store (the CA's signing
 * keys). Each value is sealed with AES-256-GCM under a 256-bit key the operator gives every replica
 * out of band (a file or an environment variable), never stored beside the data: reading etcd, its
 * snapshots or its backups yields ciphertext only. The store key is bound in as additional data, so
 * a sealed value copied to another key does not open.
 */

export class EnvelopeError extends Error {}

const FORMAT = "sigil-aes256gcm-v1";
const KEY_BYTES = 32;

export interface EnvelopeKeySource {
  /** A file holding the key as 64 hex digits or 44 base64 characters; mode must be 0600 or tighter. */
  readonly file?: string;
  /** The environment variable to read the key from when no file is given. */
  readonly env?: string;
}

export const ENVELOPE_KEY_ENV = "SIGIL_ENVELOPE_KEY";

/** Loads the envelope key, with the file or variable at fault named in every error. */
export async function loadEnvelopeKey(source: EnvelopeKeySource, environment = process.env): Promise<Buffer> {
  if (source.file) {
    let text: string;
    try {
      const info = await stat(source.file);
      if ((info.mode & 0o077) !== 0)
        throw new EnvelopeError(
          `envelope key file ${source.file} has mode ${(info.mode & 0o777).toString(8)}; it must be 0600`,
        );
      text = await readFile(source.file, "utf8");
    } catch (err) {
      if (err instanceof EnvelopeError) throw err;
      throw new EnvelopeError(`cannot read envelope key file ${source.file}: ${(err as Error).message}`);
    }
    return parseKey(text, `envelope key file ${source.file}`);
  }
  const name = source.env ?? ENVELOPE_KEY_ENV;
  const value = environment[name];
  if (!value)
    throw new EnvelopeError(
      `no envelope key: give --envelope-key-file or set ${name} (32 random bytes as hex or base64, e.g. "openssl rand -hex 32")`,
    );
  return parseKey(value, `environment variable ${name}`);
}

function parseKey(text: string, what: string): Buffer {
  const trimmed = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(trimmed)
    ? Buffer.from(trimmed, "hex")
    : Buffer.from(trimmed, "base64");
  if (key.length !== KEY_BYTES || (!/^[0-9a-fA-F]{64}$/.test(trimmed) && key.toString("base64") !== trimmed))
    throw new EnvelopeError(`${what} must hold a 256-bit key as 64 hex digits or 44 base64 characters`);
  return key;
}

/** Seals `plaintext` for storage under `storeKey`. */
export function seal(key: Buffer, storeKey: string, plaintext: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(Buffer.from(storeKey));
  const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
  return [
    FORMAT,
    iv.toString("base64"),
    cipher.getAuthTag().toString("base64"),
    body.toString("base64"),
  ].join(":");
}

/** Opens a value `seal` produced for `storeKey`; a wrong key or a tampered value is an error naming the key. */
export function open(key: Buffer, storeKey: string, sealed: string): string {
  const [format, iv, tag, body] = sealed.split(":");
  if (format !== FORMAT || !iv || !tag || body === undefined)
    throw new EnvelopeError(`${storeKey} is not a sealed value (expected ${FORMAT})`);
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, Buffer.from(iv, "base64"));
    decipher.setAAD(Buffer.from(storeKey));
    decipher.setAuthTag(Buffer.from(tag, "base64"));
    return Buffer.concat([decipher.update(Buffer.from(body, "base64")), decipher.final()]).toString("utf8");
  } catch {
    throw new EnvelopeError(
      `${storeKey} does not open with this envelope key: a different key than the one it was sealed with, or the value was altered`,
    );
  }
}
