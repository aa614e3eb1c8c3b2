import { createServer, type Server } from "node:https";
import { LISTENER_TLS_OPTIONS } from "../../core/tls-policy.ts";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import type { InjectSettings } from "../settings.ts";
import {
  admit,
  NotAnAdmissionReview,
  parseAdmissionReview,
  type AdmissionReviewResponse,
} from "./admission.ts";

/** The HTTPS endpoint the API server calls: `POST /inject` with an AdmissionReview. */

export const WEBHOOK_PATH = "/inject";
/** The API server caps objects near 1.5 MiB; a review wraps one object (twice for updates). */
export const MAX_BODY_BYTES = 4 * 1024 * 1024;

export interface WebhookTls {
  readonly keyPem: string;
  readonly certPem: string;
}

export interface WebhookServerOptions {
  readonly host: string;
  readonly port: number;
  readonly tls: WebhookTls;
  readonly settings: InjectSettings;
  readonly log: Logger;
  /** Whole-request deadline; the API server's own `timeoutSeconds` is at most 30 s. */
  readonly requestTimeoutMs?: number;
}

export interface WebhookServer {
  readonly port: number;
  /** Replaces the serving certificate for new connections (renewal). */
  setTls(tls: WebhookTls): void;
  close(): Promise<void>;
}

class BodyError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"]);
    if (declared > MAX_BODY_BYTES) {
      reject(new BodyError(413, `body of ${declared} bytes is over the ${MAX_BODY_BYTES}-byte limit`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.pause();
        reject(new BodyError(413, `body is over the ${MAX_BODY_BYTES}-byte limit`));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown, close = false): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...(close ? { connection: "close" } : {}),
  });
  res.end(text);
}

async function handle(req: IncomingMessage, res: ServerResponse, o: WebhookServerOptions): Promise<void> {
  const url = new URL(req.url ?? "/", "https://webhook");
  if (url.pathname !== WEBHOOK_PATH)
    return send(res, 404, { error: `no such path ${url.pathname}; the webhook serves ${WEBHOOK_PATH}` });
  if (req.method !== "POST") return send(res, 405, { error: `${req.method} ${WEBHOOK_PATH}: only POST` });
  const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim();
  if (type !== "application/json")
    return send(res, 415, { error: `content-type ${type || "(none)"}: expected application/json` });
  let body: Buffer;
  try {
    body = await readBody(req);
  } catch (err) {
    const status = err instanceof BodyError ? err.status : 400;
    return send(res, status, { error: (err as Error).message }, true);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch (err) {
    return send(res, 400, { error: `body is not JSON: ${(err as Error).message}` });
  }
  let answer: AdmissionReviewResponse;
  try {
    const request = parseAdmissionReview(parsed);
    try {
      answer = admit(request, o.settings);
    } catch (err) {
      // A defect here must still answer the review: refused, with the reason, never a 500.
      o.log.error({ err, uid: request.uid }, "admission failed");
      answer = {
        apiVersion: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: {
          uid: request.uid,
          allowed: false,
          status: {
            code: 500,
            reason: "InternalError",
            message: `sigil: injection failed: ${(err as Error).message}`,
          },
        },
      };
    }
  } catch (err) {
    if (err instanceof NotAnAdmissionReview) return send(res, 400, { error: err.message });
    throw err;
  }
  o.log.info(
    {
      uid: answer.response.uid,
      allowed: answer.response.allowed,
      patched: answer.response.patch !== undefined,
    },
    answer.response.status?.message ?? "admitted",
  );
  send(res, 200, answer);
}

export async function startWebhookServer(o: WebhookServerOptions): Promise<WebhookServer> {
  const timeout = o.requestTimeoutMs ?? 10_000;
  const server: Server = createServer(
    {
      ...LISTENER_TLS_OPTIONS,
      key: o.tls.keyPem,
      cert: o.tls.certPem,
      // A handshake that never completes would hold a socket; the API server finishes it in milliseconds.
      handshakeTimeout: 5_000,
      // How often request deadlines are checked (Node's default, 30 s, lets a slow client stay that long).
      connectionsCheckingInterval: Math.min(1_000, timeout),
    },
    (req, res) => {
      handle(req, res, o).catch((err: unknown) => {
        o.log.error({ err }, "webhook request failed");
        if (!res.headersSent) send(res, 400, { error: "request could not be read" }, true);
        else res.destroy();
      });
    },
  );
  server.requestTimeout = timeout;
  server.headersTimeout = Math.min(timeout, 5_000);
  server.keepAliveTimeout = 30_000;
  server.on("tlsClientError", (err) => o.log.debug({ err: err.message }, "webhook TLS handshake failed"));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, o.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    // A replaced context keeps only the options it is given: the versions and suites go along.
    setTls: (tls) => server.setSecureContext({ ...LISTENER_TLS_OPTIONS, key: tls.keyPem, cert: tls.certPem }),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
