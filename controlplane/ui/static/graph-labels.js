/* global document, window */
// Edge labels that never overlap each other or a workload, and a lock on every encrypted edge.

const GAP = 4;
const MAX_ROUNDS = 40;

/** Bounding-box options that measure an edge's own label and nothing else. */
const LABEL_ONLY = {
  includeNodes: false,
  includeEdges: false,
  includeLabels: true,
  includeMainLabels: true,
  includeSourceLabels: false,
  includeTargetLabels: false,
  includeOverlays: false,
};

function labelBox(edge) {
  return edge.boundingBox(LABEL_ONLY);
}

function overlap(a, b) {
  return a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2;
}

/**
 * Moves edge labels apart, in model coordinates: each label that meets an earlier label or a
 * workload is pushed below it (data `dy`, the label's vertical margin). Bounded: a crowded map
 * keeps its last placement rather than searching forever.
 */
export function separateLabels(cy) {
  const edges = cy.edges().sort((a, b) => (a.id() < b.id() ? -1 : 1));
  edges.forEach((e) => e.data("dy", 0));
  const nodes = cy.nodes().filter((n) => n.isChildless());
  for (let round = 0; round < MAX_ROUNDS; round++) {
    let moved = false;
    const placed = nodes.map((n) => n.boundingBox({ includeLabels: true }));
    edges.forEach((e) => {
      const box = labelBox(e);
      const hit = placed.find((p) => overlap(box, p));
      if (hit) {
        e.data("dy", e.data("dy") + (hit.y2 - box.y1) + GAP);
        moved = true;
        placed.push(labelBox(e));
      } else placed.push(box);
    });
    if (!moved) return true;
  }
  return false;
}

export function labelBoxes(cy) {
  return cy.edges().map((e) => ({ id: e.id(), ...labelBox(e) }));
}

const SVG = "http://www.w3.org/2000/svg";

function lockIcon() {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 12 14");
  svg.setAttribute("width", "11");
  svg.setAttribute("height", "13");
  const shackle = document.createElementNS(SVG, "path");
  shackle.setAttribute("d", "M3 6V4a3 3 0 0 1 6 0v2");
  shackle.setAttribute("fill", "none");
  shackle.setAttribute("stroke", "currentColor");
  shackle.setAttribute("stroke-width", "1.6");
  const body = document.createElementNS(SVG, "rect");
  body.setAttribute("x", "1");
  body.setAttribute("y", "6");
  body.setAttribute("width", "10");
  body.setAttribute("height", "7.5");
  body.setAttribute("rx", "1.5");
  body.setAttribute("fill", "currentColor");
  svg.append(shackle, body);
  return svg;
}

/**
 * Keeps a lock beside the label of every encrypted edge (mutual TLS all the way), in a layer over
 * the canvas that follows pans, zooms and drags.
 */
export function trackLocks(cy, layer) {
  let pending = false;
  const place = () => {
    pending = false;
    const locks = [];
    cy.edges(".encrypted").forEach((e) => {
      const box = e.renderedBoundingBox(LABEL_ONLY);
      const lock = document.createElement("span");
      lock.className = "edge-lock";
      lock.dataset.edge = e.id();
      lock.title = "mutual TLS";
      lock.style.left = `${box.x1 - 14}px`;
      lock.style.top = `${(box.y1 + box.y2) / 2 - 7}px`;
      lock.append(lockIcon());
      locks.push(lock);
    });
    layer.replaceChildren(...locks);
  };
  cy.on("render", () => {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(place);
  });
}
