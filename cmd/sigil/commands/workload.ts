import type { Command } from "commander";
import { parseLabelList } from "../../../core/labels.ts";
import { processIo, table, withApiOption } from "../cli-support.ts";
import type { CliIo } from "../cli-support.ts";
import { apiTarget, identityApi } from "../identity-api.ts";

interface WorkloadView {
  spiffeId: string;
  attestor: string;
  labels: { key: string; value: string; provenance: string }[];
  serial: string;
  notAfter: string;
  revoked: { at: string; reason: string } | null;
}

/** `sigil workload list|revoke <spiffe-id>|label <spiffe-id>` */
export function register(program: Command, io: CliIo = processIo): void {
  const workload = program.command("workload").description("workloads that hold a Sigil identity");

  withApiOption(
    workload
      .command("list")
      .description("list workloads, their labels and certificate state")
      .option("--json", "print JSON"),
  ).action(async (opts: { json?: boolean; api: string; tokenFile?: string }) => {
    const { workloads } = await identityApi<{ workloads: WorkloadView[] }>(
      apiTarget(opts),
      "GET",
      "api/identity/workloads",
    );
    if (opts.json) {
      io.out(`${JSON.stringify(workloads, null, 2)}\n`);
      return;
    }
    if (workloads.length === 0) {
      io.err("no workloads have an identity yet\n");
      return;
    }
    const rows = [["SPIFFE ID", "ATTESTOR", "STATE", "CERT EXPIRES", "LABELS"]];
    for (const w of workloads) {
      rows.push([
        w.spiffeId,
        w.attestor,
        w.revoked ? `revoked ${w.revoked.at}` : "active",
        w.notAfter,
        w.labels.map((l) => `${l.key}=${l.value}`).join(","),
      ]);
    }
    io.out(table(rows));
  });

  withApiOption(
    workload
      .command("revoke <spiffe-id>")
      .description("revoke a workload: peers refuse its certificates once the revocation list reaches them")
      .option("--reason <text>", "recorded with the revocation", "revoked by operator"),
  ).action(async (spiffeId: string, opts: { reason: string; api: string; tokenFile?: string }) => {
    const r = await identityApi<{ spiffeId: string; revokedAt: string; sequence: number }>(
      apiTarget(opts),
      "POST",
      "api/identity/workloads/revoke",
      {
        spiffeId,
        reason: opts.reason,
      },
    );
    io.out(`revoked ${r.spiffeId} at ${r.revokedAt} (revocation list sequence ${r.sequence})\n`);
  });

  withApiOption(
    workload
      .command("label <spiffe-id>")
      .description("set operator labels on a workload; its sidecar is told to renew its certificate")
      .requiredOption("--labels <k=v,...>", "the complete set of operator labels (empty string clears them)"),
  ).action(async (spiffeId: string, opts: { labels: string; api: string; tokenFile?: string }) => {
    const labels = parseLabelList(opts.labels);
    await identityApi(apiTarget(opts), "POST", "api/identity/workloads/labels", { spiffeId, labels });
    io.out(`labels of ${spiffeId} set; re-issuance requested\n`);
  });
}
