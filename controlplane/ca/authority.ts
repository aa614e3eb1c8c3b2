import { EventEmitter } from "node:events";
import type { X509Certificate as NodeCertificate } from "node:crypto";
import { createHash, randomBytes } from "node:crypto";
import { x509 } from "../../core/svid/x509.ts";
import { SignJWT } from "jose";
import type { AttestedLabel } from "../../core/labels.ts";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import { LABELS_CLAIM, certificateThumbprint } from "../../core/svid/jwt.ts";
import { labelsExtensionDer, labelsOf } from "../../core/svid/labels-extension.ts";
import { parseSpiffeId } from "../../core/identity.ts";
import type { CryptoKey } from "./keys.ts";
import { generateP256, randomSerial } from "./keys.ts";
import { CaStateConflictError, FileCaStorage, type CaStorage } from "./storage.ts";
import type { CaState, Generation, ImportedCa, LoadedGeneration } from "./generations.ts";
import {
  CaError,
  createRoot,
  loadGeneration,
  loadGenerations,
  stateSchema,
  validateImported,
} from "./generations.ts";

export { CaError } from "./generations.ts";
export type { ImportedCa } from "./generations.ts";

export interface CaOptions {
  readonly dataDir: string;
  /** Used only when the CA is created; an existing CA keeps its own. */
  readonly trustDomain?: string;
  /** Lifetime of generated roots. */
  readonly rootTtlSeconds?: number;
  /** Longest leaf the CA will sign; old roots stay trusted this long after a newer one activates. */
  readonly maxLeafTtlSeconds?: number;
  readonly refreshHintSeconds?: number;
  /** Where the CA is kept; default `<dataDir>/ca/`. */
  readonly storage?: CaStorage;
}

export interface IssuedSvid {
  readonly spiffeId: string;
  /** Leaf first, then intermediates up to (not including) the trust anchor. */
  readonly chain: readonly Buffer[];
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

const DAY = 24 * 3600;

/** Longest JWT-SVID the Workload API can ask for: a bearer token, so short-lived. */
export const MAX_WORKLOAD_JWT_TTL_SECONDS = 3600;

/** Parts identical in every X.509-SVID, built once (the ASN.1 builder is the cost of signing). */
const SVID_SUBJECT = new x509.Name("O=Sigil, OU=workload");
const SVID_FIXED_EXTENSIONS: readonly x509.Extension[] = [
  new x509.BasicConstraintsExtension(false, undefined, true),
  new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
  new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
];

/**
 * Sigil's certificate authority. It keeps one or more generations of CA keys in
 * `<dataDir>/ca/`: the newest active one signs, every unretired one is in the trust bundle. A
 * rotation adds a generation that is trusted at once but signs only after `activateIn`, giving the
 * bundle time to reach every peer; the previous generation then stays trusted until every leaf it
 * signed has expired. Emits `bundle` (TrustBundle) whenever the bundle changes.
 */
export class CertificateAuthority extends EventEmitter<{ bundle: [TrustBundle] }> {
  /** Changes to the stored state, one at a time: each is a compare-and-swap on the last one. */
  private changes: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly storage: CaStorage,
    private state: CaState,
    /** The stored revision `state` was read from or written as (undefined: nothing stored yet). */
    private revision: string | undefined,
    private generations: LoadedGeneration[],
    private readonly options: Required<Omit<CaOptions, "trustDomain" | "dataDir" | "storage">>,
  ) {
    super();
  }

  get trustDomain(): string {
    return this.state.trustDomain;
  }

  get maxLeafTtlSeconds(): number {
    return this.options.maxLeafTtlSeconds;
  }

  /** True when `<dataDir>/ca` already holds a CA. */
  static async exists(dataDir: string): Promise<boolean> {
    return (await new FileCaStorage(dataDir).readState()) !== undefined;
  }

  /**
   * Loads the CA from the data directory, creating it on first start: a generated P-256 root, or
   * `imported` when given. Refuses `imported` when a CA already exists (use `rotate` for that).
   */
  static async open(
    options: CaOptions & { imported?: ImportedCa; now?: Date },
  ): Promise<CertificateAuthority> {
    const storage = options.storage ?? new FileCaStorage(options.dataDir);
    const dir = storage.location;
    const resolved = {
      rootTtlSeconds: options.rootTtlSeconds ?? 365 * DAY,
      maxLeafTtlSeconds: options.maxLeafTtlSeconds ?? DAY,
      refreshHintSeconds: options.refreshHintSeconds ?? 300,
    };
    const stored = await storage.readState();
    if (stored !== undefined) {
      if (options.imported)
        throw new CaError(`a CA already exists in ${dir}; use "ca rotate" to switch to a new one`);
      const state = CertificateAuthority.parseState(stored.text, dir);
      if (options.trustDomain && options.trustDomain !== state.trustDomain) {
        throw new CaError(
          `CA in ${dir} is for trust domain "${state.trustDomain}", not "${options.trustDomain}"`,
        );
      }
      const loaded = await loadGenerations(storage, state);
      return new CertificateAuthority(storage, state, stored.revision, loaded, resolved);
    }
    const trustDomain = options.trustDomain ?? "sigil.local";
    if (!parseSpiffeId(`spiffe://${trustDomain}`))
      throw new CaError(`"${trustDomain}" is not a valid trust domain name`);
    const empty = { trustDomain, sequence: 0, generations: [] };
    const ca = new CertificateAuthority(storage, empty, undefined, [], resolved);
    await ca.addGeneration(options.imported, options.now ?? new Date(), 0);
    return ca;
  }

  private static parseState(text: string, dir: string): CaState {
    const path = `${dir}/state.json`;
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new CaError(`${path}: ${(err as Error).message}`);
    }
    const parsed = stateSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new CaError(`${path}: ${issue?.path.join(".")}: ${issue?.message}`);
    }
    return parsed.data;
  }

  /**
   * Stores `next` as the successor of the state this CA holds. When another replica changed the
   * stored state meanwhile, nothing is stored, `undo` runs, this CA takes the stored state, and the
   * conflict is thrown: two rotations at once must not leave replicas signing with different roots.
   */
  private async saveState(next: CaState, undo: () => Promise<void>): Promise<void> {
    try {
      this.revision = await this.storage.writeState(JSON.stringify(next, null, 2), this.revision);
    } catch (err) {
      if (err instanceof CaStateConflictError) {
        await undo();
        await this.reload();
      }
      throw err;
    }
    this.state = next;
  }

  /** Runs one change of the stored state after those already under way. */
  private change<T>(op: () => Promise<T>): Promise<T> {
    const result = this.changes.then(op);
    this.changes = result.catch(() => undefined);
    return result;
  }

  /**
   * Takes the state another replica stored (a rotation or a retirement made there) when it is
   * newer than this one's, loading the generations it names; emits `bundle` when it changed.
   */
  async reload(): Promise<boolean> {
    const stored = await this.storage.readState();
    if (stored === undefined) return false;
    const state = CertificateAuthority.parseState(stored.text, this.storage.location);
    if (state.sequence <= this.state.sequence) return false;
    this.generations = await loadGenerations(this.storage, state);
    this.state = state;
    this.revision = stored.revision;
    this.emit("bundle", this.bundle());
    return true;
  }

  /** Creates (or imports) a generation, stores it, and makes it trusted now and signing at `activateAt`. */
  private async addGeneration(
    imported: ImportedCa | undefined,
    now: Date,
    activateInSeconds: number,
  ): Promise<LoadedGeneration> {
    // Random so that replicas rotating at the same moment never write each other's keys.
    const id = `g${this.state.sequence + 1}-${now.getTime().toString(36)}-${randomBytes(4).toString("hex")}`;
    let certPem: string;
    let keyPem: string;
    let chainPem = "";
    if (imported) {
      validateImported(imported, this.state.trustDomain);
      certPem = imported.certPem;
      keyPem = imported.keyPem;
      chainPem = imported.chainPem ?? "";
    } else {
      const root = await createRoot(this.state.trustDomain, id, now, this.options.rootTtlSeconds);
      certPem = root.certPem;
      keyPem = root.keyPem;
    }
    const jwt = await generateP256();
    await this.storage.writeGeneration(id, {
      caKey: keyPem,
      jwtKey: jwt.privatePem,
      caCrt: certPem,
      chainPem,
    });
    const generation: Generation = {
      id,
      source: imported ? "imported" : "generated",
      createdAtMs: now.getTime(),
      activateAtMs: now.getTime() + activateInSeconds * 1000,
      retireAtMs: null,
    };
    const loaded = await loadGeneration(this.storage, generation);
    const next: CaState = structuredClone(this.state);
    next.generations.push(generation);
    next.sequence += 1;
    // Leaves signed by the previous generation up to the new one's activation must stay verifiable.
    if (this.generations.length > 0) {
      const retireAt = generation.activateAtMs + this.options.maxLeafTtlSeconds * 1000;
      for (const g of next.generations)
        if (g !== generation && g.retireAtMs === null) g.retireAtMs = retireAt;
    }
    await this.saveState(next, () => this.storage.removeGeneration(id));
    for (const g of this.generations)
      g.retireAtMs = next.generations.find((s) => s.id === g.id)?.retireAtMs ?? null;
    this.generations.push(loaded);
    this.emit("bundle", this.bundle());
    return loaded;
  }

  /**
   * Starts a CA rotation: a new root (or the given imported CA) is trusted from now on and signs
   * after `activateInSeconds`; the current one signs until then and stays trusted until its last
   * possible leaf expires.
   */
  async rotate(
    options: { imported?: ImportedCa; activateInSeconds?: number; now?: Date } = {},
  ): Promise<{ id: string; activateAt: Date }> {
    const g = await this.change(() =>
      this.addGeneration(options.imported, options.now ?? new Date(), options.activateInSeconds ?? 30),
    );
    return { id: g.id, activateAt: new Date(g.activateAtMs) };
  }

  /** Drops generations whose overlap has ended (and deletes their keys); emits `bundle` if any went. */
  retireExpired(now = new Date()): Promise<boolean> {
    return this.change(async () => {
      const expired = this.generations.filter((g) => g.retireAtMs !== null && g.retireAtMs <= now.getTime());
      if (expired.length === 0 || expired.length === this.generations.length) return false;
      const next: CaState = structuredClone(this.state);
      next.generations = next.generations.filter((s) => !expired.some((g) => g.id === s.id));
      next.sequence += 1;
      await this.saveState(next, () => Promise.resolve());
      this.generations = this.generations.filter((g) => !expired.includes(g));
      for (const g of expired) await this.storage.removeGeneration(g.id);
      this.emit("bundle", this.bundle());
      return true;
    });
  }

  /** The generation that signs at `now`: the newest whose activation time has come. */
  private active(now = new Date()): LoadedGeneration {
    const candidates = this.generations.filter((g) => g.activateAtMs <= now.getTime());
    const chosen = candidates.length > 0 ? candidates[candidates.length - 1] : this.generations[0];
    if (!chosen) throw new CaError("CA has no generation");
    return chosen;
  }

  bundle(): TrustBundle {
    const anchors = new Map<string, NodeCertificate>();
    for (const g of this.generations) anchors.set(g.anchor.fingerprint256, g.anchor);
    return {
      trustDomain: this.state.trustDomain,
      sequence: this.state.sequence,
      refreshHintSeconds: this.options.refreshHintSeconds,
      x509Authorities: [...anchors.values()],
      jwtAuthorities: this.generations.map((g) => g.jwtAuthority),
    };
  }

  /** Public description of each generation, for `ca show`. */
  describe(): {
    id: string;
    source: string;
    subject: string;
    notAfter: Date;
    activateAt: Date;
    retireAt: Date | null;
    signing: boolean;
  }[] {
    const signer = this.active();
    return this.generations.map((g) => ({
      id: g.id,
      source: g.source,
      subject: g.cert.subject,
      notAfter: g.cert.notAfter,
      activateAt: new Date(g.activateAtMs),
      retireAt: g.retireAtMs === null ? null : new Date(g.retireAtMs),
      signing: g === signer,
    }));
  }

  /**
   * Signs an X.509-SVID for `publicKey`: one URI SAN `spiffeId`, CA:FALSE, critical key usage
   * digitalSignature, EKU serverAuth+clientAuth, and the labels extension. The caller has attested
   * the workload and checked the request; the CA only enforces the certificate's own rules.
   */
  async issueSvid(request: {
    publicKey: CryptoKey | x509.PublicKey;
    spiffeId: string;
    labels: readonly AttestedLabel[];
    ttlSeconds: number;
    now?: Date;
  }): Promise<IssuedSvid> {
    const id = parseSpiffeId(request.spiffeId);
    if (!id || id.trustDomain !== this.state.trustDomain || id.path === "") {
      throw new CaError(`"${request.spiffeId}" is not a workload SPIFFE ID in ${this.state.trustDomain}`);
    }
    if (!(request.ttlSeconds > 0 && request.ttlSeconds <= this.options.maxLeafTtlSeconds)) {
      throw new CaError(`TTL ${request.ttlSeconds}s outside 1..${this.options.maxLeafTtlSeconds}s`);
    }
    const now = request.now ?? new Date();
    const g = this.active(now);
    const notBefore = new Date(Math.floor(now.getTime() / 1000) * 1000);
    const requestedEnd = new Date(notBefore.getTime() + request.ttlSeconds * 1000);
    const notAfter = requestedEnd < g.cert.notAfter ? requestedEnd : g.cert.notAfter;
    const serial = randomSerial();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject: SVID_SUBJECT,
      issuer: g.cert.subjectName,
      notBefore,
      notAfter,
      publicKey: request.publicKey,
      signingKey: g.signing.key,
      signingAlgorithm: g.signing.algorithm,
      extensions: [
        ...SVID_FIXED_EXTENSIONS,
        new x509.SubjectAlternativeNameExtension([{ type: "url", value: request.spiffeId }]),
        g.authorityKeyId,
        new x509.Extension(labelsExtensionDer(request.labels)),
      ],
    });
    return {
      spiffeId: request.spiffeId,
      chain: [Buffer.from(cert.rawData), ...g.intermediates],
      serial,
      notBefore,
      notAfter,
    };
  }

  /** Signs a JWT-SVID bound (cnf x5t#S256) to the given certificate. */
  async issueJwtSvid(request: {
    spiffeId: string;
    labels: readonly AttestedLabel[];
    audience: readonly string[];
    certificate: Buffer;
    expiresAt: Date;
    now?: Date;
  }): Promise<string> {
    return this.signJwt(
      {
        [LABELS_CLAIM]: labelsOf(request.labels),
        cnf: { "x5t#S256": certificateThumbprint(request.certificate) },
      },
      request,
    );
  }

  /**
   * Signs a JWT-SVID as the SPIFFE Workload API hands it to an application: a bearer token for
   * `spiffeId` and the given audiences, bound to no certificate (its holder presents it to services
   * outside the mesh), living `ttlSeconds` (at most `MAX_WORKLOAD_JWT_TTL_SECONDS`).
   */
  async issueWorkloadJwtSvid(request: {
    spiffeId: string;
    audience: readonly string[];
    ttlSeconds: number;
    now?: Date;
  }): Promise<{ token: string; expiresAt: Date }> {
    const id = parseSpiffeId(request.spiffeId);
    if (!id || id.trustDomain !== this.state.trustDomain || id.path === "") {
      throw new CaError(`"${request.spiffeId}" is not a workload SPIFFE ID in ${this.state.trustDomain}`);
    }
    if (!(request.ttlSeconds > 0 && request.ttlSeconds <= MAX_WORKLOAD_JWT_TTL_SECONDS)) {
      throw new CaError(`JWT-SVID TTL ${request.ttlSeconds}s outside 1..${MAX_WORKLOAD_JWT_TTL_SECONDS}s`);
    }
    const now = request.now ?? new Date();
    const expiresAt = new Date((Math.floor(now.getTime() / 1000) + request.ttlSeconds) * 1000);
    const token = await this.signJwt(
      { jti: randomBytes(16).toString("base64url") },
      { ...request, expiresAt, now },
    );
    return { token, expiresAt };
  }

  /** The JWT-SVID every issuer shares: ES256 by the signing generation's JWT key, `sub`, `aud`, `iat`, `exp`. */
  private signJwt(
    claims: Record<string, unknown>,
    request: { spiffeId: string; audience: readonly string[]; expiresAt: Date; now?: Date },
  ): Promise<string> {
    if (request.audience.length === 0) throw new CaError("JWT-SVID needs at least one audience");
    const now = request.now ?? new Date();
    const g = this.active(now);
    return new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: g.jwtAuthority.kid, typ: "JWT" })
      .setSubject(request.spiffeId)
      .setAudience([...request.audience])
      .setIssuedAt(Math.floor(now.getTime() / 1000))
      .setExpirationTime(Math.floor(request.expiresAt.getTime() / 1000))
      .sign(g.jwtKey);
  }

  /**
   * A certificate for the control plane's own TLS listener, chained to this CA: URI SAN
   * `spiffe://<td>/sigil/controlplane` plus the given DNS names and IP addresses. Returns PEM.
   */
  async issueServingCertificate(request: {
    dnsNames: readonly string[];
    ipAddresses?: readonly string[];
    ttlSeconds?: number;
    now?: Date;
  }): Promise<{ certPem: string; keyPem: string }> {
    const now = request.now ?? new Date();
    const g = this.active(now);
    const { keys, privatePem } = await generateP256();
    const notAfter = new Date(
      Math.min(now.getTime() + (request.ttlSeconds ?? 30 * DAY) * 1000, g.cert.notAfter.getTime()),
    );
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: `CN=${request.dnsNames[0] ?? "sigil-controlplane"}, O=Sigil`,
      issuer: g.cert.subjectName,
      notBefore: new Date(now.getTime() - 60_000),
      notAfter,
      publicKey: keys.publicKey,
      signingKey: g.signing.key,
      signingAlgorithm: g.signing.algorithm,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([
          { type: "url", value: controlPlaneSpiffeId(this.state.trustDomain) },
          ...request.dnsNames.map((value) => ({ type: "dns" as const, value })),
          ...(request.ipAddresses ?? []).map((value) => ({ type: "ip" as const, value })),
        ]),
        await x509.AuthorityKeyIdentifierExtension.create(g.cert),
      ],
    });
    const chain = [Buffer.from(cert.rawData), ...g.intermediates].map((der) =>
      x509.PemConverter.encode(der, "CERTIFICATE"),
    );
    return { certPem: chain.join("\n") + "\n", keyPem: privatePem };
  }
}

/** The SPIFFE ID the control plane's serving certificate carries. */
export function controlPlaneSpiffeId(trustDomain: string): string {
  return `spiffe://${trustDomain}/sigil/controlplane`;
}

/** SHA-256 fingerprint (hex) of a DER certificate, the form `ca show` prints. */
export function fingerprint(der: Buffer): string {
  return createHash("sha256").update(der).digest("hex");
}
