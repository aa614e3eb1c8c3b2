import { readFile } from "node:fs/promises";
import { availableParallelism, networkInterfaces } from "node:os";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { accessLogSchema } from "../authz/access-log.ts";
import { userAccessSchema } from "../user-access/config.ts";
import { controlPlaneProblem } from "./control-plane-targets.ts";

/**
 * The `sigil sidecar` settings: flags, or the same keys in camelCase in a YAML/JSON file
 * (`--config`), flags winning. Validated here so a bad value is refused with the key it came from.
 */

const port = z.number().int().min(0).max(65535);
const appPort = z.number().int().min(1).max(65535);

/** Explicit mode: `[listenHost:]listenPort=destHost:destPort` — one local listener per destination. */
const OUTBOUND_TARGET =
  /^(?:(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):)?(\d{1,5})=(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;
const unbracket = (h: string): string => (h.startsWith("[") ? h.slice(1, -1) : h);

export const outboundTarget = z.string().transform((value, ctx) => {
  const m = OUTBOUND_TARGET.exec(value);
  const listenPort = Number(m?.[2]);
  const destPort = Number(m?.[4]);
  if (!m || listenPort > 65535 || destPort < 1 || destPort > 65535) {
    ctx.addIssue({ code: "custom", message: `expected [host:]port=host:port, got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return {
    host: unbracket(m[1] ?? "127.0.0.1"),
    port: listenPort,
    destination: { host: unbracket(m[3] as string), port: destPort },
  };
});

/** `--advertise-address auto`: this host's (or pod's) own addresses, loopback and link-local left out. */
function interfaceAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((i) => i !== undefined && !i.internal && !i.address.toLowerCase().startsWith("fe80:"))
    .map((i) => (i as { address: string }).address);
}

export const agentOptionsSchema = z
  .object({
    /** One host:port, or several replicas comma-separated. */
    controlPlane: z.string().superRefine((v, ctx) => {
      const problem = controlPlaneProblem(v);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    }),
    controlPlaneCa: z.string().min(1),
    joinToken: z.string().min(1).optional(),
    joinTokenFile: z.string().min(1).optional(),
    /** A projected Kubernetes service-account token (Kubernetes attestation), read at every bootstrap. */
    serviceAccountTokenFile: z.string().min(1).optional(),
    trustDomain: z
      .string()
      .regex(/^[a-z0-9._-]+$/, { error: "not a trust domain" })
      .default("sigil.local"),
    workloadName: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/, { error: "not a workload name" }),
    /** The protected process: its /proc facts go into attestation. */
    workloadPid: z.number().int().positive().optional(),
    /**
     * The protected process by its attributes instead of a pid (a VM, where systemd starts and
     * restarts it): the user it runs as (uid or user name) and, optionally, its executable. Its
     * /proc facts are read afresh for each SVID request.
     */
    workloadUid: z
      .union([
        z.number().int().min(0).max(0xffffffff),
        z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?$/, { error: "not a uid or user name" }),
      ])
      .optional(),
    workloadExe: z.string().startsWith("/", { error: "must be an absolute path" }).optional(),
    /**
     * Where the current SVID and its key are kept (0600) so a restarted sidecar renews with them
     * instead of its single-use join token. Unset: kept in memory only.
     */
    identityDir: z.string().min(1).optional(),
    /** Node metadata file (cloud, image, vulnerabilities); a change renews the SVID. */
    metadataFile: z.string().min(1).optional(),
    appPort: z.array(appPort).default([]),
    /** Addresses the workload is reachable at, published in the peer directory. */
    advertiseAddress: z
      .array(z.string().min(1))
      .default([])
      .transform((list) => list.flatMap((a) => (a === "auto" ? interfaceAddresses() : [a]))),
    mode: z.enum(["captured", "explicit"]).default("captured"),
    inboundHost: z.string().min(1).default("0.0.0.0"),
    inboundPort: port.default(15006),
    outboundHost: z.string().min(1).default("127.0.0.1"),
    outboundPort: port.default(15001),
    /** The admin listener's address: loopback unless a cluster's Prometheus must reach it. */
    adminHost: z.string().min(1).default("127.0.0.1"),
    adminPort: port.default(15000),
    /** Explicit mode: `[host:]port=host:port` listeners standing for one destination each. */
    outbound: z.array(outboundTarget).default([]),
    /** Explicit mode: the application port plaintext (non-mesh) clients reach through the inbound listener. */
    plaintextAppPort: appPort.optional(),
    /** A peer's inbound port when the peer directory names none (the mesh-wide default). */
    peerInboundPort: appPort.default(15006),
    fastPathPorts: z.array(appPort).default([]),
    /** App ports served as HTTP only, never carried as opaque TCP (sidecar config `inbound.httpPorts`). */
    httpPorts: z.array(appPort).default([]),
    /**
     * Ports served to people: OpenID Connect sign-in and bearer tokens (sidecar config
     * `inbound.userAccess`, `sidecar/user-access/`). `--user-access-ports` sets its `ports`.
     */
    userAccess: userAccessSchema.optional(),
    /** The capture configuration `sigil init` applied: fast-path rules then join its transaction. */
    captureConfig: z.string().min(1).optional(),
    /** Fast path: let new connections through when the enforcer is gone (default: fail closed). */
    fastPathFailOpen: z.boolean().default(false),
    svidTtlSeconds: z.number().int().positive().optional(),
    drainTimeoutMs: z.number().int().min(0).default(15_000),
    /**
     * Data-path processes: 1 = the data path runs in this process; N > 1 = N workers share the
     * listeners while this process keeps identity, xDS, flows and admin; "auto" = one per CPU.
     */
    workers: z
      .union([z.literal("auto"), z.number().int().min(1).max(256)])
      .default(1)
      .transform((v) => (v === "auto" ? availableParallelism() : v)),
    /** Serve the SPIFFE Workload API on this Unix socket (`sidecar/workload-api/`). */
    workloadApiSocket: z.string().startsWith("/", { error: "must be an absolute path" }).optional(),
    /** The workload's uids: only processes running as one of them are handed its identity. */
    workloadApiUid: z.array(z.number().int().min(0).max(0xfffffffe)).default([]),
    logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
    /** Access-log lines per port (sidecar config `accessLog`; `--access-log 8080=all:0.1,9090=off`). */
    accessLog: accessLogSchema,
  })
  .strict()
  .superRefine((o, ctx) => {
    const proofs = [o.joinToken, o.joinTokenFile, o.serviceAccountTokenFile].filter((p) => p !== undefined);
    if (proofs.length !== 1)
      ctx.addIssue({
        code: "custom",
        message: "give exactly one of joinToken / joinTokenFile / serviceAccountTokenFile",
        path: ["joinToken"],
      });
    if (o.workloadPid !== undefined && (o.workloadUid !== undefined || o.workloadExe !== undefined))
      ctx.addIssue({
        code: "custom",
        message: "name the workload by its pid or by its attributes (workloadUid, workloadExe), not both",
        path: ["workloadPid"],
      });
    if (o.workloadExe !== undefined && o.workloadUid === undefined)
      ctx.addIssue({
        code: "custom",
        message: "workloadExe needs workloadUid: the workload is the process of that user running it",
        path: ["workloadExe"],
      });
    if (o.workloadApiSocket !== undefined && o.workloadApiUid.length === 0)
      ctx.addIssue({
        code: "custom",
        message: "the workload API needs the workload's uids: only their processes get its identity",
        path: ["workloadApiUid"],
      });
    if (o.workloadApiSocket === undefined && o.workloadApiUid.length > 0)
      ctx.addIssue({
        code: "custom",
        message: "workloadApiUid names who may use the workload API; give workloadApiSocket too",
        path: ["workloadApiSocket"],
      });
    const ownUid = process.getuid?.();
    if (ownUid !== undefined && o.workloadApiUid.includes(ownUid))
      ctx.addIssue({
        code: "custom",
        message: `uid ${ownUid} is the sidecar's own: the sidecar is never the workload (run the application as another user)`,
        path: ["workloadApiUid"],
      });
    if (o.mode === "captured" && o.outbound.length > 0)
      ctx.addIssue({ code: "custom", message: "outbound targets are for explicit mode", path: ["outbound"] });
    // The fast path hands a port's bytes to the kernel after the handshake: nothing would be parsed
    // as HTTP, and an x-forwarded-client-cert a caller wrote would reach the application.
    for (const p of (o.userAccess?.ports ?? []).filter((h) => o.fastPathPorts.includes(h)))
      ctx.addIssue({
        code: "custom",
        message: `port ${p} is a user-access port (every request needs a signed-in user) and a fast-path port (never parsed): choose one`,
        path: ["userAccess", "ports"],
      });
    for (const p of o.httpPorts.filter((h) => o.fastPathPorts.includes(h)))
      ctx.addIssue({
        code: "custom",
        message: `port ${p} is in both httpPorts (served as HTTP only) and fastPathPorts (carried by the kernel, never parsed): choose one`,
        path: ["httpPorts"],
      });
  });

export type AgentOptionsInput = z.input<typeof agentOptionsSchema>;
export type AgentOptions = z.output<typeof agentOptionsSchema>;

export class AgentOptionsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AgentOptionsError";
  }
}

/** Validates merged settings; the error lists every bad key and why. */
export function parseAgentOptions(input: unknown, source = "sidecar options"): AgentOptions {
  const r = agentOptionsSchema.safeParse(input);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`);
    throw new AgentOptionsError(`${source}: ${lines.join("; ")}`);
  }
  return r.data;
}

/** Reads a `--config` file (YAML or JSON, camelCase keys) into a plain object. */
export async function readAgentConfigFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new AgentOptionsError(`cannot read ${path}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (err) {
    throw new AgentOptionsError(`${path}: ${(err as Error).message}`);
  }
  if (value === null || value === undefined) return {};
  if (typeof value !== "object" || Array.isArray(value))
    throw new AgentOptionsError(`${path}: expected a mapping of sidecar settings`);
  return value as Record<string, unknown>;
}
