import { readFileSync } from "node:fs";

/** Sigil's release, as package.json names it: what `sigil version` and `GET /api/version` report. */
export const SIGIL_VERSION: string = (
  JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }
).version;
