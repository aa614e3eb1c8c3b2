import type { IncomingMessage } from "node:http";
import { z } from "zod";
import type { FlowRecord } from "../../core/flow.ts";
import { formatPolicyError } from "../../core/policy/index.ts";
import type { Router } from "../http/router.ts";
import { HttpError, readJson, sendJson } from "../http/router.ts";
import { LOCAL_PARAM, mergedBody, type Merged } from "../visibility/replica-flows.ts";
import { simulate } from "../visibility/simulate.ts";
import { parseSince } from "../visibility/time.ts";
import { describeFiles, diffPolicies, proposedSet } from "./files.ts";
import type { PolicyText } from "./sources.ts";
import type { PolicySnapshot } from "./store.ts";
import type { PolicyWriter } from "./writer.ts";

export interface PolicyFileRouteDeps {
  readonly writer: PolicyWriter;
  readonly current: () => PolicySnapshot;
  /** Every policy file as written now (the watched directory, or etcd). */
  readonly texts: () => Promise<PolicyText[]>;
  /** Rescans the files; resolves once the store compiled what was written. */
  readonly changed: () => Promise<unknown>;
  /**
   * Recorded flows since a time (all retained without one), for `diff`'s verdict changes: every
   * live replica's unless `local`, with the replicas that did not answer.
   */
  readonly records: (since: number | undefined, local: boolean) => Promise<Merged<readonly FlowRecord[]>>;
  readonly now?: () => number;
}

/**
 * The policy files through the API, whichever replica receives it. The watched directory and these
 * routes are one set of files: the latest write of a name wins.
 *  GET    /api/policy/files           → { revision, files: [{ name, yaml, policies, errors }] }
 *  GET    /api/policy/files/:name     → one of them, as written (404 when there is none)
 *  PUT    /api/policy/files/:name     body: the YAML → 200 {revision} once this replica compiled it;
 *                                     400 when it does not validate, 409 when a policy name it
 *                                     defines is defined in another file (nothing is written)
 *  DELETE /api/policy/files/:name
 *  POST   /api/policy/diff            { files: [{ name, yaml }], since? } → policies added, changed,
 *                                     removed, and the recorded flows whose verdict would change
 */
export function registerPolicyFileRoutes(router: Router, deps: PolicyFileRouteDeps): void {
  // One write at a time, so two writes cannot each pass the duplicate check against the other.
  let writing: Promise<unknown> = Promise.resolve();
  const serially = <T>(work: () => Promise<T>): Promise<T> => {
    const next = writing.then(work, work);
    writing = next.catch(() => undefined);
    return next;
  };

  router.add("GET", "/api/policy/files", async (_req, res) => {
    const files = describeFiles(await deps.texts(), deps.current());
    sendJson(res, 200, { revision: deps.current().revision, files });
  });
  router.add("GET", "/api/policy/files/:name", async (_req, res, params) => {
    const file = describeFiles(await deps.texts(), deps.current()).find((f) => f.name === params.name);
    if (!file) throw new HttpError(404, `no policy file ${params.name}`);
    sendJson(res, 200, file);
  });
  router.add("PUT", "/api/policy/files/:name", async (req, res, params) => {
    const name = params.name ?? "";
    const yaml = await readText(req);
    await serially(async () => {
      const set = proposedSet(await deps.texts(), deps.current(), [{ name, yaml }]);
      if (!set.ok) {
        const duplicate = set.errors.some(
          (e) => e.path === "metadata.name" && /already used/.test(e.message),
        );
        throw new HttpError(duplicate ? 409 : 400, set.errors.map(formatPolicyError).join("\n"));
      }
      await deps.writer.apply(name, yaml);
      await deps.changed();
    });
    const snapshot = deps.current();
    const errors = snapshot.errors.filter((e) => e.file.endsWith(name));
    if (errors.length > 0) throw new HttpError(409, errors.map(formatPolicyError).join("\n"));
    sendJson(res, 200, { name, revision: snapshot.revision });
  });
  router.add("DELETE", "/api/policy/files/:name", async (_req, res, params) => {
    const name = params.name ?? "";
    await serially(async () => {
      if (!(await deps.writer.remove(name))) throw new HttpError(404, `no policy file ${name}`);
      await deps.changed();
    });
    sendJson(res, 200, { name, revision: deps.current().revision });
  });
  router.add("POST", "/api/policy/diff", async (req, res) => {
    const body = diffRequest.safeParse(await readJson(req, 4 << 20));
    if (!body.success) throw new HttpError(400, `${body.error.issues[0]?.path.join(".") || "body"}: invalid`);
    const snapshot = deps.current();
    const set = proposedSet(await deps.texts(), snapshot, body.data.files);
    if (!set.ok) {
      sendJson(res, 400, {
        error: "the files would not be accepted",
        errors: set.errors.map(formatPolicyError),
      });
      return;
    }
    let since: number | undefined;
    try {
      since =
        body.data.since === undefined ? undefined : parseSince(body.data.since, (deps.now ?? Date.now)());
    } catch (err) {
      throw new HttpError(400, (err as Error).message);
    }
    const local = new URL(req.url ?? "/", "http://localhost").searchParams.get(LOCAL_PARAM) === "1";
    const records = await deps.records(since, local);
    const simulation = simulate(records.value, {
      current: [],
      proposed: set.documents.map((d) => d.document),
      replace: true,
    });
    sendJson(
      res,
      200,
      mergedBody({ ...diffPolicies(snapshot.documents, set.documents), simulation }, records.unanswered),
    );
  });
}

const diffRequest = z.strictObject({
  files: z
    .array(z.strictObject({ name: z.string().min(1).max(256), yaml: z.string() }))
    .min(1)
    .max(1000),
  since: z.string().optional(),
});

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
