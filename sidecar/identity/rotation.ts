import { EventEmitter } from "node:events";
import { watch } from "node:fs";
import type { FSWatcher } from "node:fs";
import type { KeyObject } from "node:crypto";
import { basename, dirname } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { AttestedLabel, LabelProvenance } from "../../core/labels.ts";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import { parseBundle } from "../../core/svid/bundle.ts";
import { x509 } from "../../core/svid/x509.ts";
import type {
  WireMetadataFacts,
  WireProcessFacts,
  WireSignSvidRequest,
  WireSignSvidResponse,
} from "../../core/svid/wire.ts";
import { IdentityRequestError } from "./identity-client.ts";
import type { WorkloadKey } from "./workload-key.ts";
import { createCsr, generateWorkloadKey, signWithKey } from "./workload-key.ts";

/** Everything the sidecar needs to speak as its workload, replaced as a whole on each rotation. */
export interface WorkloadCredentials {
  readonly spiffeId: string;
  /** DER, leaf first. */
  readonly certChain: readonly Buffer[];
  /** Leaf first, then any intermediates (PEM); the trust anchor itself is not included. */
  readonly certChainPem: string;
  /** PKCS#8 PEM private key; made by the sidecar, stays in this process and is never sent anywhere. */
  readonly privateKeyPem: string;
  readonly jwtSvid: string;
  readonly labels: readonly AttestedLabel[];
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly bundle: TrustBundle;
}

/** What a renewal proves the workload with: its current chain and the key of its leaf. */
export interface RenewalProof {
  readonly certChain: readonly Buffer[];
  readonly privateKey: KeyObject;
  readonly notAfter: Date;
}

/** First-issuance proof: a join token or a service-account token (renewals use the SVID itself). */
export type BootstrapProof = { readonly joinToken: string } | { readonly serviceAccountToken: string };

export interface RotationOptions {
  readonly client: { signSvid(request: WireSignSvidRequest): Promise<WireSignSvidResponse> };
  readonly trustDomain: string;
  /** Called for the first issuance and whenever the current SVID can no longer prove the workload. */
  readonly bootstrapProof: () => Promise<BootstrapProof>;
  /** Fresh process / metadata facts for each request. */
  readonly facts?: () => Promise<{ process?: WireProcessFacts; metadata?: WireMetadataFacts }>;
  /** A file whose changes (a new vulnerability summary, say) trigger an immediate renewal. */
  readonly watchFile?: string;
  readonly jwtAudiences?: readonly string[];
  readonly ttlSeconds?: number;
  /**
   * An SVID of an earlier run (identity-store.ts): the first request renews with it instead of a
   * bootstrap proof, falling back to the bootstrap proof if the control plane no longer accepts it.
   */
  readonly resumeFrom?: RenewalProof;
  /** Renewal happens at lifetime × (0.5 ± jitter/2). Default 0.1. */
  readonly jitter?: number;
  readonly retryInitialMs?: number;
  readonly retryMaxMs?: number;
}

interface RotationEvents {
  rotated: [credentials: WorkloadCredentials];
  /** `current()` changed (new SVID or new bundle): the sidecar's CredentialSource event. */
  rotate: [];
  bundle: [bundle: TrustBundle];
  error: [error: Error];
}

const PEM_LINE = /.{1,64}/g;

function toPem(der: Buffer): string {
  return `-----BEGIN CERTIFICATE-----\n${der.toString("base64").match(PEM_LINE)?.join("\n")}\n-----END CERTIFICATE-----\n`;
}

/**
 * Keeps the workload's SVID fresh: a new in-memory key and CSR at half of each certificate's
 * lifetime (with jitter, so a fleet does not renew in lockstep), on demand (`renewNow`, e.g. when
 * the control plane says the labels changed), and when the watched metadata file changes. Failed
 * renewals retry with exponential backoff; the current credentials stay in use meanwhile.
 */
export class RotationManager extends EventEmitter<RotationEvents> {
  private credentials: WorkloadCredentials | undefined;
  private key: WorkloadKey | undefined;
  private timer: NodeJS.Timeout | undefined;
  private watcher: FSWatcher | undefined;
  private inflight: Promise<WorkloadCredentials> | undefined;
  private stopped = false;
  private failures = 0;

  constructor(private readonly options: RotationOptions) {
    super();
  }

  /** Obtains the first SVID and starts the rotation schedule. */
  async start(): Promise<WorkloadCredentials> {
    const creds = await this.renewNow();
    if (this.options.watchFile) this.watchForChanges(this.options.watchFile);
    return creds;
  }

  current(): WorkloadCredentials {
    if (!this.credentials) throw new Error("no SVID yet: start() has not completed");
    return this.credentials;
  }

  /** Replaces the trust bundle (e.g. pushed over xDS) when it is newer than the one held. */
  setTrustBundle(bundle: TrustBundle): void {
    if (!this.credentials || bundle.sequence <= this.credentials.bundle.sequence) return;
    this.credentials = { ...this.credentials, bundle };
    this.emit("bundle", bundle);
    this.emit("rotate");
  }

  /** Renews now; concurrent callers share one request. */
  renewNow(): Promise<WorkloadCredentials> {
    this.inflight ??= this.renew().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.watcher?.close();
  }

  private async renew(): Promise<WorkloadCredentials> {
    try {
      const creds = await this.requestSvid();
      this.failures = 0;
      const bundleChanged = !this.credentials || this.credentials.bundle.sequence !== creds.bundle.sequence;
      this.credentials = creds;
      this.schedule(this.renewalDelay(creds));
      this.emit("rotated", creds);
      if (bundleChanged) this.emit("bundle", creds.bundle);
      this.emit("rotate");
      return creds;
    } catch (err) {
      this.failures += 1;
      const initial = this.options.retryInitialMs ?? 1000;
      const backoff = Math.min(initial * 2 ** (this.failures - 1), this.options.retryMaxMs ?? 30_000);
      this.schedule(backoff * (0.5 + Math.random() / 2));
      const error = err instanceof Error ? err : new Error(String(err));
      if (this.listenerCount("error") > 0) this.emit("error", error);
      throw error;
    }
  }

  private renewalDelay(creds: WorkloadCredentials): number {
    const lifetime = creds.notAfter.getTime() - creds.notBefore.getTime();
    const jitter = this.options.jitter ?? 0.1;
    const at = creds.notBefore.getTime() + lifetime * (0.5 + jitter * (Math.random() - 0.5));
    return Math.max(0, at - Date.now());
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.renewNow().catch(() => undefined);
    }, delayMs);
    this.timer.unref();
  }

  private renewalProof(): RenewalProof | undefined {
    if (this.credentials && this.key)
      return {
        certChain: this.credentials.certChain,
        privateKey: this.key.privateKey,
        notAfter: this.credentials.notAfter,
      };
    return this.options.resumeFrom;
  }

  private async requestSvid(): Promise<WorkloadCredentials> {
    const key = await generateWorkloadKey();
    const csr = await createCsr(key);
    const facts = (await this.options.facts?.()) ?? {};
    const base = {
      csr,
      jwtAudiences: [...(this.options.jwtAudiences ?? [])],
      ttlSeconds: this.options.ttlSeconds ?? 0,
    };
    const current = this.renewalProof();
    let response: WireSignSvidResponse | undefined;
    if (current && current.notAfter.getTime() > Date.now()) {
      const renewal = {
        ...base,
        attestation: {
          proof: "renewal" as const,
          renewal: { certChain: [...current.certChain], csrSignature: signWithKey(current, csr) },
          process: facts.process ?? null,
          metadata: facts.metadata ?? null,
        },
      };
      try {
        response = await this.options.client.signSvid(renewal);
      } catch (err) {
        // A renewal refused for its proof (CA rotated away, say) falls back to bootstrap attestation.
        if (!(err instanceof IdentityRequestError && err.code === grpc.status.UNAUTHENTICATED)) throw err;
      }
    }
    if (!response) {
      const proof = await this.options.bootstrapProof();
      response = await this.options.client.signSvid({
        ...base,
        attestation: {
          ...("joinToken" in proof
            ? { proof: "joinToken" as const, joinToken: { token: proof.joinToken } }
            : {
                proof: "kubernetes" as const,
                kubernetes: { serviceAccountToken: proof.serviceAccountToken },
              }),
          process: facts.process ?? null,
          metadata: facts.metadata ?? null,
        },
      });
    }
    this.key = key;
    return this.credentialsFrom(response, key);
  }

  private credentialsFrom(response: WireSignSvidResponse, key: WorkloadKey): WorkloadCredentials {
    const [leafDer] = response.certChain;
    if (!leafDer) throw new Error("control plane returned no certificate");
    const leaf = new x509.X509Certificate(leafDer);
    const san = leaf
      .getExtension(x509.SubjectAlternativeNameExtension)
      ?.names.items.filter((n) => n.type === "url");
    if (san?.length !== 1 || san[0]?.value !== response.spiffeId) {
      throw new Error(`issued certificate does not name ${response.spiffeId}`);
    }
    return {
      spiffeId: response.spiffeId,
      certChain: response.certChain,
      certChainPem: response.certChain.map(toPem).join(""),
      privateKeyPem: key.privateKeyPem,
      jwtSvid: response.jwtSvid,
      labels: response.labels.map((l) => ({
        key: l.key,
        value: l.value,
        provenance: l.provenance as LabelProvenance,
      })),
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
      bundle: parseBundle(this.options.trustDomain, response.trustBundleJson),
    };
  }

  private watchForChanges(path: string): void {
    let debounce: NodeJS.Timeout | undefined;
    const name = basename(path);
    this.watcher = watch(dirname(path), (_event, filename) => {
      if (filename !== name) return;
      clearTimeout(debounce);
      debounce = setTimeout(() => {
        this.renewNow().catch(() => undefined);
      }, 100);
    });
    this.watcher.on("error", (err) => {
      if (this.listenerCount("error") > 0) this.emit("error", err);
    });
  }
}
