/* global document, window, cytoscape */
// The dependency map: workloads grouped by namespace (and by app when an app has several
// identities), one edge per caller, callee and port, each request counted once by the server.
import { endName, shortId } from "./dom.js";
import { COLORS, GRAPH_STYLE } from "./graph-style.js";
import { separateLabels, trackLocks } from "./graph-labels.js";

export const cy = cytoscape({
  container: document.getElementById("graph"),
  wheelSensitivity: 0.25,
  minZoom: 0.3,
  maxZoom: 2.5,
  style: GRAPH_STYLE,
});
window.sigil = { cy };
trackLocks(cy, document.getElementById("edge-locks"));

function groupId(node) {
  if (node.user) return "group:people";
  if (node.external) return "group:external";
  return node.namespace ? `ns:${node.namespace}` : "group:mesh";
}

function groupLabel(n) {
  if (n.user) return "people";
  if (n.external) return "outside the mesh";
  return n.namespace ? `namespace ${n.namespace}` : "mesh";
}

/** `:8080 · 6 allowed · 2 denied`: the lock beside it says the hop is encrypted. */
function edgeLabel(e) {
  const parts = [`:${e.port}`];
  if (e.allowed > 0) parts.push(`${e.allowed} allowed`);
  if (e.wouldDeny > 0) parts.push(`${e.wouldDeny} would deny`);
  if (e.denied > 0) parts.push(`${e.denied} denied`);
  if (e.plaintext > 0) parts.push("plaintext");
  return parts.join(" · ");
}

function elementsFor(graph, picked) {
  const elements = [];
  const groups = new Map();
  const apps = new Map();
  for (const n of graph.nodes) {
    const g = groupId(n);
    if (!groups.has(g)) groups.set(g, { data: { id: g, label: groupLabel(n) }, classes: "group" });
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
    elements.push({
      data: {
        id: e.id,
        source: e.source.id,
        target: e.destination.id,
        label: edgeLabel(e),
        color: COLORS[e.status],
        dy: 0,
        edge: e,
      },
      classes: [e.status, encrypted ? "encrypted" : "plaintext", picked.has(e.id) ? "picked" : ""]
        .join(" ")
        .trim(),
    });
  }
  return elements;
}

let layoutKey = "";

function runLayout() {
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
    transform: (_node, pos) => ({ x: pos.y * 2.6, y: pos.x * 0.9 }),
  });
  layout.one("layoutstop", () => {
    separateLabels(cy);
    cy.fit(undefined, 50);
    if (cy.zoom() > 1.3) {
      cy.zoom(1.3);
      cy.center();
    }
    document.body.dataset.graphReady = "1";
  });
  layout.run();
}

/** Draws the graph; lays it out again only when its workloads changed. */
export function renderGraph(graph, { selectedEdge, picked }) {
  const elements = elementsFor(graph, picked);
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
          existing.data({ ...x.data, dy: existing.data("dy") || 0 });
          existing.classes(x.classes || "");
        } else cy.add(x);
      }
    }
  });
  document.getElementById("graph-empty").hidden = graph.nodes.length > 0;
  if (structural) {
    layoutKey = key;
    runLayout();
  } else separateLabels(cy);
  if (selectedEdge) {
    const still = cy.getElementById(selectedEdge);
    if (still.nonempty()) still.select();
  }
}

export function markPicked(picked) {
  cy.edges().forEach((e) => {
    if (picked.has(e.id())) e.addClass("picked");
    else e.removeClass("picked");
  });
}
