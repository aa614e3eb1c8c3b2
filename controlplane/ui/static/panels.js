/* global document */
// The bottom tabs: policies in force and enforcement modes.
import { getJson } from "./api.js";
import { el, setChildren } from "./dom.js";
import { state } from "./state.js";

/** The policy files as they are written (comments, order, anchors), each with what it defines. */
export async function loadPolicies() {
  const [{ policies }, { files }] = await Promise.all([
    getJson("/api/policies"),
    getJson("/api/policy/files"),
  ]);
  state.policies = policies;
  const panel = document.getElementById("tab-policies");
  if (files.length === 0) {
    panel.replaceChildren(
      el("p", { class: "hint" }, "No policies loaded: in enforce mode every ingress connection is denied."),
    );
    return;
  }
  panel.replaceChildren(
    ...files.map((f) =>
      el(
        "div",
        { class: "policy-card" },
        el("h4", {}, f.name),
        el("p", { class: "hint" }, f.policies.map((p) => `${p.kind} ${p.name}`).join(", ")),
        f.errors.map((e) => el("p", { class: "policy-error" }, e)),
        el("pre", { class: "policy-yaml" }, f.yaml),
      ),
    ),
  );
}

async function loadModes() {
  const { settings, workloads } = await getJson("/api/mode");
  const panel = document.getElementById("tab-modes");
  setChildren(
    panel,
    el("p", {}, "Mesh-wide: ", el("b", {}, settings.mesh)),
    el(
      "p",
      {},
      "Namespaces: ",
      Object.entries(settings.namespaces).map(([k, v]) => el("span", { class: "label" }, `${k}: ${v}`)),
    ),
    el(
      "table",
      {},
      el(
        "thead",
        {},
        el("tr", {}, el("th", {}, "workload"), el("th", {}, "mode"), el("th", {}, "decided by")),
      ),
      el(
        "tbody",
        {},
        workloads.map((w) =>
          el("tr", {}, el("td", { class: "mono" }, w.spiffeId), el("td", {}, w.mode), el("td", {}, w.from)),
        ),
      ),
    ),
  );
}

export function showTab(name) {
  for (const t of document.querySelectorAll("[role=tab]")) {
    const on = t.dataset.tab === name;
    t.setAttribute("aria-selected", String(on));
    document.getElementById(`tab-${t.dataset.tab}`).hidden = !on;
  }
  if (name === "policies") loadPolicies();
  if (name === "modes") loadModes();
}

export function wireTabs() {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => showTab(tab.dataset.tab));
  }
}
