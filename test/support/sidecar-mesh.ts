/**
 * Two sidecars on loopback in explicit mode, with identities from the real CA (controlplane/ca):
 * workload A (the caller, labels app=web) and workload B (the callee, labels app=api), and the
 * policy, peer directory and flow records of each exposed for assertions.
 */
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import type { TLSSocket } from "node:tls";
import pino from "pino";
import type { Logger } from "pino";
import { CertificateAuthority } from "../../controlplane/ca/authority.ts";
import { generateP256 } from "../../controlplane/ca/keys.ts";
import type { FlowRecord } from "../../core/flow.ts";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import type { AttestedLabel } from "../../core/labels.ts";
import { compilePolicySet, formatPolicyError, parsePolicyDocuments } from "../../core/policy/index.ts";
import type { CompiledPolicySet } from "../../core/policy/index.ts";
import type { SidecarConfigInput } from "../../sidecar/config.ts";
import type { Sidecar } from "../../sidecar/sidecar.ts";
import { startSidecar } from "../../sidecar/sidecar.ts";
import type { TlsCredentials } from "../../sidecar/inputs/sources.ts";
import { CredentialHolder, PeerDirectoryHolder, PolicyHolder } from "../../sidecar/inputs/state.ts";

export const TRUST_DOMAIN = "sigil.local";

export function policySet(yaml: string): CompiledPolicySet {
  const r = parsePolicyDocuments(yaml, "test.yaml");
  if (!r.ok) throw new Error(r.errors.map(formatPolicyError).join("\n"));
  return compilePolicySet(r.documents.map((d) => d.document));
}

export class MeshPki {
  private constructor(
    readonly dir: string,
    readonly ca: CertificateAuthority,
    /** Same trust domain, another key: what a forger with their own CA presents. */
    readonly rogueCa: CertificateAuthority,
  ) {}

  static async create(): Promise<MeshPki> {
    const dir = await mkdtemp(join(tmpdir(), "sigil-sidecar-"));
    const ca = await CertificateAuthority.open({ dataDir: join(dir, "ca"), trustDomain: TRUST_DOMAIN });
    const rogueCa = await CertificateAuthority.open({
      dataDir: join(dir, "rogue"),
      trustDomain: TRUST_DOMAIN,
    });
    return new MeshPki(dir, ca, rogueCa);
  }

  spiffeId(name: string): string {
    return `spiffe://${TRUST_DOMAIN}/workload/${name}`;
  }

  async credentials(
    name: string,
    labels: Record<string, string>,
    opts: { rogue?: boolean; ttlSeconds?: number; now?: Date } = {},
  ): Promise<TlsCredentials & { serial: string }> {
    const { keys, privatePem } = await generateP256();
    const attested: AttestedLabel[] = Object.entries(labels).map(([key, value]) => ({
      key,
      value,
      provenance: "static",
    }));
    const issued = await (opts.rogue ? this.rogueCa : this.ca).issueSvid({
      publicKey: keys.publicKey,
      spiffeId: this.spiffeId(name),
      labels: attested,
      ttlSeconds: opts.ttlSeconds ?? 3600,
      ...(opts.now ? { now: opts.now } : {}),
    });
    return {
      privateKeyPem: privatePem,
      certChainPem: issued.chain.map((der) => new X509Certificate(der).toString()).join(""),
      bundle: this.ca.bundle(),
      serial: issued.serial,
    };
  }

  async close(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

export class FlowCollector {
  readonly records: FlowRecord[] = [];
  /** `keep: false` drops every record (a bench's pair, whose records would pile up in its heap). */
  constructor(private readonly keep = true) {}
  private waiters: { match: (r: FlowRecord) => boolean; resolve: (r: FlowRecord) => void }[] = [];
  report(record: FlowRecord): void {
    if (!this.keep) return;
    this.records.push(record);
    this.waiters = this.waiters.filter((w) => {
      if (!w.match(record)) return true;
      w.resolve(record);
      return false;
    });
  }
  /** The first record (already seen or still to come) matching `match`; rejects after `timeoutMs`. */
  next(match: (r: FlowRecord) => boolean, timeoutMs = 5000): Promise<FlowRecord> {
    const seen = this.records.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no matching flow record")), timeoutMs);
      this.waiters.push({
        match,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
      });
    });
  }
}

export interface MeshSide {
  readonly sidecar: Sidecar;
  readonly credentials: CredentialHolder;
  readonly policy: PolicyHolder;
  readonly peers: PeerDirectoryHolder;
  readonly flows: FlowCollector;
}

export interface SidecarPair {
  readonly pki: MeshPki;
  readonly a: MeshSide;
  readonly b: MeshSide;
  /** A's outbound listener standing for B's application port `appPort`. */
  outboundPort(appPort: number): number;
  /** A's outbound listener for `externalTargets[i]`. */
  externalPort(i: number): number;
  /**
   * An mTLS connection straight to B's inbound listener, with the mesh ALPN naming `protocol` and
   * B's application `port`, as a workload presenting `creds` without a sidecar of its own would
   * open it; resolves once the handshake is done (socket errors are ignored: watch for close).
   */
  meshConnect(creds: TlsCredentials, protocol: "http1" | "h2" | "tcp", port: number): Promise<TLSSocket>;
  close(): Promise<void>;
}

export const quiet = pino({ level: "silent" });

/**
 * Starts B (inbound for `appPorts` on 127.0.0.1) and A (one explicit outbound target per app port,
 * mapped through A's peer directory to B). Policies start as given (YAML).
 */
export async function startPair(options: {
  appPorts: readonly number[];
  policyA?: string;
  policyB?: string;
  configA?: Partial<SidecarConfigInput>;
  configB?: Partial<SidecarConfigInput>;
  /** Declared framing of A's outbound targets by application port (default: detected). */
  protocols?: Readonly<Record<number, "auto" | "http1" | "h2" | "tcp">>;
  /** Destinations outside the mesh that A gets an outbound listener for (no directory entry). */
  externalTargets?: readonly { host: string; port: number }[];
  logger?: Logger;
  /** False: the pair's flow records are produced and dropped, not kept for the test to read. */
  keepFlows?: boolean;
}): Promise<SidecarPair> {
  const pki = await MeshPki.create();
  const credsA = new CredentialHolder(await pki.credentials("web", { app: "web" }));
  const credsB = new CredentialHolder(await pki.credentials("api", { app: "api" }));
  const policyA = new PolicyHolder({
    trustDomain: TRUST_DOMAIN,
    ...(options.policyA ? { policies: policySet(options.policyA) } : {}),
  });
  const policyB = new PolicyHolder({
    trustDomain: TRUST_DOMAIN,
    ...(options.policyB ? { policies: policySet(options.policyB) } : {}),
  });
  const flowsA = new FlowCollector(options.keepFlows ?? true);
  const flowsB = new FlowCollector(options.keepFlows ?? true);
  const peersA = new PeerDirectoryHolder();
  const peersB = new PeerDirectoryHolder();
  const base = {
    mode: "explicit" as const,
    admin: { port: 0 },
    logLevel: "silent" as const,
    detectTimeoutMs: 200,
  };
  const b = await startSidecar({
    config: { ...base, inbound: { host: "127.0.0.1", port: 0 }, ...options.configB },
    credentials: credsB,
    policy: policyB,
    peers: peersB,
    flows: flowsB,
    logger: options.logger ?? quiet,
  });
  const a = await startSidecar({
    config: {
      ...base,
      inbound: { host: "127.0.0.1", port: 0 },
      outbound: {
        targets: [
          ...options.appPorts.map((p) => ({
            port: 0,
            destination: { host: "127.0.0.1", port: p },
            protocol: options.protocols?.[p] ?? "auto",
          })),
          ...(options.externalTargets ?? []).map((destination) => ({ port: 0, destination })),
        ],
      },
      ...options.configA,
    },
    credentials: credsA,
    policy: policyA,
    peers: peersA,
    flows: flowsA,
    logger: options.logger ?? quiet,
  });
  peersA.replace(
    options.appPorts.map((p) => [
      { address: "127.0.0.1", port: p },
      {
        identity: { spiffeId: pki.spiffeId("api"), trustDomain: TRUST_DOMAIN, labels: { app: "api" } },
        sidecar: { host: "127.0.0.1", port: b.inbound.port },
        mtls: true,
      },
    ]),
  );
  return {
    pki,
    a: { sidecar: a, credentials: credsA, policy: policyA, peers: peersA, flows: flowsA },
    b: { sidecar: b, credentials: credsB, policy: policyB, peers: peersB, flows: flowsB },
    outboundPort(appPort) {
      const i = options.appPorts.indexOf(appPort);
      const target = a.outboundTargets[i];
      if (!target) throw new Error(`no outbound target for app port ${appPort}`);
      return target.port;
    },
    externalPort(i) {
      const target = a.outboundTargets[options.appPorts.length + i];
      if (!target) throw new Error(`no outbound listener for external target ${i}`);
      return target.port;
    },
    async meshConnect(creds, protocol, port) {
      const socket = tls.connect({
        host: "127.0.0.1",
        port: b.inbound.port,
        key: creds.privateKeyPem,
        cert: creds.certChainPem,
        ca: bundleRootsPem(pki.ca.bundle()),
        ALPNProtocols: [`sigil/1;${protocol};${port}`],
        checkServerIdentity: () => undefined,
      });
      socket.on("error", () => undefined);
      await once(socket, "secureConnect");
      return socket;
    },
    async close() {
      await Promise.all([a.close(), b.close()]);
      await pki.close();
    },
  };
}
