// steward's dashboard: reads the JSON endpoints under /v1/ and fills in the page
// the server sent (body[data-page]). Charts are SVG drawn by the daemon
// (/ui/charts/...), fetched and placed inline. No library, no build step.
//
// The bearer token for a write is asked for in a form field at the moment of
// the write, sent in that one request, and cleared: it is never kept in a
// variable, a cookie or storage.
"use strict";

const main = document.getElementById("main");
const page = document.body.dataset.page;
const params = new URLSearchParams(location.search);
// Whether the daemon has a bearer token (the server says so in the page).
const tokenRequired = document.body.dataset.token === "required";

// ---- helpers ---------------------------------------------------------------

/** An element: el("td", {class: "num"}, "text", child, ...). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** The error a JSON endpoint answered, as one line. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options) {
  const r = await fetch(path, options);
  // Read every answer to its end, a 204's empty one too: an unread body is
  // an aborted request to the browser.
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!r.ok) {
    const e = body && body.error ? body.error : { code: "http_" + r.status, message: text };
    throw new ApiError(r.status, e.code, e.message);
  }
  return body;
}

/** Headers of a write: JSON, and the token when one was typed. */
function writeHeaders(token) {
  const h = { "Content-Type": "application/json" };
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

const utc = (ms) => ms === null || ms === undefined ? "—"
  : new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
const rfc = (s) => s ? s.replace("T", " ").replace(/(\.\d+)?Z$/, " UTC") : "—";
function num(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v) && digits === undefined) return v.toLocaleString("en");
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
  return v.toFixed(digits === undefined ? 3 : digits);
}
/** Milliseconds, as µs below 1 ms. */
function ms(v) {
  if (v === null || v === undefined) return "—";
  return v < 1 ? (v * 1000).toFixed(1) + " µs" : v.toFixed(2) + " ms";
}
const pct = (v) => v === null || v === undefined ? "—" : (100 * v).toFixed(2) + "%";
function pval(p) {
  if (p === null || p === undefined) return "—";
  return p < 1e-4 ? p.toExponential(1) : p.toFixed(4);
}
function bytes(n) {
  if (n === null || n === undefined) return "—";
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1048576).toFixed(1) + " MiB";
}

function card(label, value, note) {
  return el("div", { class: "card" },
    el("div", { class: "label" }, label),
    el("div", { class: "value" }, value),
    note ? el("div", { class: "note" }, note) : null);
}

function table(headers, rows, attrs) {
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function section(title, ...children) {
  return el("section", {}, el("h2", {}, title), ...children);
}

/** A message line under a form. */
function status(box, text, ok) {
  box.textContent = text;
  box.className = "status " + (ok ? "ok" : "bad");
}

/** A token field: password input, never autocompleted; hidden when the
 * daemon has no token. */
function tokenField() {
  return el("input", {
    type: "password", name: "token", autocomplete: "off", required: tokenRequired,
    hidden: !tokenRequired, placeholder: "bearer token", class: "token",
  });
}

/** The value of `field`, cleared at once. */
function takeToken(field) {
  const t = field.value;
  field.value = "";
  return t;
}

// Charts that are still loading; the page is ready when none is.
const pending = new Set();

/** A chart placeholder whose SVG comes from `url`. */
function chart(url, caption) {
  const figure = el("figure", { class: "chart", "data-src": url },
    el("div", { class: "muted" }, "drawing…"));
  const job = fetch(url).then(async (r) => {
    const text = await r.text();
    if (!r.ok) throw new Error(`${url}: ${r.status} ${text}`);
    // The daemon's own SVG (plot::, text escaped there), from this origin.
    const svg = new DOMParser().parseFromString(text, "image/svg+xml").documentElement;
    if (svg.nodeName !== "svg") throw new Error(`${url}: not an SVG`);
    figure.replaceChildren(document.importNode(svg, true));
    if (caption) figure.append(el("figcaption", {}, caption));
  }).catch((e) => {
    figure.replaceChildren(el("div", { class: "status bad" }, "chart failed: " + e.message));
    console.error(e);
  }).finally(() => { pending.delete(job); settle(); });
  pending.add(job);
  return figure;
}

let loaded = false;
function settle() {
  if (loaded && pending.size === 0) document.body.dataset.ready = "true";
}

function failed(e) {
  main.replaceChildren(el("p", { class: "status bad" }, "Could not load: " + e.message));
  console.error(e);
}

async function header() {
  try {
    const m = await api("/v1/model");
    const form = m.serving && m.serving.form ? m.serving.form : "";
    document.getElementById("live").textContent = `live: v${m.version} ${form}`;
  } catch (e) {
    document.getElementById("live").textContent = "live model: unknown";
  }
}

// ---- overview --------------------------------------------------------------

const WINDOWS = [[60, "1 hour"], [360, "6 hours"], [1440, "1 day"], [10080, "1 week"]];

async function overview() {
  const minutes = params.get("minutes") || "60";
  const o = await api("/v1/overview?minutes=" + encodeURIComponent(minutes));
  const t = o.totals;
  const m = o.model;
  const metric = m.metric === "mae" ? "mae" : "accuracy";
  const picker = el("p", { class: "windows" }, "Window: ",
    WINDOWS.map(([n, label]) => String(n) === String(o.minutes)
      ? el("strong", {}, label + " ")
      : el("a", { href: "?minutes=" + n }, label + " ")));
  const cards = el("div", { class: "cards" },
    card("Live version", "v" + m.version, `${m.form} · ${m.source} · live since ${utc(m.activated)}`),
    card("Predictions/s", num(t.predictions_per_second, 2),
      `last full minute ${num(t.predictions_per_second_last_minute, 2)} · ${num(t.predictions)} in the window`),
    card("Latency p50 / p99", `${ms(t.latency_p50_ms)} / ${ms(t.latency_p99_ms)}`,
      "encoding and the model, per prediction"),
    card("Anomaly rate", pct(t.anomaly_rate), `${num(t.anomalies)} anomalies`),
    card(metric === "mae" ? "MAE from feedback" : "Accuracy from feedback",
      metric === "mae" ? num(t.mae, 3) : pct(t.accuracy), `${num(t.labels)} labels`));
  const q = "&minutes=" + o.minutes;
  const charts = el("div", { class: "charts" },
    ["predictions", "latency_p50", "latency_p99", "anomaly_rate", "feedback"].map((c) =>
      chart("/ui/charts/overview.svg?chart=" + c + q)));
  const firing = o.alerts.length === 0
    ? el("p", { class: "muted" }, "No alert is firing.")
    : table(["rule", "labels", "since", "model", "mail"], o.alerts.map((a) =>
      el("tr", { class: "firing" },
        el("td", {}, a.rule),
        el("td", {}, Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(", ")),
        el("td", {}, utc(a.since)),
        el("td", {}, "v" + a.model_version),
        el("td", {}, a.silenced ? "silenced" : "mailed"))));
  const versions = o.versions.length === 0
    ? el("p", { class: "muted" }, "No version change in this window.")
    : table(["time", "version", "replaced", "why"], o.versions.map((v) =>
      el("tr", {}, el("td", {}, utc(v.time)), el("td", {}, "v" + v.version),
        el("td", {}, v.previous ? "v" + v.previous : "—"), el("td", {}, v.reason))));
  main.replaceChildren(
    el("h1", {}, "Overview"),
    picker,
    cards,
    section("Firing alerts", firing),
    section("Over time (UTC, per minute; dashed lines: a version went live)", charts),
    section("Version changes", versions));
}

// ---- drift -----------------------------------------------------------------

/** The element id of a feature's section (the mail links to it). */
const featureId = (name) => "feature-" + encodeURIComponent(name);

async function drift() {
  const checks = params.get("checks") || "50";
  const h = await api("/v1/drift/history?checks=" + encodeURIComponent(checks));
  if (h.checks.length === 0) {
    main.replaceChildren(el("h1", {}, "Drift"),
      el("p", { class: "muted" }, "No drift check has run yet: the drift job runs every drift.interval_secs once the window holds drift.min_rows predictions."));
    return;
  }
  const newest = h.checks[h.checks.length - 1];
  const drifted = h.features.filter((f) => f.drift);
  const summary = el("div", { class: "cards" },
    card("Newest check", utc(newest.time), `model v${newest.model_version} · ${num(newest.rows)} predictions`),
    card("Drift", newest.drift ? "yes" : "no", newest.dataset_drift ? "dataset drift" : "no dataset drift"),
    card("Drifted", `${drifted.length} of ${h.features.length}`, drifted.map((f) => f.name).join(", ") || "none"),
    card("Checks shown", num(h.checks.length), `alpha ${h.alpha === null ? "—" : h.alpha}`));
  const rows = h.features.map((f) => el("tr", { class: f.drift ? "drifted" : "" },
    el("td", {}, el("a", { href: "#" + featureId(f.name) }, f.name)),
    el("td", {}, f.subject),
    el("td", {}, f.test || "—"),
    el("td", { class: "num" }, pval(f.p_value)),
    el("td", { class: "num" }, num(f.psi, 3)),
    el("td", {}, f.drift ? "DRIFT" : (f.in_newest ? "steady" : "not in the newest check"))));
  const list = table(["feature", "subject", "test", "p-value", "PSI", "verdict"], rows, { id: "features" });
  const q = "&checks=" + h.checks.length;
  const sections = h.features.filter((f) => f.in_newest).map((f) => {
    const base = "/ui/charts/drift.svg?feature=" + encodeURIComponent(f.name);
    return el("section", { id: featureId(f.name), class: "feature" + (f.drift ? " drifted" : "") },
      el("h2", {}, f.name, " ", el("span", { class: f.drift ? "badge bad" : "badge ok" }, f.drift ? "drift" : "steady")),
      el("div", { class: "charts" },
        f.histogram ? chart(base + "&chart=distribution" + q) : el("p", { class: "muted" }, "no distribution: a side had no values"),
        chart(base + "&chart=p_value" + q),
        chart(base + "&chart=psi" + q)));
  });
  main.replaceChildren(el("h1", {}, "Drift"), summary,
    section("Features (drifted first, then by p-value)", list), ...sections);
  if (location.hash) {
    const target = document.getElementById(decodeURIComponent(location.hash.slice(1)))
      || document.getElementById(location.hash.slice(1));
    if (target) target.scrollIntoView();
  }
}

// ---- models ----------------------------------------------------------------

function metrics(m) {
  if (!m || typeof m !== "object") return "—";
  return Object.entries(m).filter(([, v]) => typeof v === "number")
    .map(([k, v]) => `${k} ${num(v, 4)}`).join(", ") || "—";
}

async function models() {
  const [live, list, runs] = await Promise.all([api("/v1/model"), api("/v1/models"), api("/v1/retrain")]);
  const token = tokenField();
  const result = el("p", { class: "status", id: "activate-status", role: "status" });
  const activate = async (version, button) => {
    button.disabled = true;
    try {
      const a = await api(`/v1/models/${encodeURIComponent(version)}/activate`,
        { method: "POST", headers: writeHeaders(takeToken(token)), body: "{}" });
      status(result, a.changed ? `v${a.model_version} is live (was v${a.previous}).` : `v${a.model_version} was already live.`, true);
      setTimeout(() => location.reload(), 800);
    } catch (e) {
      status(result, `v${version} not activated: ${e.message}`, false);
      button.disabled = false;
    }
  };
  const liveIndex = list.models.findIndex((m) => m.status === "active");
  const rows = list.models.map((m, i) => {
    let action = null;
    if (m.status === "inactive") {
      // Newest first: a row below the live one is older.
      const label = liveIndex >= 0 && i > liveIndex ? "Roll back to v" + m.version : "Activate v" + m.version;
      action = el("button", { type: "button", "data-version": m.version,
        onclick: (ev) => activate(m.version, ev.currentTarget) }, label);
    }
    return el("tr", { class: m.status },
      el("td", {}, "v" + m.version), el("td", {}, m.status), el("td", {}, m.source),
      el("td", {}, m.parent ? "v" + m.parent : "—"), el("td", {}, utc(m.created)),
      el("td", {}, metrics(m.metrics)), el("td", {}, m.form),
      el("td", { class: "num" }, bytes(m.size_bytes)),
      el("td", { class: "num" }, pct(m.sparsity)), el("td", { class: "num" }, num(m.online_updates)),
      el("td", {}, action || ""));
  });
  const runRows = runs.runs.map((r) => el("tr", { id: "run-" + r.id, class: r.state },
    el("td", {}, String(r.id)), el("td", {}, r.trigger), el("td", {}, utc(r.started)),
    el("td", {}, r.state), el("td", { class: "num" }, num(r.rows)), el("td", {}, r.metric || "—"),
    el("td", { class: "num" }, num(r.live_metric, 4)), el("td", { class: "num" }, num(r.candidate_metric, 4)),
    el("td", {}, r.candidate_version ? "v" + r.candidate_version : "—"),
    el("td", {}, r.decision || r.error || "—")));
  main.replaceChildren(
    el("h1", {}, "Models"),
    el("div", { class: "cards" },
      card("Live version", "v" + live.version, `${live.task} · ${live.serving ? live.serving.form : ""}`),
      card("Size", bytes(live.size_bytes), `${live.bits || 32}-bit weights · sparsity ${pct(live.sparsity)}`),
      card("Parameters", num(live.parameters), live.parent ? "parent v" + live.parent : "no parent")),
    section("Versions (newest first)",
      tokenRequired ? el("form", { class: "token-row", onsubmit: (e) => e.preventDefault() },
        el("label", {}, "Token for activation: ", token),
        el("span", { class: "muted" }, " sent with the one request, then cleared; never stored.")) : token,
      result,
      table(["version", "status", "source", "parent", "created", "metrics", "weights", "size", "sparsity", "online steps", ""], rows, { id: "versions" })),
    section("Retrain runs (newest first; the gate's numbers and decision)",
      runs.runs.length === 0 ? el("p", { class: "muted" }, "No retrain run yet.")
        : table(["run", "trigger", "started", "state", "rows", "metric", "live", "candidate", "new version", "decision"], runRows, { id: "runs" })));
  if (location.hash) {
    const target = document.getElementById(location.hash.slice(1));
    if (target) target.scrollIntoView();
  }
}

// ---- alerts ----------------------------------------------------------------

const STATES = ["pending", "sent", "failed", "held", "summarized"];

async function alerts() {
  const state = params.get("state");
  const a = await api("/v1/alerts" + (state ? "?state=" + encodeURIComponent(state) : ""));
  const counts = el("div", { class: "cards" }, STATES.map((s) =>
    card(s, el("a", { href: "?state=" + s }, num(a.counts[s] || 0)), s === state ? "shown below" : "")));
  const rows = a.alerts.map((m) => el("tr", { class: m.state },
    el("td", {}, rfc(m.created)), el("td", {}, m.kind), el("td", {}, m.subject),
    el("td", {}, m.state), el("td", { class: "num" }, num(m.attempts)),
    el("td", {}, m.sent_at ? rfc(m.sent_at) : "—"), el("td", {}, m.last_error || "")));
  const mails = a.alerts.length === 0 ? el("p", { class: "muted" }, "No notification" + (state ? " in state " + state : "") + ".")
    : table(["created", "kind", "subject", "state", "attempts", "sent", "last error"], rows, { id: "mails" });

  // Silences: listing them needs the token too (when the daemon has one).
  const listToken = tokenField();
  const listBox = el("div", { id: "silences" }, el("p", { class: "muted" }, "…"));
  const showSilences = async (token) => {
    try {
      const s = await api("/v1/silences", { headers: writeHeaders(token) });
      listBox.replaceChildren(s.silences.length === 0 ? el("p", { class: "muted" }, "No active silence.")
        : table(["matchers", "from", "until", "by", "comment", ""], s.silences.map((x) => {
          const del = tokenField();
          const msg = el("span", { class: "status" });
          return el("tr", {},
            el("td", {}, (x.matchers || []).map((m) => `${m.name}=${m.value}`).join(", ")),
            el("td", {}, rfc(x.starts_at)), el("td", {}, rfc(x.ends_at)),
            el("td", {}, x.created_by || "—"), el("td", {}, x.comment || ""),
            el("td", {}, el("form", { class: "inline", onsubmit: async (e) => {
              e.preventDefault();
              try {
                await api("/v1/silences/" + encodeURIComponent(x.id), { method: "DELETE", headers: writeHeaders(takeToken(del)) });
                status(msg, "deleted", true);
                e.target.closest("tr").classList.add("gone");
              } catch (err) { status(msg, err.message, false); }
            } }, del, el("button", { type: "submit" }, "Delete"), msg)));
        }), { id: "silence-list" }));
    } catch (e) {
      listBox.replaceChildren(el("p", { class: "status bad" }, e.message));
    }
  };

  const matchers = el("input", { name: "matchers", required: true, placeholder: "feature=alcohol, rule=feature_drift", size: 40 });
  const hours = el("input", { name: "hours", type: "number", min: "0.1", step: "0.1", value: "2", required: true });
  const by = el("input", { name: "created_by", placeholder: "your name" });
  const comment = el("input", { name: "comment", placeholder: "why", size: 30 });
  const createToken = tokenField();
  const created = el("p", { class: "status", id: "silence-status", role: "status" });
  const create = async (e) => {
    e.preventDefault();
    const list = matchers.value.split(",").map((s) => s.trim()).filter(Boolean).map((s) => {
      const i = s.indexOf("=");
      return i < 0 ? { name: s, value: "" } : { name: s.slice(0, i).trim(), value: s.slice(i + 1).trim() };
    });
    const ends = new Date(Date.now() + Number(hours.value) * 3600e3).toISOString();
    const body = { matchers: list, ends_at: ends };
    if (by.value) body.created_by = by.value;
    if (comment.value) body.comment = comment.value;
    try {
      const r = await api("/v1/silences", { method: "POST", headers: writeHeaders(takeToken(createToken)), body: JSON.stringify(body) });
      status(created, `silence ${r.id} created, until ${rfc(ends)}`, true);
    } catch (err) {
      status(created, "not created: " + err.message, false);
    }
  };
  main.replaceChildren(
    el("h1", {}, "Alerts"),
    counts,
    section(state ? `Notifications: ${state}` : "Notifications (newest 100)", state ? el("p", {}, el("a", { href: "?" }, "show all")) : null, mails),
    section("Silences", listBox,
      el("h3", {}, "New silence"),
      el("form", { id: "new-silence", class: "grid", onsubmit: create },
        el("label", {}, "Matchers ", matchers), el("label", {}, "Hours ", hours),
        el("label", {}, "By ", by), el("label", {}, "Comment ", comment),
        tokenRequired ? el("label", {}, "Token ", createToken) : createToken, el("button", { type: "submit" }, "Create silence")),
      created));
  if (tokenRequired) {
    listBox.replaceChildren(el("form", { class: "token-row", onsubmit: (ev) => { ev.preventDefault(); showSilences(takeToken(listToken)); } },
      el("label", {}, "The silences need the token: ", listToken), el("button", { type: "submit" }, "Show silences")));
  } else {
    await showSilences("");
  }
}

// ---- start -----------------------------------------------------------------

const PAGES = { overview, drift, models, alerts };

(async () => {
  header();
  try {
    await (PAGES[page] || overview)();
  } catch (e) {
    failed(e);
  }
  loaded = true;
  settle();
})();
