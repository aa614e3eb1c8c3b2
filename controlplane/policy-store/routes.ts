import type { IncomingMessage } from "node:http";
import type { Router } from "../http/router.ts";
import { HttpError, sendJson } from "../http/router.ts";
import type { PolicySnapshot } from "./store.ts";
import type { PolicyWriter } from "./writer.ts";

/**
 * Writing policy through the API, whichever replica receives it:
 *  PUT    /api/policy/files/:name   body: the YAML   → 200 {revision} once this replica compiled it
 *  DELETE /api/policy/files/:name
 */
export function registerPolicyWriteRoutes(
  router: Router,
  deps: { writer: PolicyWriter; current: () => PolicySnapshot; changed: () => Promise<unknown> },
): void {
  router.add("PUT", "/api/policy/files/:name", async (req, res, params) => {
    const name = params.name ?? "";
    await deps.writer.apply(name, await readText(req));
    await deps.changed();
    const snapshot = deps.current();
    const errors = snapshot.errors.filter((e) => e.file.endsWith(name));
    if (errors.length > 0) throw new HttpError(409, errors.map((e) => e.message).join("\n"));
    sendJson(res, 200, { name, revision: snapshot.revision });
  });
  router.add("DELETE", "/api/policy/files/:name", async (_req, res, params) => {
    const name = params.name ?? "";
    if (!(await deps.writer.remove(name))) throw new HttpError(404, `no policy file ${name}`);
    await deps.changed();
    sendJson(res, 200, { name, revision: deps.current().revision });
  });
}

async function readText(req: IncomingMessage, limit = 1 << 20): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new HttpError(413, `policy file larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}
