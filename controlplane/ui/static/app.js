/* global document, window */
// Sigil's web UI: sign-in, then the dependency map, the flow table, policies and modes, and the
// suggested-policy workflow, live over Server-Sent Events. The modules beside this one each do one
// of these; this one wires them together.
import { CSRF_HEADERS, getJson, whenSignedOut } from "./api.js";
import { showEdge, showNode } from "./details.js";
import { loadFlows, onFilterSubmit, stopFollowing } from "./flows.js";
import { cy, markPicked, renderGraph } from "./graph.js";
import { loadPolicies, showTab, wireTabs } from "./panels.js";
import { state } from "./state.js";
import { renderPicked, wireSuggest } from "./suggest.js";

function showSignIn(message) {
  stopFollowing();
  document.getElementById("sign-in-error").textContent = message;
  document.getElementById("sign-in-panel").hidden = false;
  document.getElementById("sign-out").hidden = true;
  document.querySelector("#sign-in input[name=token]").focus();
}
whenSignedOut(showSignIn);

function renderSummary(graph) {
  const totals = graph.edges.reduce(
    (t, e) => ({
      allowed: t.allowed + e.allowed,
      denied: t.denied + e.denied,
      wouldDeny: t.wouldDeny + e.wouldDeny,
    }),
    { allowed: 0, denied: 0, wouldDeny: 0 },
  );
  const b = (n) => {
    const node = document.createElement("b");
    node.textContent = String(n);
    return node;
  };
  document
    .getElementById("summary")
    .replaceChildren(
      b(graph.nodes.length),
      " workloads · ",
      b(graph.edges.length),
      " connections · ",
      b(totals.allowed),
      " requests allowed · ",
      b(totals.denied),
      " denied · ",
      b(totals.wouldDeny),
      " would deny",
    );
}

async function refreshGraph() {
  const graph = await getJson("/api/graph");
  state.graph = graph;
  renderGraph(graph, state);
  renderSummary(graph);
  renderPicked();
}

let graphTimer = null;
function scheduleGraph() {
  if (graphTimer) return;
  graphTimer = window.setTimeout(() => {
    graphTimer = null;
    refreshGraph().catch(() => undefined);
  }, 500);
}

function togglePick(edge) {
  if (state.picked.has(edge.id)) state.picked.delete(edge.id);
  else state.picked.add(edge.id);
  markPicked(state.picked);
  renderPicked();
  showEdge(edge, togglePick);
}

cy.on("tap", "edge", (evt) => showEdge(evt.target.data("edge"), togglePick));
cy.on("tap", "node", (evt) => {
  const n = evt.target.data("node");
  if (n) showNode(n);
});

wireTabs();
onFilterSubmit(() => loadFlows(scheduleGraph));
wireSuggest({
  onApplied: async () => {
    await loadPolicies();
    showTab("suggest");
  },
  onPickedChanged: () => markPicked(state.picked),
});

async function start() {
  try {
    await getJson("/api/session");
  } catch {
    return;
  }
  document.getElementById("sign-in-panel").hidden = true;
  document.getElementById("sign-out").hidden = false;
  await loadPolicies().catch(() => undefined);
  await refreshGraph();
  await loadFlows(scheduleGraph);
}

document.getElementById("sign-in").addEventListener("submit", async (evt) => {
  evt.preventDefault();
  const input = evt.target.token;
  const errorBox = document.getElementById("sign-in-error");
  try {
    const res = await window.fetch("/api/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { ...CSRF_HEADERS, "content-type": "application/json" },
      body: JSON.stringify({ token: input.value.trim() }),
    });
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      errorBox.textContent = body.error || `${res.status} ${res.statusText}`;
      return;
    }
  } catch (err) {
    errorBox.textContent = err.message;
    return;
  }
  input.value = "";
  errorBox.textContent = "";
  start();
});

document.getElementById("sign-out").addEventListener("click", async () => {
  await window
    .fetch("/api/session", { method: "DELETE", credentials: "same-origin", headers: CSRF_HEADERS })
    .catch(() => undefined);
  showSignIn("Signed out.");
});

start();
