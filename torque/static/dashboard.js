"use strict";
const TOKEN_KEY = "torque-token";
const REFRESH_MS = 2000;
const QUEUE_PAGE = 50;
// queueCursor: where the page of queues shown starts (null: the first page).
const state = { queue: null, offset: 0, limit: 20, task: null, shown: {},
                queueCursor: null, nextQueues: null };
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

class Unauthorized extends Error {}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

async function api(method, path, body) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) throw new Unauthorized("the API wants a token");
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(data && data.error ? data.error.message : response.statusText);
    error.status = response.status;
    throw error;
  }
  return data;
}

function ago(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return seconds + "s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m " + (seconds % 60) + "s";
  const [h, d] = [Math.floor(seconds / 3600), Math.floor(seconds / 86400)];
  if (seconds < 86400) return h + "h " + Math.floor(seconds % 3600 / 60) + "m";
  return d + "d " + Math.floor(seconds % 86400 / 3600) + "h";
}

function when(unix) {
  if (unix === null || unix === undefined) return "";
  const delta = unix - Date.now() / 1000;
  const text = delta >= 0 ? "in " + ago(delta) : ago(-delta) + " ago";
  return el("span", { title: new Date(unix * 1000).toLocaleString() }, text);
}

function flash(message, isError) {
  const node = $("flash");
  node.textContent = message;
  node.className = isError ? "error" : "";
}

function failed(error) {
  if (error instanceof Unauthorized) showLogin();
  else flash(error.message, true);
}

function showLogin() {
  $("app").hidden = true;
  $("login").hidden = false;
  $("signout").hidden = true;
  if (sessionStorage.getItem(TOKEN_KEY)) {
    $("login-error").textContent = "That token was refused.";
  }
  $("token").focus();
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = !sessionStorage.getItem(TOKEN_KEY);
}

function changed(key, value) {
  const text = JSON.stringify(value);
  if (state.shown[key] === text) return false;
  state.shown[key] = text;
  return true;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function chart(recent) {
  const width = 7, gap = 2, height = 30;
  const total = (m) => m.delivered + m.retried + m.dead;
  const max = Math.max(1, ...recent.map(total));
  const sum = recent.reduce((n, m) => n + m.delivered, 0);
  const node = svg("svg", { width: recent.length * (width + gap), height, class: "chart",
                            role: "img", "aria-label": sum + " delivered in 15 minutes" });
  recent.forEach((m, i) => {
    const x = i * (width + gap);
    let y = height;
    const label = new Date(m.at * 1000).toLocaleTimeString() + ": " + m.delivered +
      " delivered, " + m.retried + " retried, " + m.dead + " dead";
    if (!total(m)) {
      const rect = svg("rect", { x, y: height - 1, width, height: 1, class: "empty" });
      rect.append(svg("title", {}));
      rect.lastChild.textContent = label;
      node.append(rect);
      return;
    }
    for (const kind of ["delivered", "retried", "dead"]) {
      if (!m[kind]) continue;
      const h = Math.max(1, Math.round(m[kind] / max * (height - 1)));
      y -= h;
      const rect = svg("rect", { x, y, width, height: h, class: kind });
      rect.append(svg("title", {}));
      rect.lastChild.textContent = label;
      node.append(rect);
    }
  });
  return node;
}

const COUNTS = ["scheduled", "due", "running", "dead", "delivered", "failed"];

// A queue no live node processes: its tasks wait in vain, so it is a
// warning, not "active".
function queueBadge(q) {
  if (q.paused) return el("span", { class: "badge paused" }, "paused");
  if (q.processed_by === 0) {
    return el("span", { class: "badge unprocessed", title: "no live node processes this queue: " +
                        "start one with --queue '*' or --queue " + q.name },
              q.due > 0 ? "no node: " + q.due + " due" : "no node");
  }
  return el("span", { class: "badge active", title: q.processed_by + " node(s)" }, "active");
}

// Target hosts whose circuit is open (on the node that answered): their
// tasks wait for a probe to get through.
function circuitBadge(q) {
  const hosts = q.open_circuits || [];
  if (!hosts.length) return null;
  return el("span", { class: "badge circuit", title: "open circuit: " + hosts.join(", ") },
            hosts.length + (hosts.length === 1 ? " open circuit" : " open circuits"));
}

function renderQueuePager(page) {
  state.nextQueues = page.next_cursor;
  $("queues-next").hidden = !page.next_cursor;
  $("queues-first").hidden = state.queueCursor === null;
}

function renderNodes(nodes) {
  $("no-nodes").hidden = nodes.length > 0;
  $("nodes").hidden = nodes.length === 0;
  if (!changed("nodes", nodes.map((n) => [n.id, n.queues, n.in_flight]))) return;
  $("nodes").tBodies[0].replaceChildren(...nodes.map((n) => el("tr", { dataset: { node: n.id } },
    el("td", {}, n.id),
    el("td", {}, n.host + " (pid " + n.pid + ")"),
    el("td", {}, n.version),
    el("td", { dataset: { field: "queues" } },
       n.queues === "*" ? "every queue" : n.queues.join(", ") || "none (API only)"),
    el("td", { class: "num", dataset: { field: "in_flight" } }, n.in_flight),
    el("td", { class: "when" }, when(n.started_at)),
  )));
}

function renderQueues(queues) {
  const select = $("dead-queue");
  if (changed("queue-names", queues.map((q) => q.name))) {
    select.replaceChildren(...queues.map((q) => el("option", { value: q.name }, q.name)));
  }
  if (!queues.some((q) => q.name === state.queue)) {
    const withDead = queues.find((q) => q.dead > 0);
    state.queue = withDead ? withDead.name : queues.length ? queues[0].name : null;
    state.offset = 0;
  }
  select.value = state.queue || "";
  $("no-queues").hidden = queues.length > 0;
  if (!changed("queues", [queues, state.queue])) return;
  $("queues").tBodies[0].replaceChildren(...queues.map((q) => el("tr",
    { dataset: { queue: q.name }, class: q.name === state.queue ? "selected" : "" },
    el("td", {}, el("button", { class: "link", onclick: () => selectQueue(q.name) }, q.name)),
    el("td", {}, queueBadge(q), circuitBadge(q)),
    ...COUNTS.map((name) => el("td", { class: "num", dataset: { field: name } }, q[name])),
    el("td", { class: "num", dataset: { field: "oldest_due_age" } },
       q.oldest_due_age ? ago(q.oldest_due_age) : "-"),
    el("td", {}, chart(q.recent)),
    el("td", {}, el("button", { onclick: () => pause(q.name, !q.paused) },
                    q.paused ? "Resume" : "Pause")),
  )));
}

function renderDead(page) {
  const plural = page.total === 1 ? " dead letter" : " dead letters";
  $("dead-total").textContent = page.total ? page.total + plural : "";
  $("dead-empty").hidden = page.tasks.length > 0;
  $("dead").hidden = page.tasks.length === 0;
  $("older").disabled = page.offset + page.limit >= page.total;
  $("newer").disabled = page.offset === 0;
  $("retry-all").disabled = $("delete-all").disabled = page.total === 0;
  if (!changed("dead", page)) return;
  $("dead").tBodies[0].replaceChildren(...page.tasks.map((t) => el("tr",
    { dataset: { taskId: t.id } },
    el("td", {}, el("button", { class: "link", onclick: () => lookup(t.id) }, t.id)),
    el("td", { class: "url" }, t.method + " " + t.url),
    el("td", { class: "num" }, t.attempts),
    el("td", { class: "num" }, t.last_status === null ? "-" : t.last_status),
    el("td", { class: "error" }, t.last_error || ""),
    el("td", { class: "when" }, when(t.dead_at)),
    el("td", { class: "actions" },
       el("button", { class: "retry", onclick: () => deadAction("retry", [t.id]) }, "Retry"),
       " ",
       el("button", { class: "delete", onclick: () => deadAction("delete", [t.id]) }, "Delete")),
  )));
}

// The selected queue's tasks, a page at a time: ``cursors`` holds the cursor
// of every page up to the one shown ("" for the first), so Previous can go
// back through pages that only go forward.
const list = { queue: null, state: "scheduled", cursors: [""], next: null, limit: 20 };

async function loadTasks() {
  if (list.queue !== state.queue) {
    list.queue = state.queue;
    list.cursors = [""];
  }
  $("tasks-queue").textContent = state.queue || "";
  if (!state.queue) {
    renderTasks({ tasks: [], next_cursor: null });
    return;
  }
  const cursor = list.cursors[list.cursors.length - 1];
  const path = "queues/" + enc(state.queue) + "/tasks?state=" + list.state + "&limit=" +
    list.limit + (cursor ? "&cursor=" + enc(cursor) : "");
  const [page, queue] = await Promise.all([
    api("GET", path),
    api("GET", "queues/" + enc(state.queue)).catch(() => null),
  ]);
  renderTasks(page);
  renderSettings(queue && queue.settings);
}

// The queue's own settings (PATCH /queues/<q>); the rest are the nodes' options.
function renderSettings(settings) {
  const own = Object.entries(settings || {}).map(([name, value]) => name + " " + value);
  $("queue-settings").textContent = own.length
    ? "Settings: " + own.join(", ") + "; the rest as the nodes' options"
    : "Settings: the nodes' options";
}

function renderTasks(page) {
  list.next = page.next_cursor;
  $("tasks-next").disabled = !page.next_cursor;
  $("tasks-previous").disabled = list.cursors.length < 2;
  $("tasks-empty").hidden = page.tasks.length > 0;
  $("tasks").hidden = page.tasks.length === 0;
  if (!changed("tasks", page.tasks)) return;
  $("tasks").tBodies[0].replaceChildren(...page.tasks.map((t) => el("tr",
    { dataset: { taskId: t.id } },
    el("td", {}, el("button", { class: "link", onclick: () => lookup(t.id) }, t.id)),
    el("td", { class: "url" }, t.method + " " + t.url),
    el("td", { class: "when" }, when(t.due_at)),
    el("td", { class: "num" }, t.attempts),
    el("td", { class: "num" }, t.last_status === null ? "-" : t.last_status),
    el("td", { class: "error" }, t.last_error || ""),
    el("td", { class: "actions" },
       t.status === "scheduled"
         ? el("button", { class: "run-now", onclick: () => runNow(t.id) }, "Run now") : null,
       " ",
       el("button", { class: "cancel", onclick: () => cancelListed(t.id) }, "Cancel")),
  )));
}

function cancelListed(id) {
  if (!confirm("Cancel task " + id + "?")) return;
  act(api("DELETE", "tasks/" + enc(id)),
      (a) => "Cancelled task " + id + " (was " + a.status + ")");
}

function renderTask(t) {
  const box = $("task");
  if (!t) { box.replaceChildren(); return; }
  if (!changed("task", t)) return;
  const rows = [["id", t.id], ["status", t.status], ["queue", t.queue], ["name", t.name],
    ["request", t.method + " " + t.url], ["attempts", t.attempts], ["due", when(t.due_at)],
    ["created", when(t.created_at)], ["last status", t.last_status],
    ["last error", t.last_error], ["delivered", when(t.delivered_at)],
    ["died", when(t.dead_at)],
    ["headers", Object.entries(t.headers).map(([k, v]) => k + ": " + v).join("\n")]];
  const list = el("dl", { class: "task", id: "task-fields" });
  for (const [name, value] of rows) {
    if (value === null || value === "" || value === undefined) continue;
    list.append(el("dt", {}, name), el("dd", { dataset: { field: name } }, value));
  }
  const history = el("table", { id: "history" },
    el("thead", {}, el("tr", {}, ...["attempt", "ended", "outcome", "status", "took", "error"]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, ...t.history.map((a) => el("tr", {},
      el("td", { class: "num" }, a.attempt === null ? "" : a.attempt),
      el("td", {}, when(a.at)),
      el("td", {}, a.outcome),
      el("td", { class: "num" }, a.status === null ? "" : a.status),
      el("td", { class: "num" }, a.duration === null ? "" : a.duration.toFixed(3) + "s"),
      el("td", { class: "error" }, a.error || "")))));
  const actions = el("div", { class: "toolbar" });
  if (t.status === "scheduled") {
    actions.append(el("button", { id: "run-now", onclick: () => runNow(t.id) }, "Run now"));
  }
  if (t.status !== "delivered") {
    actions.append(el("button", { id: "cancel", onclick: () => cancel(t.id) }, "Cancel task"));
  }
  box.replaceChildren(list, actions, el("h2", {}, "Last attempts"),
    t.history.length ? history : el("p", { class: "muted" }, "No attempt yet."));
}

async function refresh() {
  if (!$("login").hidden) return;
  try {
    const cursor = state.queueCursor ? "&cursor=" + enc(state.queueCursor) : "";
    const page = await api("GET", "queues?limit=" + QUEUE_PAGE + cursor);
    showApp();
    renderQueues(page.queues);
    renderQueuePager(page);
    renderNodes((await api("GET", "nodes")).nodes);
    if (state.queue) {
      const path = "queues/" + enc(state.queue) + "/dead?offset=" + state.offset +
        "&limit=" + state.limit;
      renderDead(await api("GET", path));
    } else {
      renderDead({ total: 0, offset: 0, limit: state.limit, tasks: [] });
    }
    await loadTasks();
    if (state.task) await showTask(state.task, true);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    failed(error);
  }
}

async function showTask(id, quietly) {
  try {
    renderTask(await api("GET", "tasks/" + enc(id)));
  } catch (error) {
    if (error.status === 404) {
      state.task = null;
      renderTask(null);
      if (!quietly) flash("No task " + id + " (a delivered one is kept for an hour).", true);
      return;
    }
    throw error;
  }
}

async function act(promise, message) {
  try {
    const answer = await promise;
    flash(typeof message === "function" ? message(answer) : message);
    await refresh();
  } catch (error) {
    failed(error);
  }
}

function selectQueue(name) {
  state.queue = name;
  state.offset = 0;
  refresh();
}

function lookup(id) {
  state.task = id;
  $("task-id").value = id;
  act(showTask(id), "");
}

function pause(queue, paused) {
  const verb = paused ? "pause" : "resume";
  act(api("POST", "queues/" + enc(queue) + "/" + verb), queue + " " + verb + "d");
}

function deadAction(action, ids) {
  const queue = state.queue;
  if (!ids && !confirm((action === "retry" ? "Retry" : "Delete") + " every dead letter of " +
                       queue + "?")) return;
  const body = ids ? { ids } : undefined;
  const path = "queues/" + enc(queue) + "/dead" + (action === "retry" ? "/retry" : "");
  act(api(action === "retry" ? "POST" : "DELETE", path, body),
      (a) => action === "retry" ? "Retried " + a.retried : "Deleted " + a.deleted);
}

function runNow(id) {
  act(api("POST", "tasks/" + enc(id) + "/run"), "Task " + id + " is due now");
}

function cancel(id) {
  if (!confirm("Cancel task " + id + "?")) return;
  const cancelled = api("DELETE", "tasks/" + enc(id)).then((answer) => {
    state.task = null;
    renderTask(null);
    return answer;
  });
  act(cancelled, (a) => "Cancelled task " + id + " (was " + a.status + ")");
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  $("login-error").textContent = "";
  $("login").hidden = true;
  refresh();
});
$("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.shown = {};
  showLogin();
  $("login-error").textContent = "";
});
$("lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("task-id").value.trim();
  if (id) lookup(id);
});
$("queues-next").addEventListener("click", () => {
  if (!state.nextQueues) return;
  state.queueCursor = state.nextQueues;
  refresh();
});
$("queues-first").addEventListener("click", () => {
  state.queueCursor = null;
  refresh();
});
$("dead-queue").addEventListener("change", () => selectQueue($("dead-queue").value));
$("retry-all").addEventListener("click", () => deadAction("retry", null));
$("delete-all").addEventListener("click", () => deadAction("delete", null));
$("older").addEventListener("click", () => { state.offset += state.limit; refresh(); });
$("newer").addEventListener("click", () => {
  state.offset = Math.max(0, state.offset - state.limit);
  refresh();
});

$("tasks-state").addEventListener("change", () => {
  list.state = $("tasks-state").value;
  list.cursors = [""];
  refresh();
});
$("tasks-next").addEventListener("click", () => {
  if (list.next) list.cursors.push(list.next);
  refresh();
});
$("tasks-previous").addEventListener("click", () => {
  if (list.cursors.length > 1) list.cursors.pop();
  refresh();
});

(async function loop() {
  await refresh();
  setTimeout(loop, REFRESH_MS);
})();
