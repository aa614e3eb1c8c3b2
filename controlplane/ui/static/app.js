/* global document, window, EventSource, URLSearchParams, cytoscape */
// Sigil's web UI: dependency map (cytoscape), flow table, policies and modes, live over SSE.
// Every value that came from traffic (paths, labels, ids) is inserted as text, never as markup.

const COLORS = { allowed: "#2f9e57", denied: "#d23f3f", mixed: "#e08a1e", "would-deny": "#8a5cf0" };

const state = { graph: { nodes: [], edges: [] }, policies: [], selectedEdge: null, source: null };

function toNodes(children) {
  return children
    .flat(Infinity)
    .filter((c) => c !== undefined && c !== null && c !== false)
    .map((c) => (c instanceof window.Node ? c : document.createTextNode(String(c))));
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  node.append(...toNodes(children));
  return node;
}

/** Replaces a node's children, with el()'s handling of nested lists and empty values. */
function setChildren(node, ...children) {
  node.replaceChildren(...toNodes(children));
}

// ---- session ----

// Sent on every request: the server refuses a cookie-authenticated change without it, and no
// cross-site page can add it.
const CSRF_HEADERS = { "x-sigil-request": "1" };

async function getJson(url, init = {}) {
  const res = await window.fetch(url, {
    ...init,
    credentials: "same-origin",
    headers: { ...CSRF_HEADERS, ...init.headers },
  });
  const body = await res.json().catch(() => ({}));
  if (res.status === 401) {
    showSignIn(body.error || "Sign in to continue.");
    throw new Error(body.error || "not signed in");
  }
  if (!res.ok) throw new Error(body.error || `${res.status} ${res.statusText}`);
  return body;
}

function showSignIn(message) {
  if (state.source) state.source.close();
  state.source = null;
  document.getElementById("sign-in-error").textContent = message;
  document.getElementById("sign-in-panel").hidden = false;
  document.getElementById("sign-out").hidden = true;
  document.querySelector("#sign-in input[name=token]").focus();
}

function shortId(id) {
  if (!id) return "?";
  if (id.startsWith("external:")) return id.slice("external:".length);
  if (id.startsWith("user:")) return id.slice(id.lastIndexOf("#") + 1);
  const m = /^spiffe:\/\/[^/]+\/(?:ns\/([^/]+)\/sa\/([^/]+)|(.*))$/.exec(id);
  if (!m) return id;
  return m[2] ? `${m[2]}.${m[1]}` : m[3];
}

function endName(end) {
  const app = end.labels && (end.labels.app || end.labels["app.kubernetes.io/name"]);
  return app || shortId(end.spiffeId || end.id || (end.address ? `external:${end.address}` : ""));
}

function verdictBadge(r) {
  if (r.verdict === "deny") return el("span", { class: "badge deny" }, "denied");
  if (r.wouldDeny) return el("span", { class: "badge would-deny" }, "would deny");
  return el("span", { class: "badge allow" }, "allowed");
}

function time(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// ---- graph ----

const cy = cytoscape({
  container: document.getElementById("graph"),
  wheelSensitivity: 0.25,
  minZoom: 0.3,
  maxZoom: 2.5,
  style: [
    {
      selector: "node",
      style: {
        shape: "round-rectangle",
        "background-color": "#eaf1fb",
        "border-color": "#3d659c",
        "border-width": 1.5,
        label: "data(label)",
        "text-valign": "center",
        "text-halign": "center",
        "font-size": 13,
        "font-weight": 600,
        color: "#1d2a3d",
        width: "label",
        height: 34,
        "padding-left": 14,
        "padding-right": 14,
      },
    },
    {
      selector: "node.observe",
      style: { "border-color": COLORS["would-deny"], "border-style": "dashed", "border-width": 2 },
    },
    {
      selector: "node.external",
      style: { "background-color": "#f3f3f3", "border-color": "#9aa3b0", shape: "ellipse" },
    },
    {
      selector: ":parent",
      style: {
        shape: "round-rectangle",
        "background-color": "#f6f8fb",
        "background-opacity": 1,
        "border-color": "#c9d1dd",
        "border-width": 1,
        label: "data(label)",
        "text-valign": "top",
        "text-halign": "center",
        "text-margin-y": -4,
        "font-size": 12,
        "font-weight": 500,
        color: "#637083",
        padding: 22,
      },
    },
    {
      selector: "edge",
      style: {
        width: 2.5,
        "curve-style": "bezier",
        "target-arrow-shape": "triangle",
        "arrow-scale": 1.1,
        "line-color": "data(color)",
        "target-arrow-color": "data(color)",
        label: "data(label)",
        "font-size": 11,
        color: "#3c4658",
        "text-background-color": "#ffffff",
        "text-background-opacity": 0.92,
        "text-background-padding": 2,
        "text-events": "yes",
      },
    },
    { selector: "edge.plaintext", style: { "line-style": "dashed", "line-dash-pattern": [7, 4] } },
    { selector: "edge.would-deny", style: { "line-style": "dotted", width: 3 } },
    { selector: "edge:selected", style: { width: 5, "overlay-color": "#2f5d9c", "overlay-opacity": 0.12 } },
    { selector: "node:selected", style: { "border-width": 3 } },
  ],
});
window.sigil = { cy };

function groupId(node) {
  if (node.user) return "group:people";
  if (node.external) return "group:external";
  return node.namespace ? `ns:${node.namespace}` : "group:mesh";
}

function elementsFor(graph) {
  const elements = [];
  const groups = new Map();
  const apps = new Map();
  for (const n of graph.nodes) {
    const g = groupId(n);
    if (!groups.has(g)) {
      const label = n.user
        ? "people"
        : n.external
          ? "outside the mesh"
          : n.namespace
            ? `namespace ${n.namespace}`
            : "mesh";
      groups.set(g, { data: { id: g, label }, classes: "group" });
    }
    if (n.app) {
      const key = `${g}/app:${n.app}`;
      apps.set(key, (apps.get(key) || 0) + 1);
    }
  }
  elements.push(...groups.values());
  for (const [key, count] of apps) {
    // Several identities of one app are grouped in a compound node of their own.
    if (count > 1)
      elements.push({
        data: { id: key, parent: key.split("/app:")[0], label: `app ${key.split("/app:")[1]}` },
      });
  }
  for (const n of graph.nodes) {
    const g = groupId(n);
    const appKey = n.app ? `${g}/app:${n.app}` : null;
    const parent = appKey && apps.get(appKey) > 1 ? appKey : g;
    const observe = n.mode && n.mode.mode === "observe";
    const label =
      (appKey && apps.get(appKey) > 1 ? shortId(n.spiffeId) : endName(n)) + (observe ? "  (observe)" : "");
    elements.push({
      data: { id: n.id, parent, label, node: n },
      classes: [n.external ? "external" : "", observe ? "observe" : ""].join(" ").trim(),
    });
  }
  for (const e of graph.edges) {
    const encrypted = e.plaintext === 0;
    const parts = [`:${e.port}`, encrypted ? "mTLS" : "plaintext"];
    if (e.denied > 0) parts.push(`${e.denied} denied`);
    if (e.wouldDeny > 0) parts.push(`${e.wouldDeny} would deny`);
    if (e.allowed > 0) parts.push(`${e.allowed} allowed`);
    elements.push({
      data: {
        id: e.id,
        source: e.source.id,
        target: e.destination.id,
        label: parts.join(" · "),
        color: COLORS[e.status],
        edge: e,
      },
      classes: [e.status, encrypted ? "encrypted" : "plaintext"].join(" "),
    });
  }
  return elements;
}

let layoutKey = "";

function renderGraph(graph) {
  state.graph = graph;
  const elements = elementsFor(graph);
  const key = elements
    .filter((x) => !x.data.source)
    .map((x) => `${x.data.id}>${x.data.parent || ""}`)
    .sort()
    .join("|");
  const structural = key !== layoutKey;
  cy.batch(() => {
    if (structural) {
      cy.elements().remove();
      cy.add(elements);
    } else {
      for (const x of elements) {
        const existing = cy.getElementById(x.data.id);
        if (existing.nonempty()) {
          existing.data(x.data);
          existing.classes(x.classes || "");
        } else cy.add(x);
      }
    }
  });
  document.getElementById("graph-empty").hidden = graph.nodes.length > 0;
  if (structural) {
    layoutKey = key;
    // Callers on the left, callees to the right: breadth-first from the workloads nobody calls.
    const leaves = cy.nodes().filter((n) => n.isChildless());
    const roots = leaves.filter((n) => n.incomers("edge").length === 0);
    const layout = leaves.union(cy.edges()).layout({
      name: "breadthfirst",
      directed: true,
      roots: roots.nonempty() ? roots : leaves.first(),
      avoidOverlap: true,
      nodeDimensionsIncludeLabels: true,
      spacingFactor: 1.1,
      padding: 30,
      animate: false,
      transform: (_node, pos) => ({ x: pos.y * 2.2, y: pos.x * 0.8 }),
    });
    layout.one("layoutstop", () => {
      cy.fit(undefined, 50);
      if (cy.zoom() > 1.3) {
        cy.zoom(1.3);
        cy.center();
      }
      document.body.dataset.graphReady = "1";
    });
    layout.run();
  }
  if (state.selectedEdge) {
    const still = cy.getElementById(state.selectedEdge);
    if (still.nonempty()) still.select();
  }
  renderSummary(graph);
}

function renderSummary(graph) {
  const totals = graph.edges.reduce(
    (t, e) => ({
      allowed: t.allowed + e.allowed,
      denied: t.denied + e.denied,
      wouldDeny: t.wouldDeny + e.wouldDeny,
    }),
    { allowed: 0, denied: 0, wouldDeny: 0 },
  );
  const box = document.getElementById("summary");
  box.replaceChildren(
    el("b", {}, graph.nodes.length),
    " workloads · ",
    el("b", {}, graph.edges.length),
    " connections · ",
    el("b", {}, totals.allowed),
    " allowed · ",
    el("b", {}, totals.denied),
    " denied · ",
    el("b", {}, totals.wouldDeny),
    " would deny",
  );
}

cy.on("tap", "edge", (evt) => showEdge(evt.target.data("edge")));
cy.on("tap", "node", (evt) => {
  const n = evt.target.data("node");
  if (n) showNode(n);
});

function labelChips(labels) {
  return Object.entries(labels || {}).map(([k, v]) => el("span", { class: "label" }, `${k}=${v}`));
}

/** The rule a rule id (`<policy>/<ingress|egress>/<index>`) names, from the policies in force. */
function decidingRule(ruleId) {
  if (!ruleId) return null;
  const [name, direction, index] = ruleId.split("/");
  const doc = state.policies.find((p) => p.metadata && p.metadata.name === name);
  const rules = doc && doc.spec && doc.spec[direction];
  return rules ? { selector: doc.spec.selector, rule: rules[Number(index)] } : null;
}

async function showEdge(edge) {
  state.selectedEdge = edge.id;
  const details = document.getElementById("details");
  const deciding = decidingRule(edge.lastPolicy);
  const flowsBody = el("tbody", {}, el("tr", {}, el("td", { colspan: 4 }, "loading…")));
  setChildren(
    details,
    el("h2", {}, `${endName(edge.source)} → ${endName(edge.destination)} :${edge.port}`),
    el("div", { class: "endpoint" }, edge.source.id),
    el("div", { class: "endpoint" }, "→ ", edge.destination.id),
    el("h3", {}, "Decisions"),
    el(
      "div",
      { class: "counts" },
      el("span", { class: "badge allow" }, `${edge.allowed} allowed`),
      el("span", { class: "badge deny" }, `${edge.denied} denied`),
      el("span", { class: "badge would-deny" }, `${edge.wouldDeny} would deny`),
      el(
        "span",
        { class: "badge neutral" },
        edge.plaintext === 0 ? "mTLS encrypted" : `${edge.plaintext} not encrypted`,
      ),
    ),
    el("h3", {}, "Deciding policy (latest)"),
    el(
      "div",
      { id: "edge-policy" },
      edge.lastPolicy ? el("b", {}, edge.lastPolicy) : el("b", {}, "default"),
      " — ",
      edge.lastReason,
    ),
    deciding
      ? el(
          "pre",
          { class: "rule" },
          `selector: ${JSON.stringify(deciding.selector)}\nrule: ${JSON.stringify(deciding.rule, null, 1).replace(/\n\s*/g, " ")}`,
        )
      : null,
    Object.keys(edge.methods).length
      ? [
          el("h3", {}, "Requests seen"),
          el(
            "div",
            {},
            Object.entries(edge.methods).map(([m, n]) => el("span", { class: "label" }, `${m} ×${n}`)),
          ),
          el(
            "div",
            {},
            Object.keys(edge.paths)
              .sort()
              .map((p) => el("span", { class: "label" }, p)),
          ),
        ]
      : null,
    el("h3", {}, "Recent flows"),
    el(
      "table",
      { id: "edge-flows" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", {}, "time"),
          el("th", {}, "request"),
          el("th", {}, "verdict"),
          el("th", {}, "policy"),
        ),
      ),
      flowsBody,
    ),
  );
  try {
    const { flows } = await getJson(`/api/flows?limit=50&edge=${encodeURIComponent(edge.id)}`);
    if (state.selectedEdge !== edge.id) return;
    flowsBody.replaceChildren(
      ...flows
        .reverse()
        .map((f) =>
          el(
            "tr",
            { class: "edge-flow" },
            el("td", {}, time(f.time)),
            el(
              "td",
              { class: "mono" },
              f.http ? `${f.http.method} ${f.http.path}` : f.protocol.toUpperCase(),
            ),
            el("td", {}, verdictBadge(f)),
            el("td", { class: "mono" }, f.policy || "default"),
          ),
        ),
    );
  } catch (err) {
    flowsBody.replaceChildren(el("tr", {}, el("td", { colspan: 4, class: "error" }, err.message)));
  }
}

function showNode(n) {
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

// ---- flows table ----

const tbody = document.querySelector("#flow-table tbody");
const MAX_ROWS = 500;

function flowRow(f, fresh) {
  return el(
    "tr",
    { class: fresh ? "fresh" : "" },
    el("td", {}, time(f.time)),
    el("td", { title: f.source.spiffeId || f.source.address || "" }, endName(f.source)),
    el("td", { title: f.destination.spiffeId || f.destination.address || "" }, endName(f.destination)),
    el("td", {}, f.port),
    el("td", { class: "mono" }, f.http ? `${f.http.method} ${f.http.path}` : f.protocol.toUpperCase()),
    el("td", {}, verdictBadge(f)),
    el("td", { class: "mono", title: f.reason }, f.policy || "default"),
    el("td", {}, f.encrypted ? "yes" : "no"),
    el("td", {}, `${f.direction} · ${f.reporter.kind}`),
  );
}

function filterQuery() {
  const form = document.getElementById("flow-filters");
  const q = new URLSearchParams();
  if (form.denied.checked) q.set("denied", "true");
  if (form.selector.value.trim()) q.set("selector", form.selector.value.trim());
  if (form.since.value.trim()) q.set("since", form.since.value.trim());
  return q;
}

async function loadFlows() {
  const q = filterQuery();
  q.set("limit", "200");
  const errorBox = document.getElementById("filter-error");
  try {
    const { flows } = await getJson(`/api/flows?${q}`);
    errorBox.textContent = "";
    tbody.replaceChildren(...flows.reverse().map((f) => flowRow(f, false)));
    follow(q);
  } catch (err) {
    errorBox.textContent = err.message;
  }
}

let graphTimer = null;
function scheduleGraph() {
  if (graphTimer) return;
  graphTimer = window.setTimeout(async () => {
    graphTimer = null;
    renderGraph(await getJson("/api/graph"));
  }, 500);
}

function follow(q) {
  if (state.source) state.source.close();
  const live = new URLSearchParams(q);
  live.set("follow", "1");
  live.set("since", String(Date.now()));
  const source = new EventSource(`/api/flows?${live}`);
  state.source = source;
  const indicator = document.getElementById("live-state");
  source.onopen = () => {
    indicator.textContent = "live";
    indicator.className = "live on";
  };
  source.onerror = () => {
    indicator.textContent = "reconnecting…";
    indicator.className = "live off";
    // A refused stream is not retried by the browser: find out whether the session ended.
    if (source.readyState === EventSource.CLOSED) getJson("/api/session").catch(() => undefined);
  };
  source.addEventListener("flow", (evt) => {
    const f = JSON.parse(evt.data);
    tbody.prepend(flowRow(f, true));
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
    scheduleGraph();
  });
}

document.getElementById("flow-filters").addEventListener("submit", (evt) => {
  evt.preventDefault();
  loadFlows();
});

// ---- policies and modes ----

async function loadPolicies() {
  const { policies } = await getJson("/api/policies");
  state.policies = policies;
  const panel = document.getElementById("tab-policies");
  if (policies.length === 0) {
    panel.replaceChildren(
      el("p", { class: "hint" }, "No policies loaded: in enforce mode every ingress connection is denied."),
    );
    return;
  }
  panel.replaceChildren(
    ...policies.map((p) =>
      el(
        "div",
        { class: "policy-card" },
        el("h4", {}, `${p.kind} ${p.metadata.name}`),
        el("pre", {}, JSON.stringify(p.spec, null, 2)),
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

for (const tab of document.querySelectorAll("[role=tab]")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll("[role=tab]")) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      document.getElementById(`tab-${t.dataset.tab}`).hidden = !on;
    }
    if (tab.dataset.tab === "policies") loadPolicies();
    if (tab.dataset.tab === "modes") loadModes();
  });
}

async function start() {
  try {
    await getJson("/api/session");
  } catch {
    return;
  }
  document.getElementById("sign-in-panel").hidden = true;
  document.getElementById("sign-out").hidden = false;
  await loadPolicies().catch(() => undefined);
  renderGraph(await getJson("/api/graph"));
  await loadFlows();
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
