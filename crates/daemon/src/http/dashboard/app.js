// The dashboard: one live stream (/v1/stream: status snapshots and events), deployments from
// /v1/history, a log tail (/v1/stream/logs), and actions that need the API token.

import * as api from "./api.js";
import * as fmt from "./format.js";
import * as view from "./render.js";
import { VERSION } from "./config.js";

const MAX_EVENTS = 100;
const MAX_LOG_LINES = 1000;
const HISTORY_EVERY_MS = 2000;
const NODES_EVERY_MS = 2000;

const $ = (sel) => document.querySelector(sel);

const state = {
  status: null,
  /** `${app}|${backend}` → { t, total, errors } of the previous snapshot */
  counters: new Map(),
  /** `${app}|${backend}` → { rate, errors } per second */
  rates: new Map(),
  /** app → { report, at } */
  history: new Map(),
  events: [],
  logs: null,
  /** /v1/cluster/nodes and when it was asked, in cluster mode */
  nodes: { report: null, at: 0, pending: false },
};

// ---- notices -------------------------------------------------------------------------------

function notice(text, kind = "info", hint = null) {
  const el = $("#notice");
  el.replaceChildren(view.h("span", {}, text), ...(hint ? [view.h("small", {}, hint)] : []));
  el.className = `notice ${kind}`;
  el.hidden = false;
}

function describeError(what, err) {
  if (err instanceof api.ApiError) {
    const status = err.status === 401 ? "401 Unauthorized" : `HTTP ${err.status}`;
    return { text: `${what} refused (${status}): ${err.message}`, hint: err.hint };
  }
  return { text: `${what} failed: ${err.message || err}`, hint: null };
}

// ---- token ---------------------------------------------------------------------------------

function showTokenForm(reason) {
  const form = $("#token-form");
  form.hidden = false;
  $("#token-reason").textContent = reason || "";
  $("#token-input").focus();
}

function updateTokenButton() {
  $("#token-button").textContent = api.token() ? "Token ✓" : "Token";
}

$("#token-button").addEventListener("click", () => {
  const form = $("#token-form");
  if (form.hidden) showTokenForm("");
  else form.hidden = true;
});

$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  api.setToken($("#token-input").value);
  $("#token-input").value = "";
  $("#token-form").hidden = true;
  updateTokenButton();
  notice("token saved for this tab", "ok");
  restartStream();
});

$("#token-clear").addEventListener("click", () => {
  api.setToken("");
  $("#token-form").hidden = true;
  updateTokenButton();
  notice("token forgotten", "info");
});

// ---- status --------------------------------------------------------------------------------

function updateRates(report) {
  const now = performance.now();
  const seen = new Set();
  for (const app of report.apps) {
    for (const b of (app.balancer && app.balancer.backends) || []) {
      const key = `${app.name}|${b.id}`;
      seen.add(key);
      const total = (b.requests || []).reduce((a, n) => a + n, 0);
      const errors = (b.errors || 0) + ((b.requests || [])[4] || 0);
      const prev = state.counters.get(key);
      if (prev && now > prev.t && total >= prev.total) {
        const secs = (now - prev.t) / 1000;
        state.rates.set(key, {
          rate: (total - prev.total) / secs,
          errors: Math.max(0, errors - prev.errors) / secs,
        });
      }
      state.counters.set(key, { t: now, total, errors });
    }
  }
  for (const key of [...state.counters.keys()]) {
    if (!seen.has(key)) {
      state.counters.delete(key);
      state.rates.delete(key);
    }
  }
}

function appCard(app) {
  let card = document.querySelector(`article.app[data-app="${CSS.escape(app.name)}"]`);
  if (!card) {
    card = view.h(
      "article",
      { class: "app panel", dataset: { app: app.name } },
      view.h("header", {}, view.h("h2", {}, app.name), view.h("div", { class: "summary" })),
      view.appActions(app),
      view.h("div", { class: "app-body" }),
    );
  }
  return card;
}

function renderStatus(report) {
  const d = report.daemon;
  $("#daemon").textContent = `daemon ${d.version} · pid ${d.pid} · up ${fmt.duration(d.uptime_secs)}`;
  const apps = $("#apps");
  const cards = report.apps.map((app) => {
    const card = appCard(app);
    view.morph(card.querySelector(".summary"), view.appSummary(app));
    const history = state.history.get(app.name);
    view.morph(card.querySelector(".app-body"), view.appBody(app, state.rates, history && history.report, report.cluster));
    const input = card.querySelector("input[name=instances]");
    if (document.activeElement !== input && !input.dataset.edited) input.value = app.desired;
    card.classList.toggle("has-canary", Boolean(app.canary) || canaryRunning(history && history.report));
    return card;
  });
  if (cards.length === 0) {
    apps.replaceChildren(view.h("p", { class: "panel muted" }, "No apps: apply a spec with `jarfleet apply`."));
  } else if (cards.some((card, i) => apps.children[i] !== card) || apps.children.length !== cards.length) {
    apps.replaceChildren(...cards);
  }
  for (const app of report.apps) maybeFetchHistory(app);
  renderCluster(report);
}

/** Cluster mode: the nodes panel, from /v1/cluster/nodes (asked every couple of seconds). */
function renderCluster(report) {
  const panel = $("#cluster");
  if (!report.cluster) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  const shown = view.clusterPanel(state.nodes.report);
  if (shown) {
    const inner = panel.firstElementChild;
    if (inner && inner.className === shown.className) view.morph(inner, shown);
    else panel.replaceChildren(shown);
  }
  const now = Date.now();
  if (state.nodes.pending || now - state.nodes.at < NODES_EVERY_MS) return;
  state.nodes.pending = true;
  state.nodes.at = now;
  api
    .get("/v1/cluster/nodes")
    .then((nodes) => {
      state.nodes.report = nodes;
    })
    .catch(() => {})
    .finally(() => {
      state.nodes.pending = false;
    });
}

async function maybeFetchHistory(app, force = false) {
  const known = state.history.get(app.name);
  const wanted = app.rolling || app.deployment || (known && isActive(known.report));
  if (!wanted && !force) return;
  const now = Date.now();
  if (known && (known.pending || (!force && now - known.at < HISTORY_EVERY_MS))) return;
  state.history.set(app.name, { ...(known || {}), pending: true, at: now });
  try {
    const report = await api.get(`/v1/history?app=${encodeURIComponent(app.name)}`);
    state.history.set(app.name, { report, at: Date.now(), pending: false });
  } catch (_) {
    state.history.set(app.name, { ...(known || {}), at: Date.now(), pending: false });
  }
}

function canaryRunning(history) {
  const d = history && history.deployments && history.deployments[history.deployments.length - 1];
  return isActive(history) && d.strategy === "canary";
}

function isActive(history) {
  const d = history && history.deployments && history.deployments[history.deployments.length - 1];
  return Boolean(d && (d.outcome === "running" || d.outcome === "rolling-back"));
}

// ---- events --------------------------------------------------------------------------------

function addEvent(e) {
  state.events.push(e);
  if (state.events.length > MAX_EVENTS) state.events.shift();
  const list = $("#events");
  list.prepend(view.eventItem(e));
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  if (e.app && /^deploy|^canary|^rollback/.test(e.kind) && state.status) {
    const app = state.status.apps.find((a) => a.name === e.app);
    if (app) maybeFetchHistory(app, true);
  }
}

// ---- the live stream -----------------------------------------------------------------------

let streamAbort = null;

function setLive(text, kind) {
  const el = $("#live");
  el.textContent = text;
  el.className = `pill ${kind}`;
}

async function runStream() {
  const abort = new AbortController();
  streamAbort = abort;
  let delay = 500;
  while (!abort.signal.aborted) {
    try {
      setLive("connecting…", "busy");
      $("#events").replaceChildren();
      state.events = [];
      await api.stream(
        "/v1/stream?events=50",
        (name, data) => {
          delay = 500;
          const value = JSON.parse(data);
          if (name === "status") {
            setLive("live", "ok");
            state.status = value;
            updateRates(value);
            renderStatus(value);
          } else if (name === "event") {
            addEvent(value);
          }
        },
        abort.signal,
      );
      setLive("reconnecting…", "bad");
    } catch (err) {
      if (abort.signal.aborted) return;
      if (err instanceof api.ApiError && err.status === 401) {
        setLive("token needed", "bad");
        const { text, hint } = describeError("reading the fleet", err);
        notice(text, "error", hint);
        showTokenForm("This daemon shows its fleet only with the API token.");
        return;
      }
      setLive("disconnected", "bad");
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 5000);
  }
}

function restartStream() {
  if (streamAbort) streamAbort.abort();
  runStream();
}

// ---- logs ----------------------------------------------------------------------------------

async function openLogs(app, slot) {
  if (state.logs) state.logs.abort.abort();
  const abort = new AbortController();
  state.logs = { abort };
  const panel = $("#logs-panel");
  const pre = $("#logs");
  panel.hidden = false;
  $("#logs-target").textContent = `${app}/${slot}`;
  pre.replaceChildren();
  panel.scrollIntoView({ behavior: "smooth", block: "nearest" });
  try {
    await api.stream(
      `/v1/stream/logs?app=${encodeURIComponent(app)}&slot=${slot}&lines=100`,
      (name, data) => {
        if (name !== "log") return;
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
        pre.append(view.logLine(JSON.parse(data)));
        while (pre.childNodes.length > MAX_LOG_LINES) pre.firstChild.remove();
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      },
      abort.signal,
    );
  } catch (err) {
    if (abort.signal.aborted) return;
    const { text, hint } = describeError(`logs of ${app}/${slot}`, err);
    notice(text, "error", hint);
  }
}

$("#logs-close").addEventListener("click", () => {
  if (state.logs) state.logs.abort.abort();
  state.logs = null;
  $("#logs-panel").hidden = true;
});

// ---- actions -------------------------------------------------------------------------------

/** Buttons that act on the fleet as a whole ask for a second click. */
const CONFIRM = new Set(["rollback", "abort", "promote", "restart-all"]);

async function act(label, call) {
  notice(`${label}…`, "info");
  try {
    const reply = await call();
    notice(`${label}: ${reply.message || reply.outcome || "done"}`, "ok");
  } catch (err) {
    const { text, hint } = describeError(label, err);
    notice(text, "error", hint);
    if (err instanceof api.ApiError && err.status === 401) {
      showTokenForm("Actions need the API token (the daemon's [daemon] token_file).");
    }
  }
}

function armed(button) {
  if (button.dataset.armed) return true;
  const text = button.textContent;
  button.dataset.armed = "1";
  button.textContent = "Sure?";
  setTimeout(() => {
    delete button.dataset.armed;
    button.textContent = text;
  }, 4000);
  return false;
}

document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button[data-action]");
  if (!button || button.type === "submit") return;
  const { action, app } = button.dataset;
  const slot = button.dataset.slot == null ? null : Number(button.dataset.slot);
  if (CONFIRM.has(action) && !armed(button)) return;
  switch (action) {
    case "restart":
      act(`restart ${app}/${slot}`, () => api.post("/v1/action", { app, slot, action: "restart" }));
      break;
    case "restart-all":
      act(`rolling restart of ${app}`, () => api.post("/v1/action", { app, slot: null, action: "restart" }));
      break;
    case "logs":
      openLogs(app, slot);
      break;
    case "rollback":
      act(`rollback of ${app}`, () => api.post("/v1/rollback", { app, to: null }));
      break;
    case "promote":
      act(`promote canary of ${app}`, () => api.post("/v1/canary", { app, promote: true }));
      break;
    case "abort":
      act(`abort canary of ${app}`, () => api.post("/v1/canary", { app, promote: false }));
      break;
  }
});

document.addEventListener("input", (ev) => {
  if (ev.target.matches("input[name=instances]")) ev.target.dataset.edited = "1";
});

document.addEventListener("submit", (ev) => {
  const form = ev.target.closest("form.actions");
  if (!form) return;
  ev.preventDefault();
  const input = form.querySelector("input[name=instances]");
  const instances = Number(input.value);
  delete input.dataset.edited;
  const app = form.dataset.app;
  act(`scale ${app} to ${instances}`, () => api.post("/v1/scale", { app, instances }));
});

// ---- start ---------------------------------------------------------------------------------

$("#version").textContent = `jarfleet ${VERSION}`;
updateTokenButton();
runStream();
