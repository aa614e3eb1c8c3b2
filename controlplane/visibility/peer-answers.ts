import { z } from "zod";
import type { FlowRecord } from "../../core/flow.ts";
import type { EdgeReport } from "../flows/edges.ts";

/**
 * What another replica answers when this one merges its flows: checked before use, since a record
 * or count taken on trust from a replica of another release would end up in the map and in a
 * simulation's verdicts.
 */

const labels = z.record(z.string(), z.string());
const user = z.strictObject({ issuer: z.string(), sub: z.string() });
const endpoint = z.strictObject({
  spiffeId: z.string().optional(),
  labels,
  address: z.string().optional(),
  user: user.optional(),
});
const count = z.number().int().min(0);
const counts = z.record(z.string(), count);

const record = z.strictObject({
  id: z.string().min(1),
  time: z.number().int(),
  reporter: z.strictObject({ spiffeId: z.string(), kind: z.enum(["sidecar", "fastpath"]) }),
  direction: z.enum(["ingress", "egress"]),
  source: endpoint,
  destination: endpoint,
  port: z.number().int().min(0).max(65535),
  protocol: z.enum(["tcp", "http", "grpc"]),
  http: z
    .strictObject({ method: z.string(), path: z.string(), status: z.number().int().optional() })
    .optional(),
  verdict: z.enum(["allow", "deny"]),
  wouldDeny: z.boolean(),
  policy: z.string().nullable(),
  reason: z.string(),
  encrypted: z.boolean(),
  bytesSent: count,
  bytesReceived: count,
  durationMs: count,
});

const tally = z.strictObject({
  allowed: count,
  denied: count,
  wouldDeny: count,
  encrypted: count,
  plaintext: count,
  otherPaths: count,
  protocols: counts,
  methods: counts,
  paths: counts,
});
const roles = <T extends z.ZodTypeAny>(t: T) =>
  z.strictObject({
    callee: t,
    callerStopped: t,
    callerAfterCallee: t,
    callerWouldDeny: t,
    callerPassed: t,
  });
const last = z.strictObject({
  time: z.number(),
  verdict: z.enum(["allow", "deny"]),
  wouldDeny: z.boolean(),
  policy: z.string().nullable(),
  reason: z.string(),
});
const edgeEnd = z.strictObject({
  id: z.string(),
  spiffeId: z.string().optional(),
  address: z.string().optional(),
  user: user.optional(),
  labels,
});
const edgeReport = z.strictObject({
  id: z.string(),
  source: edgeEnd,
  destination: edgeEnd,
  port: z.number().int().min(0).max(65535),
  lastSeen: z.number(),
  tallies: roles(tally),
  last: roles(last.optional()).partial(),
});

export const flowsAnswer: z.ZodType<{ flows: FlowRecord[] }> = z.object({ flows: z.array(record) });
export const edgesAnswer: z.ZodType<{ reports: EdgeReport[] }> = z.object({ reports: z.array(edgeReport) });
