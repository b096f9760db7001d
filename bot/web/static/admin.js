// The admin page: status, sources, the privacy budget, and the slots for models and training runs.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString() : "—";
  }

  function pairs(target, entries) {
    target.replaceChildren();
    for (const [name, value] of entries) target.append(el("dt", "", name), el("dd", "", value ?? "—"));
  }

  function status(s) {
    const last = s.last_ingest;
    pairs($("status-list"), [
      ["Documents", s.documents],
      ["Answers", s.answers === "model" ? `model ${s.answer_model || ""}`.trim() : "extractive (no model configured)"],
      ["Database", s.database],
      ["Last ingest", last ? `${last.status}, ${when(last.finished_at || last.started_at)} (${last.added} added, ${last.updated} updated, ${last.removed} removed)` : "never"],
    ]);
  }

  function sources(rows) {
    const body = $("sources-table").tBodies[0];
    body.replaceChildren(...rows.map((r) => {
      const tr = el("tr");
      tr.append(el("td", "", r.name), el("td", "num", r.documents), el("td", "", when(r.newest)),
        el("td", "", r.last_sync ? `${when(r.last_sync)} (${r.sync_status})` : "—"));
      return tr;
    }));
    if (!rows.length) {
      const tr = el("tr");
      tr.append(el("td", "meta", "No documents yet: run kb ingest."));
      body.append(tr);
    }
  }

  function budget(b) {
    if (b.error) {
      pairs($("budget-list"), [["Problem", b.error]]);
      return;
    }
    pairs($("budget-list"), [
      ["ε used / total", `${b.epsilon_used.toPrecision(4)} / ${b.epsilon_total}`],
      ["δ used / total", `${b.delta_used.toPrecision(3)} / ${b.delta_total}`],
      ["Runs", `${b.runs_settled} settled, ${b.runs_reserved} reserved`],
    ]);
    $("budget-summary").textContent = b.summary;
  }

  function slot(name, data) {
    const body = document.querySelector(`[data-slot="${name}"] .slot-body`);
    body.replaceChildren();
    if (!data || !data.available) {
      body.append(el("p", "meta", (data && data.note) || "Not available yet."));
      return;
    }
    const columns = data.columns || Object.keys(data.rows[0] || {});
    const table = el("table");
    const head = el("tr");
    head.append(...columns.map((c) => el("th", "", c)));
    const thead = el("thead");
    thead.append(head);
    table.append(thead);
    const tbody = el("tbody");
    tbody.append(...data.rows.map((row) => {
      const tr = el("tr");
      tr.append(...columns.map((c) => el("td", "", row[c])));
      return tr;
    }));
    table.append(tbody);
    const wrap = el("div", "table-wrap");
    wrap.append(table);
    body.append(wrap);
  }

  async function load() {
    const response = await fetch("/api/admin");
    const data = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
    if (!response.ok) {
      $("admin-error").textContent = data.error || `the server answered ${response.status}`;
      return;
    }
    status(data.status);
    sources(data.sources);
    budget(data.budget);
    slot("models", data.models);
    slot("training_runs", data.training_runs);
    document.body.dataset.ready = "true";
  }
  load();
})();
