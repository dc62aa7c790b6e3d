// sluice's admin dashboard: plain browser JavaScript, no dependencies.
// The token lives in sessionStorage; every call sends it as a bearer token.
// Routing changes and per-second statistics arrive on /api/v1/events
// (read with fetch, since EventSource cannot send an Authorization header).

const KEY = "sluice-token";
const HISTORY = 120; // points per chart: two minutes at one per second
const COLORS = ["#2f6fde", "#1f9d55", "#d97706", "#7c3aed"];
const $ = (s) => document.querySelector(s);
let token = sessionStorage.getItem(KEY);
let stream = null;
const series = new Map(); // pool -> {rate: [], errors: [], p95: []}
// The rollback thresholds, drawn on their charts (errors in %, P95 in ms).
const thresholds = {};

function text(s) {
  const d = document.createElement("div");
  d.textContent = s == null ? "" : String(s);
  return d.innerHTML;
}

async function api(method, path, body) {
  const res = await fetch("/api/v1" + path, {
    method,
    headers: { authorization: "Bearer " + token, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) {
    forget("That token was not accepted.");
    throw new Error("unauthorized");
  }
  if (!res.ok) throw new Error(data.error ? data.error.message : res.status + " " + res.statusText);
  return data;
}

// Seconds as "1h 02m", "4m 05s" or "12s".
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const [h, m, r] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}h ${two(m)}m` : m ? `${m}m ${two(r)}s` : `${r}s`;
}

function showLogin(message) {
  $("#app").classList.add("hidden");
  $("#login").classList.remove("hidden");
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

function forget(message) {
  sessionStorage.removeItem(KEY);
  token = null;
  if (stream) stream.abort();
  showLogin(message);
}

function renderPools(pools) {
  $("#pools").innerHTML = pools
    .map((p) => {
      const backends = p.backends
        .map((b) => {
          const cls = b.ejected ? "ejected" : b.healthy ? "up" : "down";
          const what = b.ejected ? "ejected" : b.healthy ? "healthy" : "unhealthy";
          const found = b.discovered_as ? ` (from ${b.discovered_as})` : "";
          return `<span title="${what}${text(found)}"><span class="dot ${cls}"></span>${text(b.addr)}</span>`;
        })
        .join(" &nbsp; ");
      const failover = p.effective_weight !== p.weight ? ` (serving ${p.effective_weight}%)` : "";
      // gRPC calls by status code: a gRPC failure is a 200 to HTTP.
      const codes = Object.entries(p.grpc || {})
        .map(([code, n]) => `<span class="grpc-code" data-code="${text(code)}">${text(code)} ${n}</span>`)
        .join(" · ");
      // [[analysis.routes]], judged apart: a broken route shows here even
      // when the pool's average looks fine.
      const routes = (p.routes || [])
        .map(
          (r) =>
            `<span class="route" data-route="${text(r.name)}">${text(r.name)} ${r.requests} req, ` +
            `${(r.error_ratio * 100).toFixed(1)}% errors</span>`,
        )
        .join(" · ");
      // Testers sent here whatever the weights.
      const matches = (p.matches || [])
        .map((m) => (m.header ? `${text(m.header)}: ${text(m.value)}` : `cookie ${text(m.cookie)}=${text(m.value)}`))
        .join(" · ");
      return `<div class="pool" data-pool="${text(p.name)}">
        <div class="head"><strong>${text(p.name)}</strong> <span>${text(p.version)}</span>
          <span class="weight" data-weight="${p.weight}">${p.weight}%</span></div>
        <div class="bar"><div style="width:${p.weight}%"></div></div>
        <div class="backends">${backends}${text(failover)}</div>
        ${codes ? `<div class="grpc">gRPC: ${codes}</div>` : ""}
        ${routes ? `<div class="routes">Routes: ${routes}</div>` : ""}
        ${matches ? `<div class="matches">Testers: ${matches}</div>` : ""}
        ${(p.names || []).length ? `<div class="names">DNS: ${p.names
          .map((n) => `${text(n)} → ${p.backends.filter((b) => b.discovered_as && n.startsWith(b.discovered_as)).length}`)
          .join(" · ")}</div>` : ""}</div>`;
    })
    .join("");
}

function push(pool, key, value) {
  if (!series.has(pool)) series.set(pool, { rate: [], errors: [], p95: [] });
  const list = series.get(pool)[key];
  list.push(value == null ? 0 : value);
  if (list.length > HISTORY) list.shift();
}

function draw(id, key) {
  const canvas = $(id);
  const ratio = window.devicePixelRatio || 1;
  canvas.width = canvas.clientWidth * ratio;
  canvas.height = canvas.clientHeight * ratio;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const all = [...series.values()].flatMap((s) => s[key]);
  const top = Math.max(1e-9, ...all);
  // The threshold is in scale when it is near the data; far above it, it
  // is named instead of flattening the lines.
  const limit = thresholds[key];
  const inScale = limit != null && limit <= top * 3;
  const max = Math.max(top, inScale ? limit : 0) * 1.1;
  const label = (v) => v.toFixed(v < 10 ? 2 : 0);
  const font = 11 * ratio;
  const bottom = canvas.height - font - 2 * ratio; // room for the time axis
  const y = (v) => bottom - (v / max) * (bottom - font);
  g.fillStyle = "#6b7280";
  g.font = `${font}px system-ui`;
  g.fillText(label(max), 2, font);
  g.fillText("0", 2, bottom - 2);
  g.fillText(`−${HISTORY} s`, 2, canvas.height - 2);
  g.fillText("now", canvas.width - 3 * font, canvas.height - 2);
  g.strokeStyle = "#d1d5db";
  g.lineWidth = ratio;
  g.beginPath();
  g.moveTo(0, bottom);
  g.lineTo(canvas.width, bottom);
  g.stroke();
  if (limit != null) {
    g.fillStyle = "#dc2626";
    if (inScale) {
      g.strokeStyle = "#dc2626";
      g.setLineDash([6 * ratio, 4 * ratio]);
      g.beginPath();
      g.moveTo(0, y(limit));
      g.lineTo(canvas.width, y(limit));
      g.stroke();
      g.setLineDash([]);
      g.fillText(`rollback at ${label(limit)}`, canvas.width / 2, y(limit) - 3 * ratio);
    } else {
      g.fillText(`rollback at ${label(limit)} (off scale)`, canvas.width / 2, font);
    }
  }
  let most = 0;
  [...series.entries()].forEach(([, s], i) => {
    const points = s[key];
    most = Math.max(most, points.length);
    g.strokeStyle = COLORS[i % COLORS.length];
    g.lineWidth = 2 * ratio;
    g.beginPath();
    // The newest point at the right edge.
    const offset = HISTORY - points.length;
    points.forEach((v, x) => {
      const px = ((x + offset) / (HISTORY - 1)) * canvas.width;
      x === 0 ? g.moveTo(px, y(v)) : g.lineTo(px, y(v));
    });
    g.stroke();
  });
  canvas.dataset.points = String(most);
  canvas.dataset.threshold = limit == null ? "" : String(limit);
  $("#legend").innerHTML = [...series.keys()]
    .map((name, i) => `<span style="color:${COLORS[i % COLORS.length]}">■ ${text(name)}</span>`)
    .join("");
}

function drawAll() {
  draw("#chart-rate", "rate");
  draw("#chart-errors", "errors");
  draw("#chart-p95", "p95");
}

// The last minute as the server kept it, so the charts start full.
async function loadHistory() {
  const h = await api("GET", "/stats/history");
  thresholds.errors = h.max_error_ratio * 100;
  thresholds.p95 = h.max_p95_ms;
  for (const p of h.pools) {
    series.set(p.name, { rate: [], errors: [], p95: [] });
    for (const point of p.points) {
      push(p.name, "rate", point.rate);
      push(p.name, "errors", point.error_ratio * 100);
      push(p.name, "p95", point.p95_ms);
    }
  }
  drawAll();
}

function onStats(data) {
  for (const p of data.pools) {
    const w = p.window || {};
    push(p.name, "rate", w.rate);
    push(p.name, "errors", (w.error_ratio || 0) * 100);
    push(p.name, "p95", w.p95_ms);
  }
  drawAll();
  // Failed requests arrive without routing events: look every 5 s.
  if (++statsSeen % 5 === 0) refreshErrors().catch(() => {});
}

async function refreshStatus() {
  const s = await api("GET", "/status");
  $("#meta").textContent =
    `generation ${s.generation} · ${s.environment || "no environment"} · v${s.version} · store ${s.store.engine}` +
    (s.store.reachable ? "" : " (unreachable!)");
  renderPools(s.pools);
}

async function refreshRollout() {
  let r;
  try {
    r = await api("GET", "/rollouts/current");
  } catch (e) {
    $("#rollout").textContent = "No rollout since this sluice started.";
    return;
  }
  const step = r.step ? ` · step ${r.step} of ${r.steps}` : "";
  const finished = ["monitoring", "completed"].includes(r.state);
  // The plan's steps as done / current / next; the current one carries the
  // latest evidence (the reason the engine gave).
  const steps = (r.plan || [])
    .map((line) => {
      const m = /^step (\d+):/.exec(line);
      if (!m) return "";
      const n = Number(m[1]);
      const where = finished || (r.step && n < r.step) ? "done" : r.step === n ? "current" : "next";
      const mark = { done: "✓", current: "▶", next: "·" }[where];
      const evidence = where === "current" && r.reason ? `<div class="evidence">${text(r.reason)}</div>` : "";
      const left = where === "current" && r.hold_remaining_seconds != null
        ? `<div class="hold" id="rollout-hold">${r.state === "paused" ? "paused; " : ""}hold: ${duration(r.hold_remaining_seconds)} left</div>`
        : "";
      const e = where === "current" ? r.evidence : null;
      const gathered = e
        ? `<div class="hold" id="rollout-evidence">evidence: ${e.requests} of ${e.min_requests} requests in a window` +
          `${e.p95_ms != null ? `, P95 ${Math.round(e.p95_ms)} ms` : ""}, ${e.errors} errors` +
          `${e.enough ? " — judged healthy" : " — not enough to judge yet"}</div>` +
          (e.since && e.since.requests > 0
            ? `<div class="hold" id="rollout-sequential">since the step: ${e.since.requests} requests, ${e.since.errors} errors, ` +
              `${e.since.slow} slow; evidence errors ${e.since.error_evidence.toFixed(2)}, latency ${e.since.latency_evidence.toFixed(2)}` +
              (e.since.routes || []).map((rt) => `, ${text(rt.name)} ${rt.evidence.toFixed(2)}`).join("") +
              ` (fails at ${Math.round(e.since.bar)})</div>`
            : "")
        : "";
      return `<li class="${where}" data-step="${n}">${mark} ${text(line)}${left}${gathered}${evidence}</li>`;
    })
    .join("");
  const smoke = (r.smoke || []).map((l) => `<li>${text(l)}</li>`).join("");
  const checks = (r.checks || []).map((l) => `<li>${text(l)}</li>`).join("");
  const hooks = (r.hooks || [])
    .map((h) => `<li>${text(h.point)} ${text(h.name)}: ${h.ok ? "ok" : text(h.error)} (${h.duration_ms} ms)</li>`)
    .join("");
  const plan = (r.plan || []).map((l) => `<li>${text(l)}</li>`).join("");
  $("#rollout").innerHTML = `<div><span class="state" id="rollout-state">${text(r.state)}</span>${step}
      · ${text(r.from)} (${text(r.from_version)}) → ${text(r.to)} (${text(r.to_version)}) · ${text(r.strategy)}
      · ${Math.round(r.elapsed_seconds)} s</div>
    ${steps ? `<ol class="steps" id="rollout-steps">${steps}</ol>` : `<div>${text(r.reason)}</div>`}
    ${smoke ? `<div>Smoke checks:<ol>${smoke}</ol></div>` : ""}
    ${checks ? `<div id="rollout-checks">Checks:<ol>${checks}</ol></div>` : ""}
    ${hooks ? `<div>Hooks:<ol>${hooks}</ol></div>` : ""}
    <details><summary>Plan</summary><ol>${plan}</ol></details>`;
}

// Which version ran where, newest first, as a timeline.
async function refreshHistory() {
  const h = await api("GET", "/history");
  $("#history").innerHTML = h.deployments.length
    ? h.deployments
        .slice(0, 10)
        .map((d) => `<li data-pool="${text(d.pool)}" data-version="${text(d.to_version)}">
          <span class="when">${text(d.started_at)}</span>
          <strong>${text(d.pool)}</strong>: ${text(d.from_version || "–")} → <strong>${text(d.to_version)}</strong>
          <span class="result">${text(d.result)}</span></li>`)
        .join("")
    : "<li>No deployment since the store was created.</li>";
}

async function refreshAudit() {
  // The last automatic rollback (the guard acts as "sluice"), with the
  // reason it measured.
  const guard = await api("GET", "/audit?actor=sluice&action=rollback&limit=1");
  const last = guard.entries[0];
  const banner = $("#rollback-banner");
  banner.classList.toggle("hidden", !last);
  if (last) {
    const reason = String(last.result || "").replace(/^ok: /, "");
    banner.textContent = `Automatic rollback at ${last.at}: ${reason}`;
  }
  const a = await api("GET", "/audit?limit=10");
  $("#audit").innerHTML = a.entries
    .map((e) => `<tr><td>${text(e.at)}</td><td>${text(e.actor)}</td><td>${text(e.action)}</td><td>${text(e.result)}</td></tr>`)
    .join("");
}

// The access log's last failed requests, newest first (operator tokens
// only: the lines name clients and paths).
async function refreshErrors() {
  let l;
  try {
    l = await api("GET", "/logs");
  } catch (e) {
    if (e.message === "unauthorized") throw e;
    $("#errors-note").textContent = "Failed requests are shown to operator tokens, with [access_log] on.";
    $("#errors").innerHTML = "";
    return;
  }
  $("#errors-note").textContent = l.lines.length ? "" : "None kept (they need [access_log] on).";
  $("#errors").innerHTML = l.lines
    .slice(-10)
    .reverse()
    .map((e) => `<tr><td>${text(e.ts)}</td><td>${e.status}</td><td>${text(e.method)} ${text(e.path)}</td>
      <td>${text(e.pool || "-")} ${text(e.version || "")}</td><td>${text(e.backend || "-")}</td>
      <td class="request-id">${text(e.request_id || "-")}</td><td>${text(e.error || "-")}</td></tr>`)
    .join("");
}

let statsSeen = 0;

function refreshAll() {
  return Promise.all([refreshStatus(), refreshRollout(), refreshAudit(), refreshErrors(), refreshHistory()]).catch((e) => {
    if (e.message !== "unauthorized") $("#app-error").textContent = e.message;
  });
}

async function follow() {
  stream = new AbortController();
  try {
    const res = await fetch("/api/v1/events", {
      headers: { authorization: "Bearer " + token },
      signal: stream.signal,
    });
    if (!res.ok) throw new Error("event stream: " + res.status);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const line = chunk.split("\n").find((l) => l.startsWith("data:"));
        if (!line) continue;
        const data = JSON.parse(line.slice(5));
        if (data.type === "stats") {
          onStats(data);
        } else {
          renderPools(data.pools);
          refreshAll();
        }
      }
    }
  } catch (e) {
    if (e.name === "AbortError" || !token) return;
  }
  // The stream ended (sluice restarted?): reconnect shortly.
  if (token) setTimeout(follow, 1000);
}

async function act(label, method, path) {
  if (!window.confirm(`${label}?`)) return;
  try {
    await api(method, path);
    $("#app-error").textContent = "";
  } catch (e) {
    $("#app-error").textContent = `${label}: ${e.message}`;
  }
  refreshAll();
}

async function start() {
  if (!token) return showLogin();
  try {
    await refreshStatus();
  } catch (e) {
    if (e.message !== "unauthorized") showLogin(e.message);
    return;
  }
  $("#login").classList.add("hidden");
  $("#app").classList.remove("hidden");
  await loadHistory().catch(() => {});
  refreshAll();
  follow();
  // The rollout's own state changes are not routing changes: poll them.
  setInterval(() => token && refreshRollout().catch(() => {}), 2000);
}

$("#login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("#token").value.trim();
  sessionStorage.setItem(KEY, token);
  start();
});
$("#logout").addEventListener("click", () => forget());
$("#rollback").addEventListener("click", () => act("Roll back to the weights before the latest change", "POST", "/rollback"));
document.querySelectorAll("[data-action]").forEach((b) =>
  b.addEventListener("click", () =>
    act(`${b.textContent} the current rollout`, "POST", `/rollouts/current/${b.dataset.action}`)),
);
start();
