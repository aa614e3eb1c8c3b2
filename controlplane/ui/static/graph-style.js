// The map's look: cytoscape's stylesheet. Colours match style.css.

export const COLORS = { allowed: "#2f9e57", denied: "#d23f3f", mixed: "#e08a1e", "would-deny": "#8a5cf0" };

export const GRAPH_STYLE = [
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
      // Parallel edges (one port each) far enough apart that their labels do not meet.
      "control-point-step-size": 56,
      "target-arrow-shape": "triangle",
      "arrow-scale": 1.1,
      "line-color": "data(color)",
      "target-arrow-color": "data(color)",
      label: "data(label)",
      "font-size": 11,
      color: "#3c4658",
      "text-background-color": "#ffffff",
      "text-background-opacity": 0.95,
      "text-background-padding": 3,
      "text-margin-y": "data(dy)",
      "text-events": "yes",
    },
  },
  { selector: "edge.plaintext", style: { "line-style": "dashed", "line-dash-pattern": [7, 4] } },
  { selector: "edge.would-deny", style: { "line-style": "dotted", width: 3 } },
  {
    selector: "edge.picked",
    style: { "underlay-color": "#2f5d9c", "underlay-opacity": 0.25, "underlay-padding": 6 },
  },
  { selector: "edge:selected", style: { width: 5, "overlay-color": "#2f5d9c", "overlay-opacity": 0.12 } },
  { selector: "node:selected", style: { "border-width": 3 } },
];
