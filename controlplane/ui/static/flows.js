/* global document, EventSource, URLSearchParams */
// The flow table: recent reports with filters, then every new one live over Server-Sent Events.
import { getJson } from "./api.js";
import { noteAnswer } from "./partial.js";
import { el, endName, time, verdictBadge } from "./dom.js";
import { state } from "./state.js";

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

/** Loads the table and follows new flows; `onFlow` runs for each live one. */
export async function loadFlows(onFlow) {
  const q = filterQuery();
  q.set("limit", "200");
  const errorBox = document.getElementById("filter-error");
  try {
    const { flows } = await getJson(`/api/flows?${q}`);
    errorBox.textContent = "";
    tbody.replaceChildren(...flows.reverse().map((f) => flowRow(f, false)));
    follow(q, onFlow);
  } catch (err) {
    errorBox.textContent = err.message;
  }
}

function follow(q, onFlow) {
  if (state.source) state.source.close();
  const live = new URLSearchParams(q);
  live.set("follow", "1");
  live.set("since", String(Date.now()));
  const source = new EventSource(`/api/flows?${live}`);
  state.source = source;
  const indicator = document.getElementById("live-state");
  source.onopen = () => {
    // A replica still missing says so again right after the stream's backlog.
    noteAnswer("follow", null);
    indicator.textContent = "live";
    indicator.className = "live on";
  };
  source.onerror = () => {
    indicator.textContent = "reconnecting…";
    indicator.className = "live off";
    // A refused stream is not retried by the browser: find out whether the session ended.
    if (source.readyState === EventSource.CLOSED) getJson("/api/session").catch(() => undefined);
  };
  source.addEventListener("partial", (evt) => noteAnswer("follow", JSON.parse(evt.data)));
  source.addEventListener("flow", (evt) => {
    tbody.prepend(flowRow(JSON.parse(evt.data), true));
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
    onFlow();
  });
}

export function stopFollowing() {
  if (state.source) state.source.close();
  state.source = null;
}

export function onFilterSubmit(reload) {
  document.getElementById("flow-filters").addEventListener("submit", (evt) => {
    evt.preventDefault();
    reload();
  });
}
