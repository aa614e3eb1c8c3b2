import type { Logger } from "pino";
import type { CertificateAuthority } from "../../controlplane/ca/authority.ts";
import type { InjectSettings } from "../settings.ts";
import { startWebhookServer, type WebhookServer } from "./server.ts";

export interface InjectionWebhookOptions {
  readonly ca: CertificateAuthority;
  readonly host: string;
  readonly port: number;
  /** Names the API server dials (`<service>.<namespace>.svc`); the certificate carries them. */
  readonly dnsNames: readonly string[];
  readonly settings: InjectSettings;
  readonly log: Logger;
}

const TTL_SECONDS = 7 * 24 * 3600;

/**
 * The injection webhook as the control plane serves it: its certificate is issued by Sigil's CA (the
 * webhook configuration's `caBundle` is the CA bundle) and renewed at half its lifetime and whenever
 * the bundle changes (a CA rotation).
 */
export async function startInjectionWebhook(o: InjectionWebhookOptions): Promise<WebhookServer> {
  const ttlSeconds = Math.min(TTL_SECONDS, o.ca.maxLeafTtlSeconds);
  const issue = () =>
    o.ca.issueServingCertificate({ dnsNames: o.dnsNames, ipAddresses: ["127.0.0.1", "::1"], ttlSeconds });
  const server = await startWebhookServer({
    host: o.host,
    port: o.port,
    tls: await issue(),
    settings: o.settings,
    log: o.log,
  });
  let timer: NodeJS.Timeout | undefined;
  const renew = (): void => {
    issue().then(
      (tls) => {
        server.setTls(tls);
        schedule((ttlSeconds * 1000) / 2);
      },
      (err: unknown) => {
        o.log.error({ err }, "renewing the webhook certificate failed; retrying in 30 s");
        schedule(30_000);
      },
    );
  };
  const schedule = (ms: number): void => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(renew, ms);
    timer.unref();
  };
  schedule((ttlSeconds * 1000) / 2);
  o.ca.on("bundle", renew);
  return {
    port: server.port,
    setTls: (tls) => server.setTls(tls),
    close: async () => {
      if (timer) clearTimeout(timer);
      o.ca.off("bundle", renew);
      await server.close();
    },
  };
}
