import type { Command } from "commander";
import { parseLabelList } from "../../../core/labels.ts";
import { processIo, table, withApiOption } from "../cli-support.ts";
import type { ApiOptions, CliIo } from "../cli-support.ts";
import { outputFormat, printStructured, withOutputOption } from "../output.ts";
import { UsageError } from "../exit-codes.ts";
import { apiTarget, identityApi } from "../identity-api.ts";
import { parseLabelChanges, resolveWorkload } from "../workload-target.ts";

interface WorkloadView {
  spiffeId: string;
  attestor: string;
  labels: { key: string; value: string; provenance: string }[];
  serial: string;
  notAfter: string;
  revoked: { at: string; reason: string } | null;
}

/** `sigil workload list|revoke <workload>|label <workload> key=value key-` */
export function register(program: Command, io: CliIo = processIo): void {
  const workload = program.command("workload").description("workloads that hold a Sigil identity");

  withOutputOption(
    withApiOption(
      workload
        .command("list")
        .description("list workloads, their labels and certificate state")
        .option("--json", "the same as -o json"),
    ),
  ).action(async (opts: ApiOptions & { json?: boolean; output: string }) => {
    const format = opts.json ? "json" : outputFormat(opts);
    const { workloads } = await identityApi<{ workloads: WorkloadView[] }>(
      apiTarget(opts),
      "GET",
      "api/identity/workloads",
    );
    if (printStructured(io, format, workloads)) return;
    if (workloads.length === 0) {
      io.err("no workloads have an identity yet\n");
      return;
    }
    const wide = format === "wide";
    const rows = [["SPIFFE ID", "ATTESTOR", "STATE", "CERT EXPIRES", "LABELS", ...(wide ? ["SERIAL"] : [])]];
    for (const w of workloads) {
      rows.push([
        w.spiffeId,
        w.attestor,
        w.revoked ? `revoked ${w.revoked.at}` : "active",
        w.notAfter,
        w.labels
          .map((l) => (wide ? `${l.key}=${l.value}(${l.provenance})` : `${l.key}=${l.value}`))
          .join(","),
        ...(wide ? [w.serial] : []),
      ]);
    }
    io.out(table(rows));
  });

  withApiOption(
    workload
      .command("revoke <workload>")
      .description(
        "revoke a workload (its name or SPIFFE ID): peers refuse its certificates once the revocation list reaches them",
      )
      .option("--reason <text>", "recorded with the revocation", "revoked by operator"),
  ).action(async (name: string, opts: { reason: string } & ApiOptions) => {
    const target = apiTarget(opts);
    const r = await identityApi<{ spiffeId: string; revokedAt: string; sequence: number }>(
      target,
      "POST",
      "api/identity/workloads/revoke",
      { spiffeId: await resolveWorkload(target, name), reason: opts.reason },
    );
    io.out(`revoked ${r.spiffeId} at ${r.revokedAt} (revocation list sequence ${r.sequence})\n`);
  });

  withApiOption(
    workload
      .command("label <workload> [changes...]")
      .description(
        "change a workload's operator labels (key=value sets, key- removes); its sidecar renews its certificate at once",
      )
      .option("--overwrite", "let key=value replace a different value already set")
      .option(
        "--labels <k=v,...>",
        "replace the whole set of operator labels instead (empty string clears them)",
      ),
  ).action(
    async (name: string, changes: string[], opts: { overwrite?: boolean; labels?: string } & ApiOptions) => {
      if (opts.labels !== undefined && changes.length > 0)
        throw new UsageError(
          "--labels replaces every operator label: give it or key=value/key- changes, not both",
        );
      if (opts.labels === undefined && changes.length === 0)
        throw new UsageError("nothing to change: give key=value or key- (or --labels for the whole set)");
      const body =
        opts.labels !== undefined
          ? { labels: parseLabelList(opts.labels) }
          : { ...parseLabelChanges(changes), overwrite: opts.overwrite === true };
      const target = apiTarget(opts);
      const spiffeId = await resolveWorkload(target, name);
      const r = await identityApi<{ staticLabels: { key: string; value: string }[] }>(
        target,
        "POST",
        "api/identity/workloads/labels",
        { spiffeId, ...body },
      );
      const now = r.staticLabels.map((l) => `${l.key}=${l.value}`).join(",") || "none";
      io.out(`labels of ${spiffeId} changed (operator labels now: ${now}); re-issuance requested\n`);
    },
  );
}
