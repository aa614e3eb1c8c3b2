import type { Command } from "commander";
import { processIo, table, withApiOption } from "../cli-support.ts";
import type { ApiOptions, CliIo } from "../cli-support.ts";
import { outputFormat, printStructured, withOutputOption } from "../output.ts";
import { apiTarget, identityApi } from "../identity-api.ts";

interface RevokedCertificateView {
  serial: string;
  spiffeId: string | null;
  revokedAt: string;
  expiresAt: string;
  reason: string;
}

/** `sigil cert revoke <serial>|revoked`: single certificates, as `workload` is for whole identities. */
export function register(program: Command, io: CliIo = processIo): void {
  const cert = program.command("cert").description("single workload certificates, by serial");

  withApiOption(
    cert
      .command("revoke <serial>")
      .description(
        "revoke one certificate: peers refuse it once the revocation list reaches them, and its workload attests again for a new one",
      )
      .option("--reason <text>", "recorded with the revocation", "revoked by operator"),
  ).action(async (serial: string, opts: { reason: string; api: string; tokenFile?: string }) => {
    const r = await identityApi<RevokedCertificateView & { sequence: number }>(
      apiTarget(opts),
      "POST",
      "api/identity/certificates/revoke",
      { serial, reason: opts.reason },
    );
    const of = r.spiffeId ? ` of ${r.spiffeId}` : " (not a registered workload's current certificate)";
    io.out(
      `revoked certificate ${r.serial}${of} at ${r.revokedAt}, kept until ${r.expiresAt} (revocation list sequence ${r.sequence})\n`,
    );
  });

  withOutputOption(
    withApiOption(
      cert
        .command("revoked")
        .description("list the certificates revoked by serial that have not expired yet")
        .option("--json", "the same as -o json"),
    ),
  ).action(async (opts: ApiOptions & { json?: boolean; output: string }) => {
    const format = opts.json ? "json" : outputFormat(opts);
    const { certificates } = await identityApi<{ certificates: RevokedCertificateView[] }>(
      apiTarget(opts),
      "GET",
      "api/identity/certificates/revoked",
    );
    if (printStructured(io, format, certificates)) return;
    if (certificates.length === 0) {
      io.err("no certificate is revoked by serial\n");
      return;
    }
    const rows = [["SERIAL", "SPIFFE ID", "REVOKED", "EXPIRES", "REASON"]];
    for (const c of certificates)
      rows.push([c.serial, c.spiffeId ?? "-", c.revokedAt, c.expiresAt, c.reason]);
    io.out(table(rows));
  });
}
