import type { IncomingMessage } from "node:http";
import type { Logger } from "pino";
import { z } from "zod";
import type { RevokedCertificate } from "../../core/svid/revocation.ts";
import { parseSpiffeId } from "../../core/identity.ts";
import { bundleToDocument } from "../../core/svid/bundle.ts";
import { HttpError, readJson, sendJson } from "../http/router.ts";
import type { RouteHandler, Router } from "../http/router.ts";
import { fingerprint } from "../ca/authority.ts";
import { CaStateConflictError } from "../ca/storage.ts";
import type { IdentityPlane } from "./plane.ts";
import { RegistryError } from "./registry.ts";

const labelsSchema = z.record(z.string(), z.string());
const tokenSchema = z.object({
  name: z.string(),
  labels: labelsSchema.default({}),
  addresses: z.array(z.string()).max(64).default([]),
  ttlSeconds: z.number().int().positive().default(3600),
});
const revokeSchema = z.object({
  spiffeId: z.string(),
  reason: z.string().max(256).default("revoked by operator"),
});
const revokeCertificateSchema = z.object({
  serial: z.string().max(128),
  reason: z.string().max(256).default("revoked by operator"),
});
const labelsRequestSchema = z.object({ spiffeId: z.string(), labels: labelsSchema });
const labelChangeSchema = z
  .object({
    spiffeId: z.string(),
    labels: labelsSchema.optional(),
    set: labelsSchema.optional(),
    remove: z.array(z.string()).max(256).optional(),
    overwrite: z.boolean().default(false),
  })
  .strict()
  .superRefine((body, ctx) => {
    const partial = body.set !== undefined || body.remove !== undefined;
    if (body.labels !== undefined && partial)
      ctx.addIssue({
        code: "custom",
        path: ["labels"],
        message: "replaces every operator label and cannot be combined with set or remove",
      });
    if (body.labels === undefined && !partial)
      ctx.addIssue({ code: "custom", message: "give labels (the complete set) or set/remove (a change)" });
  });
const rotateSchema = z.object({ activateInSeconds: z.number().int().min(0).max(86_400).default(30) });

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new HttpError(400, `${issue?.path.join(".") || "body"}: ${issue?.message}`);
  }
  return parsed.data;
}

function workloadId(plane: IdentityPlane, spiffeId: string): string {
  const id = parseSpiffeId(spiffeId);
  if (!id || id.trustDomain !== plane.ca.trustDomain) {
    throw new HttpError(400, `"${spiffeId}" is not a SPIFFE ID in trust domain ${plane.ca.trustDomain}`);
  }
  return spiffeId;
}

/** Who asked, for the audit lines: the address the request came from. */
function caller(req: IncomingMessage): { remote: string | undefined } {
  return { remote: req.socket.remoteAddress };
}

function revokedCertificateJson(c: RevokedCertificate) {
  return {
    serial: c.serial,
    // Empty when the serial is not a registered workload's current certificate.
    spiffeId: c.spiffeId || null,
    revokedAt: new Date(c.revokedAtMs).toISOString(),
    expiresAt: new Date(c.expiresAtMs).toISOString(),
    reason: c.reason,
  };
}

async function registryCall<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof RegistryError) throw new HttpError(err.status, err.message);
    throw err;
  }
}

/**
 * The identity API on the control plane's HTTP router. SPIFFE IDs contain slashes, so they travel
 * in JSON bodies rather than path segments.
 *  POST /api/identity/tokens            {name, labels, addresses?, ttlSeconds} → {token, name, spiffeId, expiresAt}
 *       (also POST /api/tokens)
 *  GET  /api/identity/workloads         → {workloads: [...]}
 *  POST /api/identity/workloads/revoke  {spiffeId, reason}
 *  POST /api/identity/certificates/revoke {serial, reason}   (one certificate; its workload may attest again)
 *  GET  /api/identity/certificates/revoked → {sequence, certificates: [...]}
 *  POST /api/identity/workloads/labels  {spiffeId, labels}   (replaces the operator labels; triggers re-issuance)
 *                                       {spiffeId, set, remove, overwrite}   (changes some of them)
 *  POST /api/identity/workloads/scan    {spiffeId, labels}   (a scanner's vuln.* and image findings)
 *  GET  /api/identity/revocations       → RevocationList
 *  GET  /api/identity/bundle            → SPIFFE bundle document
 *  GET  /api/identity/ca                → CA generations
 *  POST /api/identity/ca/rotate         {activateInSeconds}  (409 when another replica changed the CA at once)
 */
export function registerIdentityRoutes(router: Router, deps: { plane: IdentityPlane; log: Logger }): void {
  const { plane, log } = deps;
  const createToken: RouteHandler = async (req, res) => {
    const body = parse(tokenSchema, await readJson(req));
    let created;
    try {
      created = await plane.tokens.create(body);
    } catch (err) {
      // A store that cannot take the token (etcd without quorum) says so with its own status.
      if (err instanceof HttpError) throw err;
      throw new HttpError(400, (err as Error).message);
    }
    sendJson(res, 201, {
      token: created.token,
      name: created.name,
      spiffeId: `spiffe://${plane.ca.trustDomain}/workload/${created.name}`,
      labels: created.labels,
      addresses: created.addresses,
      expiresAt: created.expiresAt.toISOString(),
    });
  };
  router.add("POST", "/api/identity/tokens", createToken);
  // The short form sidecar tooling and the contract between control plane and sidecars name.
  router.add("POST", "/api/tokens", createToken);
  router.add("GET", "/api/identity/workloads", (_req, res) => {
    sendJson(res, 200, {
      workloads: plane.registry.list().map((w) => ({
        spiffeId: w.spiffeId,
        attestor: w.attestor,
        attestedAddresses: w.attestedAddresses,
        labels: w.issuedLabels,
        staticLabels: w.staticLabels,
        scannerLabels: w.scannerLabels,
        serial: w.serial,
        notAfter: new Date(w.notAfterMs).toISOString(),
        lastIssuedAt: new Date(w.lastIssuedMs).toISOString(),
        firstSeenAt: new Date(w.firstSeenMs).toISOString(),
        revoked: w.revoked ? { at: new Date(w.revoked.atMs).toISOString(), reason: w.revoked.reason } : null,
      })),
    });
  });
  router.add("POST", "/api/identity/workloads/revoke", async (req, res) => {
    const body = parse(revokeSchema, await readJson(req));
    const entry = await registryCall(() =>
      plane.registry.revoke(workloadId(plane, body.spiffeId), body.reason, plane.ca.maxLeafTtlSeconds),
    );
    const sequence = plane.registry.revocationList().sequence;
    log.info(
      { audit: "workload-revoked", spiffeId: entry.spiffeId, reason: entry.reason, sequence, ...caller(req) },
      "workload revoked",
    );
    sendJson(res, 200, {
      spiffeId: entry.spiffeId,
      revokedAt: new Date(entry.revokedAtMs).toISOString(),
      reason: entry.reason,
      sequence,
    });
  });
  router.add("POST", "/api/identity/certificates/revoke", async (req, res) => {
    const body = parse(revokeCertificateSchema, await readJson(req));
    const entry = await registryCall(() =>
      plane.registry.revokeCertificate(body.serial, body.reason, plane.ca.maxLeafTtlSeconds),
    );
    const sequence = plane.registry.revocationList().sequence;
    log.info(
      {
        audit: "certificate-revoked",
        serial: entry.serial,
        spiffeId: entry.spiffeId || null,
        reason: entry.reason,
        expiresAt: new Date(entry.expiresAtMs).toISOString(),
        sequence,
        ...caller(req),
      },
      "certificate revoked",
    );
    sendJson(res, 200, { ...revokedCertificateJson(entry), sequence });
  });
  router.add("GET", "/api/identity/certificates/revoked", (_req, res) => {
    const list = plane.registry.revocationList();
    sendJson(res, 200, {
      sequence: list.sequence,
      certificates: (list.certificates ?? []).map(revokedCertificateJson),
    });
  });
  router.add("POST", "/api/identity/workloads/labels", async (req, res) => {
    const body = parse(labelChangeSchema, await readJson(req));
    const spiffeId = workloadId(plane, body.spiffeId);
    const record = await registryCall(() =>
      body.labels !== undefined
        ? plane.registry.setStaticLabels(spiffeId, body.labels)
        : plane.registry.changeStaticLabels(spiffeId, {
            set: body.set ?? {},
            remove: body.remove ?? [],
            overwrite: body.overwrite,
          }),
    );
    sendJson(res, 200, { spiffeId: record.spiffeId, staticLabels: record.staticLabels });
  });
  router.add("POST", "/api/identity/workloads/scan", async (req, res) => {
    const body = parse(labelsRequestSchema, await readJson(req));
    const record = await registryCall(() =>
      plane.registry.setScannerLabels(workloadId(plane, body.spiffeId), body.labels),
    );
    sendJson(res, 200, { spiffeId: record.spiffeId, scannerLabels: record.scannerLabels });
  });
  router.add("GET", "/api/identity/revocations", (_req, res) => {
    sendJson(res, 200, plane.registry.revocationList());
  });
  router.add("GET", "/api/identity/bundle", (_req, res) => {
    sendJson(res, 200, bundleToDocument(plane.ca.bundle()));
  });
  router.add("GET", "/api/identity/ca", (_req, res) => {
    sendJson(res, 200, {
      trustDomain: plane.ca.trustDomain,
      sequence: plane.ca.bundle().sequence,
      generations: plane.ca.describe(),
      roots: plane.ca
        .bundle()
        .x509Authorities.map((c) => ({ subject: c.subject, sha256: fingerprint(c.raw) })),
    });
  });
  router.add("POST", "/api/identity/ca/rotate", async (req, res) => {
    const body = parse(rotateSchema, await readJson(req));
    const rotated = await plane.ca
      .rotate({ activateInSeconds: body.activateInSeconds })
      .catch((err: unknown) => {
        throw err instanceof CaStateConflictError ? new HttpError(409, err.message) : err;
      });
    sendJson(res, 200, {
      id: rotated.id,
      activateAt: rotated.activateAt.toISOString(),
      sequence: plane.ca.bundle().sequence,
    });
  });
}
