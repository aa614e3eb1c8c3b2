import type { Command } from "commander";
import { processIo } from "../cli-support.ts";
import type { CliIo } from "../cli-support.ts";
import { inspectSvidFile } from "../identity-inspect.ts";
import type { InspectOptions, Inspection, Verification } from "../identity-inspect.ts";
import { outputFormat, printStructured, withOutputOption } from "../output.ts";

const FORMATS = ["table", "json", "yaml"] as const;

function until(date: Date, now: Date): string {
  const minutes = Math.round((date.getTime() - now.getTime()) / 60_000);
  return minutes >= 0 ? `in ${minutes}m` : `EXPIRED ${-minutes}m ago`;
}

function verificationLine(what: "chain" | "signature", v: Verification): string {
  const head = `${what}:`.padEnd(12);
  if (!v.checked) return `${head}not checked: ${v.reason}`;
  if (v.valid) return `${head}valid against the ${v.trustDomain} bundle from ${v.from}`;
  return v.reason ? `${head}INVALID (${v.reason}): ${v.message}` : `${head}INVALID: ${v.message}`;
}

/** The inspection as `key:  value` lines, for people. */
function text(r: Inspection, now: Date): string {
  const lines = [`type:       ${r.type}`];
  if (r.type === "JWT-SVID") {
    lines.push(`SPIFFE ID:  ${r.spiffeId}`, `audience:   ${JSON.stringify(r.audience)}`);
    for (const [k, v] of Object.entries(r.labels)) lines.push(`label:      ${k}=${v}`);
    const exp = r.expiresAt ? new Date(r.expiresAt) : null;
    lines.push(`expires:    ${exp ? `${r.expiresAt} (${until(exp, now)})` : "no exp claim"}`);
    lines.push(verificationLine("signature", r.verification));
  } else {
    lines.push(`SPIFFE ID:  ${r.spiffeIds.join(", ") || "(no URI SAN)"}`);
    if ("error" in r.labels) lines.push(`labels:     UNREADABLE: ${r.labels.error}`);
    else for (const l of r.labels) lines.push(`label:      ${l.key}=${l.value}  (${l.provenance})`);
    lines.push(
      `serial:     ${r.serial}`,
      `issuer:     ${r.issuer}`,
      `valid:      ${r.notBefore} .. ${r.notAfter} (expires ${until(new Date(r.notAfter), now)})`,
      verificationLine("chain", r.verification),
    );
  }
  return `${lines.join("\n")}\n`;
}

/** `sigil identity inspect <cert-or-jwt-file> [-o table|json|yaml]` */
export function register(program: Command, io: CliIo = processIo): void {
  const identity = program
    .command("identity")
    .description("workload identity documents (X.509-SVIDs, JWT-SVIDs)");
  withOutputOption(
    identity
      .command("inspect <file>")
      .description(
        "show the SPIFFE ID, labels and expiry of an SVID (PEM/DER certificate chain or JWT) and check it against the trust bundle",
      )
      .option("--bundle <file>", "trust bundle: SPIFFE bundle JSON or PEM roots")
      .option("--trust-domain <name>", "trust domain of --bundle", "sigil.local")
      .option("--data-dir <dir>", "take the trust bundle from this control plane data directory")
      .option("--api <url>", "take the trust bundle and revocations from this control plane API")
      .option("--token-file <path>", "admin token for --api (default: $SIGIL_TOKEN_FILE, else the local one)")
      .option("--audience <aud>", "audience a JWT-SVID must carry", "sigil"),
    FORMATS,
  ).action(async (file: string, opts: InspectOptions & { output?: string }) => {
    const format = outputFormat(opts, FORMATS);
    const now = new Date();
    const report = await inspectSvidFile(file, opts, now);
    if (!printStructured(io, format, report)) io.out(text(report, now));
    // A document that fails its check fails the command, whatever the format.
    if (report.verification.checked && !report.verification.valid) process.exitCode = 1;
  });
}
