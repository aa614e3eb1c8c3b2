// What the page knows, shared by its modules.
export const state = {
  graph: { nodes: [], edges: [] },
  policies: [],
  selectedEdge: null,
  /** Edge ids picked on the map for a suggested policy. */
  picked: new Set(),
  source: null,
};
