/**
 * The one entry point to @peculiar/x509 in Sigil: it installs the Reflect metadata API the library
 * needs and selects Node's WebCrypto as its crypto provider before anything else uses it.
 */
import "reflect-metadata";
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
