import type * as grpc from "@grpc/grpc-js";
import { z } from "zod";
import type { FlowRecord } from "./flow.ts";
import { labelKeyProblem, labelValueProblem } from "./labels.ts";
import { loadSigilService } from "./proto/load-service.ts";

/**
 * The wire form of flow reporting (core/proto/sigil/v1/flows.proto): the gRPC service definition
 * shared by the control plane's handlers and the sidecar's reporter, and the conversions between
 * `FlowRecord` and the protobuf message. Everything that arrives is validated here, field by field.
 */

const flowService = loadSigilService("sigil/v1/flows.proto", "FlowService");

/** `sigil.v1.FlowService`: add to a grpc.Server with `flowServiceHandlers(...)`. */
export const FlowServiceDefinition: grpc.ServiceDefinition = flowService.definition;

/** Client constructor for `sigil.v1.FlowService`. */
export const FlowServiceClient: grpc.ServiceClientConstructor = flowService.Client;

export interface WireEndpoint {
  spiffeId: string;
  labels: Record<string, string>;
  address: string;
  user: { issuer: string; sub: string } | null;
}

export interface WireFlow {
  id: string;
  timeMs: number;
  reporterSpiffeId: string;
  reporterKind: string;
  direction: string;
  source: WireEndpoint | null;
  destination: WireEndpoint | null;
  port: number;
  protocol: string;
  http: { method: string; path: string; status: number } | null;
  verdict: string;
  wouldDeny: boolean;
  policy: string;
  reason: string;
  encrypted: boolean;
  bytesSent: number;
  bytesReceived: number;
  durationMs: number;
}

export interface WireBatch {
  session: string;
  sequence: number;
  flows: WireFlow[];
  droppedTotal: number;
}

export interface WireAck {
  sequence: number;
  accepted: number;
  duplicates: number;
  rejected: number;
  errors: string[];
}

export function toWireFlow(r: FlowRecord): WireFlow {
  return {
    id: r.id,
    timeMs: r.time,
    reporterSpiffeId: r.reporter.spiffeId,
    reporterKind: r.reporter.kind,
    direction: r.direction,
    source: toWireEndpoint(r.source),
    destination: toWireEndpoint(r.destination),
    port: r.port,
    protocol: r.protocol,
    http: r.http ? { method: r.http.method, path: r.http.path, status: r.http.status ?? 0 } : null,
    verdict: r.verdict,
    wouldDeny: r.wouldDeny,
    policy: r.policy ?? "",
    reason: r.reason,
    encrypted: r.encrypted,
    bytesSent: r.bytesSent,
    bytesReceived: r.bytesReceived,
    durationMs: r.durationMs,
  };
}

function toWireEndpoint(e: FlowRecord["source"]): WireEndpoint {
  return {
    spiffeId: e.spiffeId ?? "",
    labels: { ...e.labels },
    address: e.address ?? "",
    user: e.user === undefined ? null : { issuer: e.user.issuer, sub: e.user.sub },
  };
}

const MAX_TEXT = 2048;
const MAX_LABELS = 64;

const labelsSchema = z
  .record(z.string(), z.string())
  .refine((l) => Object.keys(l).length <= MAX_LABELS, `more than ${MAX_LABELS} labels`)
  .superRefine((labels, ctx) => {
    for (const [k, v] of Object.entries(labels)) {
      const problem = labelKeyProblem(k) ?? labelValueProblem(k, v);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    }
  });

const endpointSchema = z.object({
  spiffeId: z
    .string()
    .max(MAX_TEXT)
    .refine((s) => s === "" || s.startsWith("spiffe://"), "not a SPIFFE ID"),
  labels: labelsSchema,
  address: z.string().max(128),
  user: z.object({ issuer: z.string().min(1).max(MAX_TEXT), sub: z.string().min(1).max(MAX_TEXT) }).nullish(),
});

const wireFlowSchema = z.object({
  id: z.string().min(1).max(128),
  timeMs: z.number().int().positive(),
  reporterSpiffeId: z.string().startsWith("spiffe://").max(MAX_TEXT),
  reporterKind: z.enum(["sidecar", "fastpath"]),
  direction: z.enum(["ingress", "egress"]),
  source: endpointSchema,
  destination: endpointSchema,
  port: z.number().int().min(0).max(65535),
  protocol: z.enum(["tcp", "http", "grpc"]),
  http: z
    .object({
      method: z.string().min(1).max(32),
      path: z.string().min(1).max(MAX_TEXT),
      status: z.number().int().min(0).max(999),
    })
    .nullable(),
  verdict: z.enum(["allow", "deny"]),
  wouldDeny: z.boolean(),
  policy: z.string().max(512),
  reason: z.string().max(MAX_TEXT),
  encrypted: z.boolean(),
  bytesSent: z.number().int().min(0),
  bytesReceived: z.number().int().min(0),
  durationMs: z.number().int().min(0),
});

export class InvalidFlowError extends Error {
  constructor(
    readonly flowId: string,
    readonly reason: string,
  ) {
    super(`flow ${flowId || "(no id)"}: ${reason}`);
  }
}

/** Converts one received message into a FlowRecord; throws InvalidFlowError naming field and reason. */
export function fromWireFlow(raw: unknown): FlowRecord {
  const parsed = wireFlowSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue ? issue.path.join(".") : "";
    const id = typeof (raw as { id?: unknown })?.id === "string" ? (raw as { id: string }).id : "";
    throw new InvalidFlowError(id, `${field || "message"}: ${issue?.message ?? "invalid"}`);
  }
  const w = parsed.data;
  const record: FlowRecord = {
    id: w.id,
    time: w.timeMs,
    reporter: { spiffeId: w.reporterSpiffeId, kind: w.reporterKind },
    direction: w.direction,
    source: fromWireEndpoint(w.source),
    destination: fromWireEndpoint(w.destination),
    port: w.port,
    protocol: w.protocol,
    verdict: w.verdict,
    wouldDeny: w.wouldDeny,
    policy: w.policy === "" ? null : w.policy,
    reason: w.reason,
    encrypted: w.encrypted,
    bytesSent: w.bytesSent,
    bytesReceived: w.bytesReceived,
    durationMs: w.durationMs,
  };
  if (w.http) {
    const http = { method: w.http.method, path: w.http.path };
    return { ...record, http: w.http.status === 0 ? http : { ...http, status: w.http.status } };
  }
  return record;
}

function fromWireEndpoint(e: z.infer<typeof endpointSchema>): FlowRecord["source"] {
  return {
    labels: e.labels,
    ...(e.spiffeId ? { spiffeId: e.spiffeId } : {}),
    ...(e.address ? { address: e.address } : {}),
    ...(e.user ? { user: { issuer: e.user.issuer, sub: e.user.sub } } : {}),
  };
}
