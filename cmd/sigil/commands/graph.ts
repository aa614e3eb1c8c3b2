import type { Command } from "commander";
import { clientFor, processIo, run, table, withApiOption } from "../cli-support.ts";
import type { CliIo } from "../cli-support.ts";
import { UsageError } from "../exit-codes.ts";
import { outputFormat, printStructured } from "../output.ts";
import type { GraphEdge } from "../../../controlplane/visibility/routes.ts";

/** `sigil graph [--format text|json|dot]` */
export function register(program: Command, io: CliIo = processIo): void {
  withApiOption(
    program
      .command("graph")
      .description(
        "show the dependency map: identity -> identity:port with verdict counts, encryption, last policy",
      )
      .option("--format <format>", "text, json, or dot (Graphviz)", "text"),
  )
    .option("-o, --output <format>", "table, wide, json or yaml (--format dot for Graphviz)", "table")
    .action(async (opts: { format: string; output: string }, cmd: Command) => {
      const format = outputFormat(opts);
      if (!["text", "json", "dot"].includes(opts.format))
        throw new UsageError(`--format must be text, json or dot, not "${opts.format}"`);
      await run(async () => {
        const graph = await clientFor(cmd).graph();
        if (opts.format === "json") io.out(`${JSON.stringify(graph, null, 2)}\n`);
        else if (opts.format === "dot") io.out(dot(graph.edges));
        else if (printStructured(io, format, graph)) return;
        else if (graph.edges.length === 0) io.err("no flows recorded yet\n");
        else {
          const rows = graph.edges.map((e) => [
            e.source.id,
            "->",
            `${e.destination.id}:${e.port}`,
            e.status.toUpperCase(),
            `allowed=${e.allowed} denied=${e.denied} would-deny=${e.wouldDeny}`,
            e.plaintext === 0 ? "mTLS" : `plaintext=${e.plaintext}`,
            `last=${e.lastPolicy ?? "default"}`,
            Object.keys(e.methods).sort().join(",") || "-",
            ...(format === "wide" ? [new Date(e.lastSeen).toISOString()] : []),
          ]);
          const header = ["SOURCE", "", "DESTINATION", "STATUS", "DECISIONS", "TLS", "POLICY", "METHODS"];
          io.out(table([[...header, ...(format === "wide" ? ["LAST SEEN"] : [])], ...rows]));
        }
      });
    });
}

const DOT_COLORS: Record<GraphEdge["status"], string> = {
  allowed: "forestgreen",
  denied: "red3",
  mixed: "darkorange",
  "would-deny": "purple",
};

function dot(edges: readonly GraphEdge[]): string {
  const q = (s: string) => JSON.stringify(s);
  const lines = edges.map((e) => {
    const style = e.status === "would-deny" ? "dotted" : e.plaintext > 0 ? "dashed" : "solid";
    const label = `:${e.port} ${e.plaintext === 0 ? "mTLS" : "plaintext"}`;
    return `  ${q(e.source.id)} -> ${q(e.destination.id)} [color=${DOT_COLORS[e.status]}, style=${style}, label=${q(label)}];`;
  });
  return `digraph sigil {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n${lines.join("\n")}\n}\n`;
}
