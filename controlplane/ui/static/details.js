/* global document */
// The side panel: a clicked edge's requests and deciding policy, or a clicked workload's labels.
import { getJson } from "./api.js";
import { el, endName, labelChips, setChildren, time, verdictBadge } from "./dom.js";
import { state } from "./state.js";

/** The rule a rule id (`<policy>/<ingress|egress>/<index>`) names, from the policies in force. */
function decidingRule(ruleId) {
  if (!ruleId) return null;
  const [name, direction, index] = ruleId.split("/");
  const doc = state.policies.find((p) => p.metadata && p.metadata.name === name);
  const rules = doc && doc.spec && doc.spec[direction];
  return rules ? { selector: doc.spec.selector, rule: rules[Number(index)] } : null;
}

function countsLine(edge) {
  const side = edge.countedFrom === "callee" ? endName(edge.destination) : endName(edge.source);
  return el(
    "p",
    { class: "hint", id: "edge-counting" },
    `Each request counted once, as ${side} (the ${edge.countedFrom}) decided it: `,
    `${edge.reports.caller} report(s) from the caller, ${edge.reports.callee} from the callee.`,
  );
}

function flowRow(f, edge) {
  const callee = f.direction === "ingress";
  return el(
    "tr",
    { class: `edge-flow ${callee ? "callee" : "caller"}` },
    el("td", {}, time(f.time)),
    el("td", { class: "mono" }, f.http ? `${f.http.method} ${f.http.path}` : f.protocol.toUpperCase()),
    el("td", {}, callee ? `${endName(edge.destination)} (callee)` : `${endName(edge.source)} (caller)`),
    el("td", {}, verdictBadge(f)),
    el("td", { class: "mono", title: f.reason }, f.policy || "default"),
  );
}

export async function showEdge(edge, onPick) {
  state.selectedEdge = edge.id;
  const details = document.getElementById("details");
  const deciding = decidingRule(edge.lastPolicy);
  const flowsBody = el("tbody", {}, el("tr", {}, el("td", { colspan: 5 }, "loading…")));
  const picked = state.picked.has(edge.id);
  setChildren(
    details,
    el("h2", {}, `${endName(edge.source)} → ${endName(edge.destination)} :${edge.port}`),
    el("div", { class: "endpoint" }, edge.source.id),
    el("div", { class: "endpoint" }, "→ ", edge.destination.id),
    el(
      "button",
      { type: "button", id: "pick-edge", onclick: () => onPick(edge) },
      picked ? "Remove from suggestion" : "Pick for a suggested policy",
    ),
    el("h3", {}, "Requests"),
    el(
      "div",
      { class: "counts" },
      el("span", { class: "badge allow" }, `${edge.allowed} allowed`),
      el("span", { class: "badge deny" }, `${edge.denied} denied`),
      el("span", { class: "badge would-deny" }, `${edge.wouldDeny} would deny`),
      el(
        "span",
        { class: "badge neutral", id: "edge-tls" },
        edge.plaintext === 0 ? "mTLS encrypted" : `${edge.plaintext} not encrypted`,
      ),
    ),
    countsLine(edge),
    el("h3", {}, "Deciding policy (latest request)"),
    el("div", { id: "edge-policy" }, el("b", {}, edge.lastPolicy || "default"), " — ", edge.lastReason),
    deciding
      ? el(
          "pre",
          { class: "rule" },
          `selector: ${JSON.stringify(deciding.selector)}\nrule: ${JSON.stringify(deciding.rule, null, 1).replace(/\n\s*/g, " ")}`,
        )
      : null,
    el("h3", {}, "Recent reports"),
    el(
      "table",
      { id: "edge-flows" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ["time", "request", "decided by", "verdict", "policy"].map((h) => el("th", {}, h)),
        ),
      ),
      flowsBody,
    ),
  );
  try {
    const { flows } = await getJson(`/api/flows?limit=50&edge=${encodeURIComponent(edge.id)}`);
    if (state.selectedEdge !== edge.id) return;
    flowsBody.replaceChildren(...flows.reverse().map((f) => flowRow(f, edge)));
  } catch (err) {
    flowsBody.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "error" }, err.message)));
  }
}

export function showNode(n) {
  state.selectedEdge = null;
  setChildren(
    document.getElementById("details"),
    el("h2", {}, endName(n)),
    el("div", { class: "endpoint" }, n.spiffeId || n.address || n.id),
    el("h3", {}, "Labels"),
    el("div", {}, labelChips(n.labels)),
    n.mode
      ? [
          el("h3", {}, "Enforcement mode"),
          el("div", {}, el("b", {}, n.mode.mode), ` (set at ${n.mode.from} level)`),
        ]
      : null,
  );
}
