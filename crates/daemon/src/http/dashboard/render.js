// Building the page from API data. Everything from the daemon goes into text nodes (never
// innerHTML): log lines and event messages are data, not markup.

import * as fmt from "./format.js";

/** `h("td", { class: "x", dataset: { a: 1 } }, "text", child)` */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    // Through the CSSOM: the page's CSP refuses style attributes.
    else if (k === "style") Object.assign(el.style, v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const STATE_CLASS = {
  ready: "ok",
  starting: "busy",
  pending: "busy",
  stopping: "busy",
  unhealthy: "bad",
  backoff: "bad",
  "crash-loop": "bad",
  failed: "bad",
  stopped: "off",
  // cluster mode: instances on other nodes, nodes, rollouts
  draining: "busy",
  placed: "busy",
  suspect: "bad",
  down: "bad",
  ineligible: "off",
  rolling: "busy",
  done: "ok",
  "rolled-back": "bad",
};

function badge(state) {
  return h("span", { class: `badge ${STATE_CLASS[state] || "off"}` }, state);
}

/** A table whose cells carry their column name, so narrow screens can show rows as cards. */
function table(cls, columns, rows) {
  return h(
    "table",
    { class: cls },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows),
  );
}

function cell(label, ...content) {
  return h("td", { dataset: { label } }, ...content);
}

export function instanceRows(app) {
  return app.instances.map((i) => {
    const key = `${i.app}/${i.slot}`;
    return h(
      "tr",
      {
        dataset: {
          instance: key,
          state: i.state,
          ready: String(i.ready),
          pid: i.pid == null ? "" : String(i.pid),
        },
      },
      cell("instance", h("strong", {}, key)),
      cell("state", badge(i.state), i.health_error ? h("div", { class: "why" }, i.health_error) : null,
        !i.health_error && i.last_exit && i.state !== "ready" ? h("div", { class: "why" }, i.last_exit) : null),
      cell("ready", i.ready ? "yes" : "no"),
      cell("release", h("code", {}, fmt.release(i.release))),
      cell("port", i.port ?? "–"),
      cell("uptime", fmt.duration(i.uptime_secs)),
      cell("restarts", i.restarts),
      cell("CPU", fmt.percent(i.cpu_percent)),
      cell("RSS", fmt.bytes(i.rss_bytes)),
      cell(
        "",
        h("span", { class: "row-actions" },
          h("button", { type: "button", dataset: { action: "restart", app: i.app, slot: i.slot } }, "Restart"),
          h("button", { type: "button", class: "quiet", dataset: { action: "logs", app: i.app, slot: i.slot } }, "Logs"),
        ),
      ),
    );
  });
}

export function instancesTable(app) {
  return table(
    "instances",
    ["instance", "state", "ready", "release", "port", "uptime", "restarts", "CPU", "RSS", ""],
    instanceRows(app),
  );
}

/** Traffic per backend; `rates` maps backend id to { rate, errors } per second. */
export function trafficTable(app, rates) {
  const lb = app.balancer;
  if (!lb || !Array.isArray(lb.backends)) return null;
  const rows = lb.backends.map((b) => {
    const r = rates.get(`${app.name}|${b.id}`) || {};
    const total = (b.requests || []).reduce((a, n) => a + n, 0);
    const errors = (b.errors || 0) + ((b.requests || [])[4] || 0);
    const flags = [b.ejected ? "ejected" : null, b.in_snapshot === false ? "draining" : null].filter(Boolean);
    return h(
      "tr",
      { dataset: { backend: b.id } },
      cell("backend", h("strong", {}, b.id), flags.length ? h("div", { class: "why" }, flags.join(", ")) : null),
      cell("release", h("code", {}, fmt.release(b.labels && b.labels.release))),
      cell("rate", fmt.rate(r.rate)),
      cell("errors", `${errors}`, total ? h("span", { class: errors ? "bad-text" : "muted" }, ` ${fmt.percent((100 * errors) / total)}`) : null,
        r.errors ? h("span", { class: "bad-text" }, ` · ${fmt.rate(r.errors)}`) : null),
      cell("p99", fmt.micros(b.p99_us)),
      cell("in flight", b.in_flight ?? 0),
      cell("weight", `${b.effective_weight ?? b.weight ?? "–"}`),
      cell("requests", total),
    );
  });
  return h(
    "div",
    { class: "traffic" },
    h("h3", {}, `Traffic via ${lb.listen || app.listen}`, lb.no_backend ? h("span", { class: "bad-text" }, ` · ${lb.no_backend} with no backend`) : null),
    rows.length
      ? table("backends", ["backend", "release", "rate", "errors", "p99", "in flight", "weight", "requests"], rows)
      : h("p", { class: "muted" }, "no backend in the balancer"),
  );
}

/** The deployment in progress (or the last one) with its steps, from /v1/history. */
export function deployment(history) {
  if (!history || !history.deployments || history.deployments.length === 0) return null;
  const d = history.deployments[history.deployments.length - 1];
  const active = d.outcome === "running" || d.outcome === "rolling-back";
  const title = `#${d.id} ${d.strategy}: ${fmt.release(d.from)} → ${fmt.release(d.to)}`;
  if (!active) {
    return h("p", { class: "muted last-deploy" }, `last deployment ${title}: ${d.outcome}${d.reason ? ` (${d.reason})` : ""}`);
  }
  return h(
    "div",
    { class: "deployment", dataset: { deployment: String(d.id), outcome: d.outcome } },
    h("h3", {}, `Deployment ${title} `, h("span", { class: "badge busy" }, d.outcome)),
    h("ol", { class: "steps" }, d.steps.map((s) => h("li", {}, h("time", {}, fmt.time(s.at)), " ", s.message))),
  );
}

function figure(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(4).replace(/0+$/, "").replace(/\.$/, "");
  if (v == null) return "–";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** `apps[].canary` when the daemon reports one: release, step, percent, paused, figures. */
export function canary(app) {
  const c = app.canary;
  if (!c) return null;
  const parts = [];
  if (c.release) parts.push(`release ${fmt.release(c.release)}`);
  if (c.step != null) parts.push(`step ${c.step}`);
  if (c.percent != null) parts.push(`${c.percent}% of traffic`);
  const figures = c.figures && typeof c.figures === "object" ? Object.entries(c.figures) : [];
  return h(
    "div",
    { class: "canary", dataset: { canary: app.name } },
    h("h3", {}, "Canary ", c.paused ? h("span", { class: "badge bad" }, "paused") : h("span", { class: "badge busy" }, "running")),
    h("p", {}, parts.join(" · ")),
    c.percent != null ? h("div", { class: "bar" }, h("span", { style: { width: `${Math.max(0, Math.min(100, c.percent))}%` } })) : null,
    figures.length ? h("dl", { class: "figures" }, figures.flatMap(([k, v]) => [h("dt", {}, k.replaceAll("_", " ")), h("dd", {}, figure(v))])) : null,
  );
}

/** The cluster's nodes, from /v1/cluster/nodes: state, where, what each runs. */
export function clusterPanel(report) {
  if (!report || !Array.isArray(report.nodes)) return null;
  const rows = report.nodes.map((n) =>
    h(
      "tr",
      { dataset: { node: n.name, state: n.state } },
      cell("node", h("strong", {}, n.name),
        n.name === report.me ? h("span", { class: "muted" }, " (this node)") : null,
        n.name === report.leader ? h("div", { class: "why" }, "scheduler") : null),
      cell("state", badge(n.state)),
      cell("address", n.address ? `${n.address}:${n.peer_port}` : "–"),
      cell("instances", `${n.ready ?? 0} ready of ${n.instances ?? 0}`),
      cell("memory", `${fmt.bytes(n.memory_used)} of ${fmt.bytes(n.memory)}`),
      cell("version", n.version || "–"),
    ),
  );
  return h(
    "div",
    { class: "cluster-nodes", dataset: { cluster: report.cluster } },
    h("h2", {}, `Cluster ${report.cluster}`, report.stale ? h("span", { class: "bad-text" }, " · etcd out of reach: as last read") : null),
    h("div", { class: "scroll" }, table("nodes", ["node", "state", "address", "instances", "memory", "version"], rows)),
  );
}

/** An app's last release across the cluster: its strategy, the nodes it reached, the canary's
 * share and every judged step with each node's figures. */
function clusterRollout(r) {
  const how = r.strategy === "canary" ? "as a canary on every node" : r.strategy === "blue-green" ? "blue-green on every node" : "node by node";
  return h(
    "div",
    { class: "rollout", dataset: { rollout: r.state, strategy: r.strategy || "rolling" } },
    h("h3", {}, `Release ${fmt.release(r.release)} ${how} `, badge(r.state)),
    r.state === "rolling" && r.strategy === "canary" ? h("div", { class: "bar" }, h("span", { style: { width: `${Math.max(0, Math.min(100, r.percent || 0))}%` } })) : null,
    h("p", { class: "muted" }, r.steps.length ? `reached ${r.steps.map((s) => `${s.node} at ${fmt.time(s.at_ms)}`).join(", ")}` : "no node reached yet"),
    r.why ? h("p", { class: "bad-text" }, r.why) : null,
    (r.verdicts || []).length
      ? h("ol", { class: "steps" }, r.verdicts.map((v) => h(
        "li",
        { dataset: { verdict: v.passed ? "passed" : "failed" } },
        h("time", {}, fmt.time(v.at_ms)), ` step ${v.step} (${v.percent} %) ${v.passed ? "passed" : "failed"}: ${v.figures}`,
        h("ul", {}, Object.entries(v.nodes || {}).map(([node, f]) => h("li", { dataset: { node } }, `${node}: ${f}`))),
      )))
      : null,
  );
}

/** An app's instances on the cluster's other nodes, and its last rollout, from status.cluster. */
export function clusterApp(app, cluster) {
  if (!cluster) return null;
  const others = (cluster.instances || []).filter((i) => i.app === app.name && i.node !== cluster.me);
  const rollout = (cluster.rollouts || []).find((r) => r.app === app.name);
  const rows = others.map((i) =>
    h(
      "tr",
      { dataset: { remote: `${i.app}/${i.slot}`, node: i.node, state: i.state } },
      cell("instance", h("strong", {}, `${i.app}/${i.slot}`)),
      cell("node", i.node, i.placed_on && i.placed_on !== i.node ? h("div", { class: "why" }, `moving to ${i.placed_on}`) : null),
      cell("state", badge(i.state)),
      cell("release", h("code", {}, fmt.release(i.release))),
      cell("address", i.address && i.port ? `${i.address}:${i.port}` : "–"),
      cell("restarts", i.restarts ?? 0),
    ),
  );
  return h(
    "div",
    { class: "cluster-app" },
    rollout ? clusterRollout(rollout) : null,
    h("h3", {}, "On the other nodes"),
    rows.length
      ? h("div", { class: "scroll" }, table("remote", ["instance", "node", "state", "release", "address", "restarts"], rows))
      : h("p", { class: "muted" }, "none"),
  );
}

/** The part of an app card that is rebuilt on every status; the actions bar is not. */
export function appBody(app, rates, history, cluster) {
  return h(
    "div",
    { class: "app-body" },
    canary(app),
    deployment(history),
    h("div", { class: "scroll" }, instancesTable(app)),
    clusterApp(app, cluster),
    trafficTable(app, rates),
  );
}

export function appSummary(app) {
  const ok = app.ready >= app.desired;
  return h(
    "div",
    { class: "summary" },
    h("span", { class: `badge ${ok ? "ok" : "bad"}` }, `${app.ready}/${app.desired} ready`),
    h("span", {}, "release ", h("code", {}, fmt.release(app.release))),
    app.listen ? h("span", {}, `listen ${app.listen}`) : null,
    app.java ? h("span", { class: "muted" }, app.java) : null,
    app.deployment ? h("span", { class: "badge busy" }, app.deployment) : null,
  );
}

export function appActions(app) {
  return h(
    "form",
    { class: "actions", dataset: { app: app.name } },
    h("label", {}, "instances ", h("input", { type: "number", min: 0, max: 1000, name: "instances", value: app.desired, inputmode: "numeric" })),
    h("button", { type: "submit", dataset: { action: "scale", app: app.name } }, "Scale"),
    h("button", { type: "button", dataset: { action: "restart-all", app: app.name } }, "Rolling restart"),
    h("button", { type: "button", class: "warn", dataset: { action: "rollback", app: app.name } }, "Roll back"),
    h("button", { type: "button", class: "canary-only", dataset: { action: "promote", app: app.name } }, "Promote canary"),
    h("button", { type: "button", class: "canary-only warn", dataset: { action: "abort", app: app.name } }, "Abort canary"),
  );
}

const KIND_CLASS = [
  [/failed|crash|exited|unhealthy|rolled-back|refused|error/, "bad"],
  [/ready|succeeded|started|listening/, "ok"],
];

export function eventItem(e) {
  const cls = (KIND_CLASS.find(([re]) => re.test(e.kind)) || [null, "off"])[1];
  const who = e.app ? (e.slot != null ? `${e.app}/${e.slot}` : e.app) : "daemon";
  return h(
    "li",
    { dataset: { id: String(e.id), kind: e.kind } },
    h("time", { datetime: new Date(e.ts).toISOString() }, fmt.time(e.ts)),
    h("span", { class: `badge ${cls}` }, e.kind),
    h("span", { class: "who" }, who),
    h("span", { class: "msg" }, e.message),
  );
}

export function logLine(l) {
  return h("span", { class: l.stream === "stderr" ? "stderr" : null }, `${l.line}\n`);
}

/**
 * Makes `from` look like `to` while keeping the nodes that are still there: a button under the
 * pointer stays the same element across live updates (a rebuilt table would swallow clicks).
 */
export function morph(from, to) {
  if (from.nodeType !== to.nodeType || from.nodeName !== to.nodeName) {
    from.replaceWith(to);
    return;
  }
  if (from.nodeType === Node.TEXT_NODE) {
    if (from.data !== to.data) from.data = to.data;
    return;
  }
  if (from.nodeType !== Node.ELEMENT_NODE) return;
  for (const { name } of [...from.attributes]) {
    if (!to.hasAttribute(name)) from.removeAttribute(name);
  }
  for (const { name, value } of [...to.attributes]) {
    // Styles through the CSSOM: the page's CSP refuses style attributes.
    if (name === "style") from.style.cssText = to.style.cssText;
    else if (from.getAttribute(name) !== value) from.setAttribute(name, value);
  }
  const old = [...from.childNodes];
  const fresh = [...to.childNodes];
  fresh.forEach((node, i) => {
    if (i < old.length) morph(old[i], node);
    else from.append(node);
  });
  for (const extra of old.slice(fresh.length)) extra.remove();
}
