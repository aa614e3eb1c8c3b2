import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { bundleRootsPem, bundleToJson } from "../../../core/svid/bundle.ts";
import type { CertificateAuthority, ImportedCa } from "../../../controlplane/ca/authority.ts";
import { processIo, table, withApiOption } from "../cli-support.ts";
import type { CliIo } from "../cli-support.ts";
import { outputFormat, printStructured } from "../output.ts";
import { DEFAULT_DATA_DIR, apiTarget, identityApi, parseDuration } from "../identity-api.ts";

interface ImportOptions {
  cert?: string;
  key?: string;
  chain?: string;
}

async function importedFrom(opts: ImportOptions): Promise<ImportedCa | undefined> {
  if (!opts.cert && !opts.key) return undefined;
  if (!opts.cert || !opts.key)
    throw new Error("--cert and --key go together: both the CA certificate and its key are needed");
  const read = (path: string, what: string) =>
    readFile(path, "utf8").catch((err: Error) => {
      throw new Error(`cannot read ${what} ${path}: ${err.message}`);
    });
  return {
    certPem: await read(opts.cert, "CA certificate"),
    keyPem: await read(opts.key, "CA key"),
    chainPem: opts.chain ? await read(opts.chain, "CA chain") : undefined,
  };
}

/** The CA's modules (key storage, signing) load only for the ca commands, so others start fast. */
const authorityModule = () => import("../../../controlplane/ca/authority.ts");

/** What `ca show -o json|yaml` prints: the table's facts as data. */
async function caView(ca: CertificateAuthority): Promise<unknown> {
  const { fingerprint } = await authorityModule();
  const bundle = ca.bundle();
  return {
    trustDomain: ca.trustDomain,
    bundleSequence: bundle.sequence,
    generations: ca.describe(),
    roots: bundle.x509Authorities.map((c) => ({ sha256: fingerprint(c.raw), subject: c.subject })),
  };
}

async function describeCa(ca: CertificateAuthority): Promise<string> {
  const { fingerprint } = await authorityModule();
  const bundle = ca.bundle();
  const rows = [["GENERATION", "SOURCE", "SIGNING", "ACTIVE FROM", "TRUSTED UNTIL", "CA EXPIRES", "SUBJECT"]];
  for (const g of ca.describe()) {
    rows.push([
      g.id,
      g.source,
      g.signing ? "yes" : "no",
      g.activateAt.toISOString(),
      g.retireAt ? g.retireAt.toISOString() : "-",
      g.notAfter.toISOString(),
      g.subject,
    ]);
  }
  const roots = bundle.x509Authorities.map(
    (c) => `  ${fingerprint(c.raw)}  ${c.subject.replace(/\n/g, ", ")}`,
  );
  return (
    `trust domain: ${ca.trustDomain}\nbundle sequence: ${bundle.sequence}\n\n` +
    table(rows) +
    `\nroots in the trust bundle (SHA-256):\n${roots.join("\n")}\n`
  );
}

/** `sigil ca init|show|rotate` */
export function register(program: Command, io: CliIo = processIo): void {
  const ca = program.command("ca").description("the certificate authority that signs workload identities");

  ca.command("init")
    .description(
      "create the CA in the data directory: a new ECDSA P-256 root, or your own CA with --cert/--key",
    )
    .option("--data-dir <dir>", "control plane data directory", DEFAULT_DATA_DIR)
    .option("--trust-domain <name>", "trust domain of the SPIFFE IDs this CA signs", "sigil.local")
    .option("--cert <file>", "bring your own CA or intermediate certificate (PEM)")
    .option("--key <file>", "its private key (PEM, ECDSA P-256 or P-384)")
    .option("--chain <file>", "certificates above --cert up to the root to trust (PEM)")
    .action(async (opts: ImportOptions & { dataDir: string; trustDomain: string }) => {
      if (await (await authorityModule()).CertificateAuthority.exists(opts.dataDir)) {
        throw new Error(
          `a CA already exists in ${opts.dataDir}/ca; use "sigil ca show" or "sigil ca rotate"`,
        );
      }
      const authority = await (
        await authorityModule()
      ).CertificateAuthority.open({
        dataDir: opts.dataDir,
        trustDomain: opts.trustDomain,
        imported: await importedFrom(opts),
      });
      io.out(`created CA in ${opts.dataDir}/ca (keys 0600)\n\n${await describeCa(authority)}`);
    });

  ca.command("show")
    .description("show the CA generations and trust bundle from the data directory")
    .option("--data-dir <dir>", "control plane data directory", DEFAULT_DATA_DIR)
    .option("--bundle", "print the trust bundle in SPIFFE bundle format (JSON)")
    .option("--pem", "print the trust bundle's root certificates as PEM")
    .option("-o, --output <format>", "table, json or yaml", "table")
    .action(async (opts: { dataDir: string; bundle?: boolean; pem?: boolean; output: string }) => {
      const format = outputFormat(opts, ["table", "json", "yaml"]);
      if (!(await (await authorityModule()).CertificateAuthority.exists(opts.dataDir))) {
        throw new Error(
          `no CA in ${opts.dataDir}/ca; create one with "sigil ca init --data-dir ${opts.dataDir}"`,
        );
      }
      const authority = await (await authorityModule()).CertificateAuthority.open({ dataDir: opts.dataDir });
      if (opts.bundle) io.out(`${bundleToJson(authority.bundle())}\n`);
      else if (opts.pem) io.out(bundleRootsPem(authority.bundle()));
      else if (!printStructured(io, format, await caView(authority))) io.out(await describeCa(authority));
    });

  withApiOption(
    ca
      .command("rotate")
      .description(
        "start a CA rotation: a new root is trusted at once, signs after --activate-in, and the old one stays trusted until its last certificate expires",
      )
      .option(
        "--activate-in <duration>",
        "time for the new bundle to reach every sidecar before the new root signs",
        "30s",
      )
      .option(
        "--data-dir <dir>",
        "rotate in this data directory instead of through the API (control plane stopped)",
      )
      .option("--cert <file>", "rotate to your own CA certificate (PEM; needs --data-dir)")
      .option("--key <file>", "its private key (PEM)")
      .option("--chain <file>", "certificates above --cert up to the root to trust (PEM)"),
  ).action(
    async (
      opts: ImportOptions & { activateIn: string; dataDir?: string; api: string; tokenFile?: string },
    ) => {
      const activateInSeconds = /^0+[smhd]?$/.test(opts.activateIn)
        ? 0
        : parseDuration(opts.activateIn, "--activate-in");
      if (opts.dataDir) {
        const authority = await (
          await authorityModule()
        ).CertificateAuthority.open({ dataDir: opts.dataDir });
        const rotated = await authority.rotate({ imported: await importedFrom(opts), activateInSeconds });
        io.out(
          `new CA generation ${rotated.id} signs from ${rotated.activateAt.toISOString()}\n\n${await describeCa(authority)}`,
        );
        return;
      }
      if (opts.cert)
        throw new Error(
          "--cert needs --data-dir: a CA you bring is installed with the control plane stopped",
        );
      const r = await identityApi<{ id: string; activateAt: string; sequence: number }>(
        apiTarget(opts),
        "POST",
        "api/identity/ca/rotate",
        {
          activateInSeconds,
        },
      );
      io.out(`new CA generation ${r.id} signs from ${r.activateAt}; trust bundle sequence ${r.sequence}\n`);
    },
  );
}
