/**
 * The table the demo prints: for each request, what the client saw, what the sidecars reported to the
 * control plane (verdict and deciding policy), and what the wire showed. A row passes only when all
 * three agree with what the policies say should happen. A fast-path row must also have been decided
 * in the handshake (records from the fast-path enforcer, a token-carrying SYN on the wire); its
 * payload is not encrypted, which the "encrypted" column says.
 */
import type { FlowRecord } from "../../core/flow.ts";
import { flowsOf, type MeshView, type Timed } from "./flows.ts";
import type { ClientResult, Scenario } from "./traffic.ts";
import { tlsBetween, tokenBetween, type WireEvidence } from "./wire.ts";

export interface Row {
  scenario: Scenario;
  client: ClientResult;
  route: string;
  verdict: string;
  encrypted: string;
  policy: string;
  ok: boolean;
  problems: string[];
}

function policyName(f: FlowRecord): string {
  return f.policy ?? (f.verdict === "deny" ? "default deny" : "no policy (open)");
}

function side(f: FlowRecord): string {
  return f.direction === "egress" ? "out" : "in";
}

export function buildRow(
  mesh: MeshView,
  run: Timed<Scenario> & { client: ClientResult },
  flows: readonly FlowRecord[],
  wire: WireEvidence,
): Row {
  const s = run.item;
  const problems: string[] = [];
  const mine = flowsOf(mesh, run, flows);
  const denials = mine.filter((f) => f.verdict === "deny");
  const allows = mine.filter((f) => f.verdict === "allow");

  if (run.client.outcome !== s.expect) {
    problems.push(`expected ${s.expect}, the client saw ${run.client.detail}`);
  }
  let verdict: string;
  if (mine.length === 0) {
    verdict = "no flow reported";
    problems.push("no flow record reached the control plane");
  } else if (denials.length > 0) {
    const at = denials[0]!.direction === "egress" ? s.from : s.to;
    verdict = `DENY at ${at}`;
    if (s.expect === "allow") problems.push("reported as denied");
  } else {
    verdict = "allow";
    if (s.expect !== "allow") problems.push("reported as allowed");
  }
  // The caller's side first, as the connection went (the fast path's server side reports first).
  const deciding = (denials.length > 0 ? denials : allows).toSorted(
    (a, b) => Number(a.direction === "ingress") - Number(b.direction === "ingress"),
  );
  const policy = [...new Set(deciding.map((f) => `${side(f)}: ${policyName(f)}`))].join("; ") || "—";

  const fastPath = s.dataPath === "fastpath";
  if (fastPath && mine.length > 0 && !mine.some((f) => f.reporter.kind === "fastpath")) {
    problems.push("not decided by the fast path in the handshake");
  }

  const from = mesh.host(s.from).ipv4;
  const to = mesh.host(s.to).ipv4;
  const leaked = s.needles.filter((n) => wire.plaintextSeen.get(n) === true);
  const stoppedAtSource = denials.length > 0 && denials.every((f) => f.direction === "egress");
  const hello = tlsBetween(wire, from, to, s.port);
  let encrypted: string;
  if (leaked.length > 0) {
    encrypted = "NO: plaintext on the wire";
    problems.push(`plaintext seen on the wire: ${leaked.map((n) => JSON.stringify(n)).join(", ")}`);
  } else if (fastPath) {
    encrypted =
      denials.length > 0 ? "no payload (refused in the handshake)" : "no: fast path, identity in the SYN";
    if (!tokenBetween(wire, from, to, s.port)) problems.push("no SYN with an identity token on the wire");
  } else if (stoppedAtSource) {
    encrypted = `not sent (stopped in ${s.from})`;
  } else if (hello) {
    encrypted = `yes (TLS, ${hello.alpn.join(",")})`;
  } else {
    encrypted = "no TLS seen";
    problems.push("no TLS handshake for this hop on the wire");
  }
  return {
    scenario: s,
    client: run.client,
    route: `${s.from} → ${s.to}:${s.port}`,
    verdict,
    encrypted,
    policy,
    ok: problems.length === 0,
    problems,
  };
}

export function renderTable(rows: readonly Row[]): string {
  const header = [
    "",
    "source → destination",
    "request",
    "client saw",
    "verdict",
    "encrypted",
    "deciding policy",
  ];
  const cells = rows.map((r) => [
    r.ok ? "ok" : "FAIL",
    r.route,
    r.scenario.request,
    r.client.detail,
    r.verdict,
    r.encrypted,
    r.policy,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: readonly string[]) =>
    c
      .map((v, i) => v.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  const out = [line(header), widths.map((w) => "─".repeat(w)).join("  "), ...cells.map(line)];
  for (const r of rows.filter((row) => !row.ok)) {
    out.push(`FAIL ${r.route} ${r.scenario.request}: ${r.problems.join("; ")}`);
  }
  return `${out.join("\n")}\n`;
}
