/* global document */
// With several control-plane replicas, an answer merged from their flows names the replicas that
// did not answer. The page says so under its header for as long as the latest answer of any view
// lacks one, so nobody reads a map or a flow table missing a replica's sidecars as the whole mesh.
import { el, setChildren } from "./dom.js";

/** View (the API path, or the live stream) → the replicas its latest answer lacks. */
const missing = new Map();

/** Records whether an answer of `view` was whole, and shows what the page lacks now. */
export function noteAnswer(view, body) {
  if (body && body.partial === true && Array.isArray(body.unanswered) && body.unanswered.length > 0) {
    missing.set(view, body.unanswered);
  } else {
    missing.delete(view);
  }
  render();
}

function render() {
  const byReplica = new Map();
  for (const list of missing.values()) for (const u of list) byReplica.set(u.replica, u);
  const box = document.getElementById("partial");
  box.hidden = byReplica.size === 0;
  setChildren(
    box,
    byReplica.size === 0
      ? []
      : [
          el("b", null, "Incomplete: "),
          "flows recorded by ",
          [...byReplica.values()].map((u, i) => [
            i > 0 ? ", " : "",
            el("span", { class: "replica", title: u.reason }, `replica ${u.replica} (${u.api}: ${u.reason})`),
          ]),
          " are missing from what is shown; it did not answer this control plane.",
        ],
  );
}
