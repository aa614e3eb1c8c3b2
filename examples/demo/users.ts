/**
 * The identities the demo's processes run under: sidecars as the `sigil-proxy` system user (created
 * when missing, and kept: it is what `sigil init --proxy-uid sigil-proxy` expects on any host), the
 * applications and clients as `nobody`. Capture exempts only the sidecar's uid, so everything the
 * applications do goes through their sidecar.
 */
import { run, runOk, type RunAs } from "./exec.ts";

export const PROXY_USER = "sigil-proxy";
export const APP_USER = "nobody";

async function lookup(name: string): Promise<RunAs | null> {
  const result = await run(["getent", "passwd", name]);
  if (result.code !== 0) return null;
  const fields = result.stdout.trim().split(":");
  const uid = Number(fields[2]);
  const gid = Number(fields[3]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) {
    throw new Error(`getent passwd ${name} gave an unreadable entry: ${result.stdout.trim()}`);
  }
  return { uid, gid };
}

/** The sidecar user, created as a system user without a home or login shell if it does not exist. */
export async function ensureProxyUser(): Promise<RunAs> {
  const existing = await lookup(PROXY_USER);
  if (existing) return existing;
  const created = await run([
    "useradd",
    "--system",
    "--user-group",
    "--no-create-home",
    "--shell",
    "/usr/sbin/nologin",
    "--comment",
    "Sigil sidecar",
    PROXY_USER,
  ]);
  // Another run may have created it between the lookup and useradd: the second lookup settles it.
  const user = await lookup(PROXY_USER);
  if (user) return user;
  throw new Error(`cannot create the ${PROXY_USER} user: ${created.stderr.trim()}`);
}

export async function appUser(): Promise<RunAs> {
  const user = await lookup(APP_USER);
  if (user === null) throw new Error(`no "${APP_USER}" user on this host`);
  if (user.uid === 0) throw new Error(`"${APP_USER}" must not be root`);
  return user;
}

/** Makes `path` readable (and, for directories, enterable) by the sidecar user. */
export async function chownTo(path: string, owner: RunAs): Promise<void> {
  await runOk(["chown", "-R", `${owner.uid}:${owner.gid}`, path]);
}
