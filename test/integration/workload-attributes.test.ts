/**
 * A VM's workload named by its attributes (`--workload-uid`, `--workload-exe`) instead of a pid:
 * real processes under their own uids, among decoys that share the user or the executable but not
 * both; the sidecar reads the right one's /proc facts, waits for it when it starts after the sidecar
 * (as systemd orders them), and the control plane issues the identity with those facts as labels.
 */
import type { ChildProcess } from "node:child_process";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, copyFile, mkdtemp, readFile, realpath, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAgent } from "../../sidecar/agent/agent.ts";
import type { Agent } from "../../sidecar/agent/agent.ts";
import { parseAgentOptions } from "../../sidecar/agent/options.ts";
import { collectProcessFacts } from "../../sidecar/identity/workload-facts.ts";
import { findWorkloadProcess } from "../../sidecar/identity/workload-process.ts";
import { loopbackAgentInput, startTestControlPlane } from "../support/control-plane.ts";
import type { TestControlPlane } from "../support/control-plane.ts";

/** Uids no other suite runs processes as, so /proc holds only this suite's processes for them. */
const UID = 47_213;
const OTHER_UID = 47_214;

let dir: string;
/** Copies of `sleep`: the workload's executable, and another one its user also runs. */
let appExe: string;
let otherExe: string;
const children: ChildProcess[] = [];

function run(exe: string, uid: number): ChildProcess {
  const child = spawn(exe, ["600"], { uid, gid: uid, stdio: "ignore" });
  children.push(child);
  return child;
}

const sha256 = async (file: string): Promise<string> =>
  createHash("sha256")
    .update(await readFile(file))
    .digest("hex");

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sigil-workload-attrs-"));
  await chmod(dir, 0o755);
  appExe = join(dir, "vm-app");
  otherExe = join(dir, "other-app");
  await copyFile(await realpath("/usr/bin/sleep"), appExe);
  await copyFile(await realpath("/usr/bin/sleep"), otherExe);
  // A different binary: its hash must not be the workload's.
  await writeFile(otherExe, Buffer.concat([await readFile(otherExe), Buffer.from("\n")]));
  await chmod(appExe, 0o755);
  await chmod(otherExe, 0o755);
  // Decoys: the workload's user running another executable; another user running its executable.
  run(otherExe, UID);
  run(appExe, OTHER_UID);
});

afterAll(async () => {
  for (const child of children) child.kill("SIGKILL");
  await rm(dir, { recursive: true, force: true });
});

describe("finding the workload by its attributes", () => {
  it("waits for the process to start, then reads the facts of the one with both attributes", async () => {
    let waitingFor = "";
    let waitBegan: () => void = () => undefined;
    const waiting = new Promise<void>((resolve) => {
      waitBegan = resolve;
    });
    const finding = findWorkloadProcess(
      { uid: UID, exe: appExe },
      {
        waitMs: 60_000,
        pollMs: 20,
        onWaiting: (what) => {
          waitingFor = what;
          waitBegan();
        },
      },
    );
    // Nothing matched the first look (only the decoys run): it waits rather than fails.
    await waiting;
    expect(waitingFor).toBe(`uid ${UID} running ${appExe}`);
    const app = run(appExe, UID);
    const facts = await finding;
    expect(facts).toEqual(await collectProcessFacts(app.pid as number));
    expect(facts).toMatchObject({ uid: UID, gid: UID, exePath: appExe, exeSha256: await sha256(appExe) });
    app.kill("SIGKILL");
  });

  it("takes a user name from the passwd file", async () => {
    const app = run(appExe, UID);
    const passwd = join(dir, "passwd");
    await writeFile(
      passwd,
      `root:x:0:0:root:/root:/bin/sh\nvmapp:x:${UID}:${UID}::/srv/app:/usr/sbin/nologin\n`,
    );
    const facts = await findWorkloadProcess({ uid: "vmapp", exe: appExe }, { waitMs: 0, passwdPath: passwd });
    expect(facts).toMatchObject({ uid: UID, user: "vmapp", exePath: appExe });
    await expect(
      findWorkloadProcess({ uid: "nobody-here", exe: appExe }, { waitMs: 0, passwdPath: passwd }),
    ).rejects.toThrow(`no user named "nobody-here" in ${passwd}`);
    app.kill("SIGKILL");
  });

  it("refuses when none runs, and when the user's processes disagree on what the workload is", async () => {
    const missing = join(dir, "not-running");
    await copyFile(appExe, missing);
    await expect(findWorkloadProcess({ uid: UID, exe: missing }, { waitMs: 0 })).rejects.toThrow(
      `no process of uid ${UID} running ${missing} is running`,
    );
    const app = run(appExe, UID);
    // The user alone names both its processes, and they run different executables.
    await expect(findWorkloadProcess({ uid: UID }, { waitMs: 0 })).rejects.toThrow(
      /processes of uid 47213 differ .* which one is the workload is ambiguous/,
    );
    app.kill("SIGKILL");
  });
});

describe("a sidecar whose workload is named by its attributes", () => {
  let controlPlane: TestControlPlane;
  let agent: Agent | undefined;

  beforeAll(async () => {
    controlPlane = await startTestControlPlane("sigil-workload-attrs-cp-", {});
  });
  afterAll(async () => {
    await agent?.close();
    await controlPlane?.close();
  });

  it("gets an identity carrying the process's uid, executable and its hash as attested labels", async () => {
    const { token } = await controlPlane.cp.identity.tokens.create({
      name: "vm-app",
      labels: { app: "vm-app" },
      ttlSeconds: 600,
    });
    const starting = startAgent(
      parseAgentOptions(
        loopbackAgentInput(controlPlane, token, "vm-app", { workloadUid: UID, workloadExe: appExe }),
      ),
      { logger: pino({ level: "silent" }), startTimeoutMs: 30_000 },
    );
    // The application starts after its sidecar, as app.service does after sigil-sidecar.service.
    const app = run(appExe, UID);
    agent = await starting;
    const labels = agent.rotation.current().labels;
    const proc = Object.fromEntries(
      labels.filter((l) => l.provenance === "proc").map((l) => [l.key, l.value]),
    );
    expect(proc).toEqual({
      "proc.uid": String(UID),
      "proc.gid": String(UID),
      "proc.user": String(UID),
      "proc.exe": appExe,
      "proc.sha256": await sha256(appExe),
    });
    expect(labels.find((l) => l.key === "app")).toMatchObject({ value: "vm-app", provenance: "join-token" });
    expect(agent.spiffeId).toBe("spiffe://sigil.local/workload/vm-app");
    app.kill("SIGKILL");
  });
});
