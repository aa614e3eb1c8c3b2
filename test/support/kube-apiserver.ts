/**
 * A stand-in for the Kubernetes API server, speaking exactly the subset the pod attestor uses:
 * GET a pod, list a namespace's pods (with resourceVersion and `continue` paging), watch them from a
 * resourceVersion (newline-delimited WatchEvents, bookmarks ignored, an ERROR event with a 410
 * Status when the version was compacted away, as the real one answers), bearer-token auth, and
 * HTTPS with a certificate from a CA of its own (made with openssl). Loopback only.
 */
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Pod } from "kubernetes-types/core/v1.js";

const run = promisify(execFile);

export interface StandInApiServer {
  readonly url: string;
  /** PEM file of the CA the server's certificate chains to. */
  readonly caFile: string;
  /** File holding the bearer token the server accepts. */
  readonly tokenFile: string;
  /** Full lists served, by namespace. */
  readonly lists: Map<string, number>;
  createPod(namespace: string, name: string, serviceAccount: string, labels: Record<string, string>): Pod;
  setLabels(namespace: string, name: string, labels: Record<string, string>): void;
  deletePod(namespace: string, name: string): void;
  /** Forgets every event so far (as etcd compaction does) and ends the open watches. */
  compact(): void;
  /** Stops answering (connections refused) until `resume()`, on the same port. */
  suspend(): Promise<void>;
  resume(): Promise<void>;
  close(): Promise<void>;
}

interface Event {
  readonly rv: number;
  readonly type: "ADDED" | "MODIFIED" | "DELETED";
  readonly pod: Pod;
}

async function makeCerts(dir: string): Promise<{ caFile: string; key: string; cert: string }> {
  const openssl = (args: string) => run("openssl", args.split(" "), { cwd: dir });
  const ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
  await openssl(
    `req -x509 ${ec} -days 1 -subj /CN=stand-in-kubernetes-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign -keyout ca.key -out ca.crt`,
  );
  await openssl(`req ${ec} -subj /CN=kube-apiserver -keyout server.key -out server.csr`);
  await writeFile(
    join(dir, "ext.cnf"),
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
  );
  await openssl(
    "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out server.crt",
  );
  return {
    caFile: join(dir, "ca.crt"),
    key: await readFile(join(dir, "server.key"), "utf8"),
    cert: await readFile(join(dir, "server.crt"), "utf8"),
  };
}

function status(res: ServerResponse, code: number, message: string): void {
  res.writeHead(code, { "content-type": "application/json" });
  res.end(JSON.stringify({ kind: "Status", apiVersion: "v1", status: "Failure", message, code }));
}

export async function startStandInApiServer(): Promise<StandInApiServer> {
  const dir = await mkdtemp(join(tmpdir(), "sigil-kube-"));
  const { caFile, key, cert } = await makeCerts(dir);
  const token = randomUUID();
  const tokenFile = join(dir, "token");
  await writeFile(tokenFile, `${token}\n`);
  const pods = new Map<string, Pod>();
  let events: Event[] = [];
  let rv = 1;
  let compactedThrough = 0;
  const lists = new Map<string, number>();
  const watches = new Set<{ namespace: string; res: ServerResponse }>();
  const sockets = new Set<Socket>();

  const record = (type: Event["type"], pod: Pod) => {
    rv += 1;
    const stamped: Pod = { ...pod, metadata: { ...pod.metadata, resourceVersion: String(rv) } };
    if (type !== "DELETED") pods.set(`${pod.metadata?.namespace}/${pod.metadata?.name}`, stamped);
    events.push({ rv, type, pod: stamped });
    for (const w of watches)
      if (w.namespace === stamped.metadata?.namespace)
        w.res.write(`${JSON.stringify({ type, object: stamped })}\n`);
    return stamped;
  };

  const inNamespace = (ns: string) => [...pods.values()].filter((p) => p.metadata?.namespace === ns);

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    if (req.headers.authorization !== `Bearer ${token}`) return status(res, 401, "Unauthorized");
    const url = new URL(req.url ?? "/", "https://stand-in");
    const one = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(url.pathname);
    if (one) {
      const pod = pods.get(`${one[1]}/${one[2]}`);
      if (!pod) return status(res, 404, `pods "${one[2]}" not found`);
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify(pod));
    }
    const all = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(url.pathname);
    if (!all?.[1]) return status(res, 404, "the server could not find the requested resource");
    const ns = all[1];
    if (url.searchParams.get("watch") === "1") {
      const from = Number(url.searchParams.get("resourceVersion"));
      res.writeHead(200, { "content-type": "application/json" });
      if (from < compactedThrough) {
        const gone = {
          kind: "Status",
          status: "Failure",
          code: 410,
          reason: "Expired",
          message: "too old resource version",
        };
        return res.end(`${JSON.stringify({ type: "ERROR", object: gone })}\n`);
      }
      for (const e of events)
        if (e.rv > from && e.pod.metadata?.namespace === ns)
          res.write(`${JSON.stringify({ type: e.type, object: e.pod })}\n`);
      const watch = { namespace: ns, res };
      watches.add(watch);
      res.on("close", () => watches.delete(watch));
      return;
    }
    const limit = Number(url.searchParams.get("limit") ?? "0") || Infinity;
    const offset = Number(url.searchParams.get("continue") ?? "0");
    const items = inNamespace(ns);
    const page = items.slice(offset, offset + limit);
    const next = offset + page.length < items.length ? String(offset + page.length) : undefined;
    if (offset === 0) lists.set(ns, (lists.get(ns) ?? 0) + 1);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        kind: "PodList",
        apiVersion: "v1",
        metadata: { resourceVersion: String(rv), ...(next ? { continue: next } : {}) },
        items: page,
      }),
    );
  };

  const server = createServer({ key, cert }, handle);
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => {
        server.off("error", reject);
        resolve((server.address() as { port: number }).port);
      });
    });
  const port = await listen(0);
  const stop = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });

  const find = (namespace: string, name: string): Pod => {
    const pod = pods.get(`${namespace}/${name}`);
    if (!pod) throw new Error(`stand-in API server: no pod ${namespace}/${name}`);
    return pod;
  };
  return {
    url: `https://127.0.0.1:${port}`,
    caFile,
    tokenFile,
    lists,
    createPod: (namespace, name, serviceAccount, labels) =>
      record("ADDED", {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { namespace, name, uid: randomUUID(), labels },
        spec: { serviceAccountName: serviceAccount, containers: [{ name: "app", image: "app:1" }] },
        status: { phase: "Running" },
      }),
    setLabels: (namespace, name, labels) => {
      const pod = find(namespace, name);
      record("MODIFIED", { ...pod, metadata: { ...pod.metadata, labels } });
    },
    deletePod: (namespace, name) => {
      const pod = find(namespace, name);
      pods.delete(`${namespace}/${name}`);
      record("DELETED", pod);
    },
    compact: () => {
      // A revision past every one a client has seen: resuming from any of them is now 410 Gone.
      rv += 1;
      compactedThrough = rv;
      events = [];
      for (const w of watches) w.res.end();
      watches.clear();
    },
    suspend: stop,
    resume: async () => {
      await listen(port);
    },
    close: async () => {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
