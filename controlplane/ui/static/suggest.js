/* global document, URLSearchParams, window */
// "Suggest": from edges picked on the map, the suggested policy YAML (the server's `policy
// suggest`), edited here, simulated against the recorded flows (`policy simulate`) and applied as
// one policy file (PUT /api/policy/files/:name).
import { CSRF_HEADERS, getJson, postJson } from "./api.js";
import { el, endName, setChildren } from "./dom.js";
import { state } from "./state.js";

const panel = () => document.getElementById("tab-suggest");
const field = (name) => panel().querySelector(`[name=${name}]`);

function pickedList() {
  const byId = new Map(state.graph.edges.map((e) => [e.id, e]));
  return [...state.picked].map((id) => {
    const e = byId.get(id);
    const text = e ? `${endName(e.source)} → ${endName(e.destination)} :${e.port}` : id;
    return el("li", { class: "picked-edge", "data-edge": id }, text);
  });
}

/** Redraws the list of picked edges, keeping whatever YAML is being edited. */
export function renderPicked() {
  setChildren(
    document.getElementById("picked-edges"),
    state.picked.size === 0
      ? el("li", { class: "hint" }, "Pick edges on the map (click one, then “Pick for a suggested policy”).")
      : pickedList(),
  );
  document.getElementById("suggest-run").disabled = state.picked.size === 0;
}

function say(id, ...children) {
  setChildren(document.getElementById(id), ...children);
}

async function suggest() {
  const q = new URLSearchParams({ since: field("since").value.trim() || "1h" });
  for (const id of state.picked) q.append("edge", id);
  say("suggest-status", "suggesting…");
  try {
    const { yaml, summary } = await getJson(`/api/policy/suggest?${q}`);
    field("yaml").value = yaml;
    say(
      "suggest-status",
      yaml
        ? `From ${summary.used} of ${summary.flows} reports (the callees' decisions; ${summary.callerReports} caller reports and ${summary.deniedInEnforce} refusals left out).`
        : "Nothing to suggest: the callees allowed none of these requests.",
    );
    say("simulate-result");
  } catch (err) {
    say("suggest-status", el("span", { class: "error" }, err.message));
  }
}

async function simulate() {
  say("simulate-result", "simulating…");
  try {
    const r = await postJson("/api/policy/simulate", {
      yaml: field("yaml").value,
      file: field("file").value.trim() || "suggested.yaml",
      since: field("since").value.trim() || "1h",
    });
    say(
      "simulate-result",
      el(
        "p",
        { id: "simulate-summary" },
        `${r.evaluated} recorded flows: ${r.unchanged} unchanged, ${r.nowDenied} would now be denied, ${r.nowAllowed} would now be allowed`,
      ),
      el(
        "ul",
        {},
        r.changes.map((c) =>
          el(
            "li",
            { class: "mono" },
            `${endName(c.source)} → ${endName(c.destination)} :${c.port} ${c.method ? `${c.method} ${c.path} ` : ""}(${c.direction}) `,
            `${c.before.verdict} → ${c.after.verdict} ×${c.count}: ${c.after.reason}`,
          ),
        ),
      ),
    );
  } catch (err) {
    say(
      "simulate-result",
      el("span", { class: "error" }, err.message),
      el("pre", {}, (err.details || []).join("\n")),
    );
  }
}

async function apply(onApplied) {
  const name = field("file").value.trim();
  say("apply-result", "applying…");
  try {
    const res = await window.fetch(`/api/policy/files/${encodeURIComponent(name)}`, {
      method: "PUT",
      credentials: "same-origin",
      headers: { ...CSRF_HEADERS, "content-type": "application/yaml" },
      body: field("yaml").value,
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || `${res.status} ${res.statusText}`);
    say(
      "apply-result",
      el("span", { id: "applied" }, `Applied ${body.name}: policy revision ${body.revision}.`),
    );
    await onApplied();
  } catch (err) {
    say("apply-result", el("span", { class: "error" }, err.message));
  }
}

export function wireSuggest({ onApplied, onPickedChanged }) {
  document.getElementById("suggest-run").addEventListener("click", suggest);
  document.getElementById("simulate-run").addEventListener("click", simulate);
  document.getElementById("apply-run").addEventListener("click", () => apply(onApplied));
  document.getElementById("picked-clear").addEventListener("click", () => {
    state.picked.clear();
    renderPicked();
    onPickedChanged();
  });
  renderPicked();
}
