/**
 * Flows stay on the replica their sidecar reported to; a client given several replicas merges
 * them, says which replicas did not answer, and fails only when none does.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlPlane, type ControlPlane } from "../../controlplane/control-plane.ts";
import { ApiError, VisibilityClient } from "../../cmd/sigil/visibility-client.ts";
import { freePorts } from "../support/etcd-cluster.ts";
import { demo, flow } from "../support/flows-fixtures.ts";

let dir: string;
let replicas: ControlPlane[] = [];
let dead: string;
const token = { token: randomBytes(32).toString("hex"), source: "test" };
const url = (cp: ControlPlane) => `http://127.0.0.1:${cp.httpPort}`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sg-flowrep-"));
  const tokenFile = join(dir, "http-token");
  await writeFile(tokenFile, token.token, { mode: 0o600 });
  replicas = await Promise.all(
    ["a", "b"].map((name) =>
      startControlPlane({
        dataDir: join(dir, name),
        grpc: { host: "127.0.0.1", port: 0 },
        xdsPlaintext: undefined,
        http: { host: "127.0.0.1", port: 0, tokenFile },
        serverNames: ["localhost"],
        log: pino({ level: "silent" }),
      }),
    ),
  );
  dead = `http://127.0.0.1:${(await freePorts(1))[0]}`;
  const t0 = Date.now() - 10_000;
  const [a, b] = replicas as [ControlPlane, ControlPlane];
  await a.flows.append(
    [1, 3, 5].map((i) => flow({ from: demo.web, to: demo.api, port: 8080, time: t0 + i })),
  );
  await b.flows.append([2, 4].map((i) => flow({ from: demo.api, to: demo.db, port: 5432, time: t0 + i })));
});

afterAll(async () => {
  for (const cp of replicas) await cp.close();
  await rm(dir, { recursive: true, force: true });
});

describe("flows across replicas", () => {
  it("merges every replica's flows in time order, within the limit, naming a replica that did not answer", async () => {
    const client = new VisibilityClient([...replicas.map(url), dead].join(","), token);
    const all = await client.flows();
    expect(all.map((f) => f.port)).toEqual([8080, 5432, 8080, 5432, 8080]);
    expect(client.unreachable).toEqual([dead]);
    const newest = await client.flows({ limit: 2 });
    expect(newest.map((f) => f.port)).toEqual([5432, 8080]);
  });

  it("sends other requests to a replica that answers", async () => {
    const client = new VisibilityClient([dead, ...replicas.map(url)].join(","), token);
    expect((await client.mode()).settings.mesh).toBe("enforce");
  });

  it("fails naming every replica when none answers", async () => {
    const client = new VisibilityClient(`${dead},${dead}`, token);
    await expect(client.flows()).rejects.toThrow(ApiError);
    await expect(client.flows()).rejects.toThrow(/cannot reach any control plane replica/);
  });
});
