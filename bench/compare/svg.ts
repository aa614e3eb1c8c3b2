import type { SpectrumPoint } from "./latency.ts";
import type { RunResults } from "./results.ts";
import type { PathName } from "./topology.ts";

/**
 * The latency-distribution plot: for each protocol, latency (log scale) against percentile, the
 * tail stretched out (x = log10(1 / (1 − p))) so p50, p90, p99 and p99.9 sit at equal spacing.
 * One line per path, so the gap between a proxy's line and the direct line is its added latency.
 */

const COLORS: Record<PathName, string> = {
  direct: "#6b7280",
  sigil: "#2563eb",
  "node-pipes": "#9333ea",
  nginx: "#16a34a",
  haproxy: "#ea580c",
};
const NAMES: Record<PathName, string> = {
  direct: "direct",
  sigil: "Sigil",
  "node-pipes": "Node pipes",
  nginx: "nginx",
  haproxy: "HAProxy",
};
const X_TICKS = [
  { p: 0, label: "0%" },
  { p: 50, label: "50%" },
  { p: 90, label: "90%" },
  { p: 99, label: "99%" },
  { p: 99.9, label: "99.9%" },
  { p: 99.99, label: "99.99%" },
];
const Y_TICKS_MS = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

const W = 520;
const H = 360;
const M = { left: 64, right: 16, top: 40, bottom: 48 };

/** Horizontal position of percentile p in "nines" (0 at p=0, 1 at 90 %, 2 at 99 %...). */
export function nines(p: number): number {
  return Math.log10(1 / Math.max(1 - p / 100, 1e-6));
}

const esc = (s: string): string => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

interface Series {
  readonly path: PathName;
  readonly points: readonly SpectrumPoint[];
}

function panel(title: string, series: readonly Series[], x0: number): string {
  const all = series.flatMap((s) => s.points.map((p) => p.us / 1000)).filter((v) => v > 0);
  if (all.length === 0)
    return `<text x="${x0 + W / 2}" y="${H / 2}" text-anchor="middle">${esc(title)}: no data</text>`;
  const lo = Math.log10(Math.max(Math.min(...all) * 0.8, 0.01));
  const hi = Math.log10(Math.max(...all) * 1.25);
  const maxNines = Math.max(2, ...series.flatMap((s) => s.points.map((p) => nines(p.p))));
  const px = (n: number): number => x0 + M.left + (n / maxNines) * (W - M.left - M.right);
  const py = (msv: number): number =>
    M.top + (1 - (Math.log10(msv) - lo) / (hi - lo)) * (H - M.top - M.bottom);
  const out: string[] = [];
  out.push(
    `<text x="${x0 + W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="600">${esc(title)}</text>`,
  );
  for (const ms of Y_TICKS_MS) {
    if (Math.log10(ms) < lo || Math.log10(ms) > hi) continue;
    const y = py(ms).toFixed(1);
    out.push(`<line x1="${px(0)}" x2="${px(maxNines)}" y1="${y}" y2="${y}" stroke="#e5e7eb"/>`);
    out.push(
      `<text x="${px(0) - 6}" y="${y}" text-anchor="end" dominant-baseline="middle" font-size="11">${ms}</text>`,
    );
  }
  for (const t of X_TICKS) {
    if (nines(t.p) > maxNines + 1e-9) continue;
    const x = px(nines(t.p)).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="${M.top}" y2="${H - M.bottom}" stroke="#e5e7eb"/>`);
    out.push(`<text x="${x}" y="${H - M.bottom + 16}" text-anchor="middle" font-size="11">${t.label}</text>`);
  }
  out.push(
    `<rect x="${px(0)}" y="${M.top}" width="${px(maxNines) - px(0)}" height="${H - M.top - M.bottom}" fill="none" stroke="#9ca3af"/>`,
  );
  out.push(
    `<text x="${x0 + W / 2}" y="${H - 10}" text-anchor="middle" font-size="12">percentile of requests</text>`,
  );
  out.push(
    `<text transform="translate(${x0 + 16} ${(M.top + H - M.bottom) / 2}) rotate(-90)" text-anchor="middle" font-size="12">latency, ms (log scale)</text>`,
  );
  for (const s of series) {
    const d = s.points
      .filter((p) => p.us > 0)
      .map((p, i) => `${i === 0 ? "M" : "L"}${px(nines(p.p)).toFixed(1)},${py(p.us / 1000).toFixed(1)}`)
      .join(" ");
    const width = s.path === "sigil" ? 3 : 2;
    out.push(
      `<path d="${d}" fill="none" stroke="${COLORS[s.path]}" stroke-width="${width}" stroke-linejoin="round"/>`,
    );
  }
  return out.join("\n");
}

export function latencyPlotSvg(r: RunResults): string {
  const panels = (["h1", "grpc"] as const).map((protocol, i) =>
    panel(
      `${protocol === "h1" ? "HTTP/1.1" : "gRPC unary"}, 1 KB, ${r.rateRps} rps`,
      r.paths.flatMap((p) => {
        const m = p[protocol].rate;
        return m ? [{ path: p.path, points: m.load.spectrum }] : [];
      }),
      i * W,
    ),
  );
  const present = r.paths.filter((p) => p.h1.rate || p.grpc.rate).map((p) => p.path);
  const legend = present
    .map((path, i) => {
      const x = 80 + i * 130;
      return `<line x1="${x}" x2="${x + 28}" y1="${H + 14}" y2="${H + 14}" stroke="${COLORS[path]}" stroke-width="${path === "sigil" ? 3 : 2}"/><text x="${x + 34}" y="${H + 18}" font-size="13">${NAMES[path]}</text>`;
    })
    .join("\n");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H + 30}" viewBox="0 0 ${2 * W} ${H + 30}" font-family="Helvetica, Arial, sans-serif" fill="#111827">
<rect width="100%" height="100%" fill="#ffffff"/>
${panels.join("\n")}
${legend}
</svg>
`;
}
