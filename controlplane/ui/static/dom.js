/* global document, window */
// Building the page from values that came from traffic (paths, labels, ids): always as text nodes,
// never as markup.

function toNodes(children) {
  return children
    .flat(Infinity)
    .filter((c) => c !== undefined && c !== null && c !== false)
    .map((c) => (c instanceof window.Node ? c : document.createTextNode(String(c))));
}

export function el(tag, attrs, ...children) {
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
export function setChildren(node, ...children) {
  node.replaceChildren(...toNodes(children));
}

export function shortId(id) {
  if (!id) return "?";
  if (id.startsWith("external:")) return id.slice("external:".length);
  if (id.startsWith("user:")) return id.slice(id.lastIndexOf("#") + 1);
  const m = /^spiffe:\/\/[^/]+\/(?:ns\/([^/]+)\/sa\/([^/]+)|(.*))$/.exec(id);
  if (!m) return id;
  return m[2] ? `${m[2]}.${m[1]}` : m[3];
}

export function endName(end) {
  const app = end.labels && (end.labels.app || end.labels["app.kubernetes.io/name"]);
  return app || shortId(end.spiffeId || end.id || (end.address ? `external:${end.address}` : ""));
}

export function verdictBadge(r) {
  if (r.verdict === "deny") return el("span", { class: "badge deny" }, "denied");
  if (r.wouldDeny) return el("span", { class: "badge would-deny" }, "would deny");
  return el("span", { class: "badge allow" }, "allowed");
}

export function time(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

export function labelChips(labels) {
  return Object.entries(labels || {}).map(([k, v]) => el("span", { class: "label" }, `${k}=${v}`));
}
