/**
 * What capture should do, as one validated value. Everything that renders or applies rules takes a
 * CaptureConfig produced by `parseCaptureConfig`, never raw input.
 */
import { isIPv4, isIPv6 } from "node:net";
import { z } from "zod";

export type IpFamily = 4 | 6;
export type CaptureMode = "redirect" | "tproxy";
export type Backend = "auto" | "nft" | "legacy";

/** A packet or connection mark with the bits it owns. */
export interface Mark {
  value: number;
  mask: number;
}

export interface CaptureConfig {
  mode: CaptureMode;
  /** Port the sidecar's inbound listener accepts captured connections on. */
  inboundPort: number;
  /** Port the sidecar's outbound listener accepts captured connections on. */
  outboundPort: number;
  /** The sidecar's uid: its own connections are not captured. */
  proxyUid: number;
  /** When set, only sockets with both proxyUid and this gid are exempt (a process sharing just the group is captured). */
  proxyGid: number | null;
  /** Inbound destination ports to capture: "*" for all TCP ports, or a list (empty list: no inbound capture). */
  inboundPorts: "*" | number[];
  excludeInboundPorts: number[];
  /** Capture outbound TCP at all. */
  outbound: boolean;
  excludeOutboundPorts: number[];
  excludeOutboundCidrs: string[];
  /** When non-empty, only outbound connections from these uids are captured (VM-local process mode). */
  captureUids: number[];
  families: IpFamily[];
  backend: Backend;
  tproxy: { mark: Mark; routeTable: number };
  /**
   * Mark bits the L4 fast path's verdicts use. A packet or connection with any of them set was
   * decided by the fast path and is never redirected to the proxy. Null when no fast path runs.
   */
  fastPathMarkMask: number | null;
}

export class CaptureConfigError extends Error {
  constructor(
    readonly source: string,
    readonly issues: string[],
  ) {
    super(`invalid capture configuration (${source}):\n  ${issues.join("\n  ")}`);
    this.name = "CaptureConfigError";
  }
}

const port = z.number().int().min(1).max(65535);
const uid = z.number().int().min(0).max(0xfffffffe);

function cidrProblem(text: string): string | null {
  const slash = text.indexOf("/");
  const address = slash === -1 ? text : text.slice(0, slash);
  const lengthText = slash === -1 ? null : text.slice(slash + 1);
  const max = isIPv4(address) ? 32 : isIPv6(address) ? 128 : null;
  if (max === null) return `"${text}" is not an IPv4 or IPv6 address or CIDR`;
  if (lengthText !== null && (!/^\d{1,3}$/.test(lengthText) || Number(lengthText) > max)) {
    return `"${text}" has a prefix length outside 0..${max}`;
  }
  return null;
}

const cidr = z.string().superRefine((text, ctx) => {
  const problem = cidrProblem(text);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

const mark = z
  .object({ value: z.number().int().min(1).max(0xffffffff), mask: z.number().int().min(1).max(0xffffffff) })
  .strict()
  .refine((m) => (m.value & ~m.mask) === 0, { message: "mark value has bits outside its mask" });

/** The input shape (what flags, environment and the config file provide, all optional). */
export const captureConfigSchema = z
  .object({
    mode: z.enum(["redirect", "tproxy"]).default("redirect"),
    inboundPort: port.default(15006),
    outboundPort: port.default(15001),
    proxyUid: uid,
    proxyGid: uid.nullable().default(null),
    allowRootProxy: z.boolean().default(false),
    inboundPorts: z.union([z.literal("*"), z.array(port)]).default("*"),
    excludeInboundPorts: z.array(port).default([]),
    outbound: z.boolean().default(true),
    excludeOutboundPorts: z.array(port).default([]),
    excludeOutboundCidrs: z.array(cidr).default([]),
    captureUids: z.array(uid).default([]),
    families: z
      .array(z.union([z.literal(4), z.literal(6)]))
      .min(1)
      .default([4, 6]),
    backend: z.enum(["auto", "nft", "legacy"]).default("auto"),
    tproxy: z
      .object({
        mark: mark.default({ value: 0x100, mask: 0x100 }),
        routeTable: z.number().int().min(1).max(0xfffffffe).default(133),
      })
      .strict()
      .default({ mark: { value: 0x100, mask: 0x100 }, routeTable: 133 }),
    fastPathMarkMask: z.number().int().min(1).max(0xffffffff).nullable().default(null),
  })
  .strict();

export type CaptureConfigInput = z.input<typeof captureConfigSchema>;

const RESERVED_TABLES = new Set([0, 253, 254, 255]);

/** Cross-field rules that keep capture closed: each returns a reason or nothing. */
function semanticProblems(c: z.output<typeof captureConfigSchema>): string[] {
  const problems: string[] = [];
  if (c.proxyUid === 0 && !c.allowRootProxy) {
    problems.push(
      "proxyUid: 0 would exempt every root process from capture; run the sidecar as its own user (or set allowRootProxy)",
    );
  }
  if (!c.outbound && c.inboundPorts !== "*" && c.inboundPorts.length === 0) {
    problems.push("nothing to capture: outbound is off and inboundPorts is empty");
  }
  if (c.inboundPort === c.outboundPort) problems.push("inboundPort and outboundPort must differ");
  if (c.captureUids.includes(c.proxyUid))
    problems.push("captureUids must not include the sidecar's own proxyUid");
  if (c.excludeOutboundPorts.includes(c.outboundPort)) {
    problems.push(`excludeOutboundPorts: ${c.outboundPort} is the sidecar's outbound port`);
  }
  if (RESERVED_TABLES.has(c.tproxy.routeTable)) {
    problems.push(`tproxy.routeTable: ${c.tproxy.routeTable} is a reserved routing table`);
  }
  if (c.fastPathMarkMask !== null && (c.fastPathMarkMask & c.tproxy.mark.mask) !== 0 && c.mode === "tproxy") {
    problems.push("fastPathMarkMask and tproxy.mark must use different bits");
  }
  for (const [name, list] of [
    ["excludeInboundPorts", c.excludeInboundPorts],
    ["excludeOutboundPorts", c.excludeOutboundPorts],
    ["excludeOutboundCidrs", c.excludeOutboundCidrs],
    ["captureUids", c.captureUids],
  ] as const) {
    const seen = new Set<string | number>();
    for (const item of list) {
      if (seen.has(item)) problems.push(`${name}: ${item} is listed twice`);
      seen.add(item);
    }
  }
  return problems;
}

function formatPath(path: PropertyKey[]): string {
  return path.length === 0 ? "(config)" : path.map(String).join(".");
}

/** Validates input from any source; `source` names it in errors (a file path, "flags", "environment"). */
export function parseCaptureConfig(input: unknown, source: string): CaptureConfig {
  const parsed = captureConfigSchema.safeParse(input);
  if (!parsed.success) {
    throw new CaptureConfigError(
      source,
      parsed.error.issues.map((issue) => `${formatPath(issue.path)}: ${issue.message}`),
    );
  }
  const problems = semanticProblems(parsed.data);
  if (problems.length > 0) throw new CaptureConfigError(source, problems);
  const { allowRootProxy: _allowRootProxy, ...config } = parsed.data;
  return {
    ...config,
    families: [...new Set(config.families)].sort() as IpFamily[],
  };
}

export function cidrFamily(text: string): IpFamily {
  const address = text.split("/")[0] ?? "";
  return isIPv4(address) ? 4 : 6;
}
