"use strict";
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
// The digest that carried a recipient's alert (issue 16): the link opens the digest's view.
const digestOf = r => r.digest ? ` in <a href="?digest=${encodeURIComponent(r.digest)}">digest #${esc(r.digest)}</a>` : "";
const fill = (id, rows) => { document.querySelector(`#${id} tbody`).innerHTML = rows.join("") || `<tr><td colspan="9" class="muted">none</td></tr>`; };
const time = ms => new Date(ms).toLocaleTimeString();
let routesShown = "";

// The admin token, when the bridge has one: asked for once, kept in this browser's storage for
// this origin, sent as a bearer token (never in a URL or a cookie, so no other page can use it).
const TOKEN_KEY = "alertbridge.admin_token";
let token = localStorage.getItem(TOKEN_KEY) || "";
const $ = id => document.getElementById(id);
class NeedToken extends Error {}
function showLogin(note) {
  $("login").hidden = false;
  $("signed-in").hidden = true;
  $("login-note").textContent = note;
  $("live").textContent = "the admin token is needed to show alerts and to send test alerts";
}
async function api(path, init = {}) {
  const used = token;
  const headers = Object.assign({}, init.headers || {});
  if (used) headers.authorization = `Bearer ${used}`;
  const r = await fetch(path, Object.assign({}, init, {headers}));
  if (r.status === 401) {
    // Only the first of the answers to one token decides (several requests run at once).
    if (token === used) {
      token = "";
      localStorage.removeItem(TOKEN_KEY);
      showLogin(used ? "that token was refused" : "");
    }
    throw new NeedToken("the admin token is needed");
  }
  $("signed-in").hidden = token === "";
  return r;
}
$("login").addEventListener("submit", ev => {
  ev.preventDefault();
  token = $("token").value.trim();
  $("token").value = "";
  localStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  refresh();
});
$("forget").addEventListener("click", () => {
  token = "";
  localStorage.removeItem(TOKEN_KEY);
  showLogin("");
});

async function refresh() {
  if (!$("login").hidden) return;
  try {
    const [status, alerts] = await Promise.all([api("api/v1/status").then(r => r.json()), api("api/v1/alerts?limit=30").then(r => r.json())]);
    fill("instances", status.instances.map(i => `<tr><td>${esc(i.name)}</td><td>${esc(i.role)}</td><td>${esc(i.plugin)}</td><td class="${esc(i.state)}">${esc(i.state)} ${esc(i.message)}</td><td>${i.restarts}</td><td class="muted">${esc(i.last_error)}</td></tr>`));
    document.getElementById("depth").textContent = status.queue_depth;
    fill("routes", status.routes.map(r => `<tr><td>${esc(r.name)}${r.continue ? " <span class=muted>(continue)</span>" : ""}</td><td>${esc(r.match)}</td><td>${r.groups.map(g => `<span class=pill>${esc(g)}</span>`).join("")}${r.users.map(u => `<span class=pill>${esc(u)}</span>`).join("")}${r.escalation ? `<span class=pill>escalation ${esc(r.escalation)}</span>` : ""}</td><td>${esc(r.sinks.join(", "))}</td><td>${esc(r.offline)}</td></tr>`));
    fill("groups", Object.entries(status.groups).map(([g, m]) => `<tr><td>${esc(g)}</td><td>${m.map(u => `<span class=pill>${esc(u)}</span>`).join("")}</td></tr>`));
    const names = status.routes.map(r => r.name).join("\n");
    if (names !== routesShown) { routesShown = names; document.getElementById("route").innerHTML = status.routes.map(r => `<option>${esc(r.name)}</option>`).join(""); }
    fill("alerts", alerts.alerts.map(a => `<tr data-id="${a.id}"><td>${a.id}</td><td>${time(a.accepted_ms)}</td><td>${esc(a.source)}</td><td>${esc(a.alert.severity)}</td><td>${esc(a.alert.subject)}</td><td>${
      (a.recipients || []).map(r => `<div class="recipient"><span class="${esc(r.outcome)}">${esc(r.outcome)}</span> ${esc(r.user)} <span class=muted>via ${esc(r.sink)}${digestOf(r)}${r.reason ? " — " + esc(r.reason) : ""}</span></div>`).join("") || `<span class=muted>${esc(a.state)}</span>`}</td></tr>`));
    document.getElementById("live").textContent = `live · updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (e instanceof NeedToken) return;
    document.getElementById("live").textContent = `cannot reach alertbridge (${e}); retrying…`;
  }
}
document.getElementById("test").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = Object.fromEntries(f.entries());
  let r;
  try {
    r = await api("api/v1/test-alert", {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
  } catch (e) {
    document.getElementById("sent").textContent = `not sent: ${e.message}`;
    return;
  }
  const j = await r.json();
  document.getElementById("sent").textContent = r.ok ? `sent as alert ${j.id}` : `refused: ${j.error}`;
  refresh();
});
refresh();
setInterval(refresh, 1000);

// Incidents (routes with an escalation policy): every open one, however old (read page by page
// with ?state=open, at most OPEN_PAGES pages of OPEN_PAGE), with who was paged when and who
// acknowledged, each with ack / resolve buttons that call the admin API (recorded as "admin
// API"), then the last few resolved ones (?state=resolved). Hidden while there is no incident and
// no route names an escalation policy (or the bridge keeps no incidents: 404 incidents_off).
// The table is rebuilt only when the incidents change, so a button is never replaced under the
// pointer.
const RESOLVED_SHOWN = 5;
const OPEN_PAGE = 100;
const OPEN_PAGES = 20;
let incidentsShown = null, incidentsBusy = false;
const incidentWho = p => [...p.groups.map(g => `<span class=pill>${esc(g)}</span>`), ...p.users.map(u => `<span class=pill>${esc(u)}</span>`)].join("");
function incidentRow(i) {
  const pages = i.pages.map(p => `<div class="page">level ${p.level}${p.round ? ` (round ${p.round + 1})` : ""} at ${time(p.at_ms)} ${incidentWho(p)} <span class=muted>${esc(p.reason)}${
    p.handed ? ` · ${p.reachable ?? "?"} reachable` : " · not handed over yet"}</span></div>`).join("");
  const marks = [i.acked && `acknowledged by ${esc(i.acked.by)} at ${time(i.acked.at_ms)}`, i.resolved && `resolved by ${esc(i.resolved.by)} at ${time(i.resolved.at_ms)}`].filter(Boolean).join("<br>");
  const next = i.state !== "resolved" && i.next_due_ms ? `<div class=muted>next at ${time(i.next_due_ms)}</div>` : "";
  const buttons = i.state === "resolved" ? "" :
    (i.state === "open" ? `<button type="button" data-act="ack" data-id="${i.id}">ack</button> ` : "") + `<button type="button" data-act="resolve" data-id="${i.id}">resolve</button>`;
  return `<tr data-incident="${i.id}"><td>${esc(i.number)}${i.seen > 1 ? ` <span class=muted>seen ${i.seen}×</span>` : ""}</td><td>${esc(i.title)}<div class=muted>route ${esc(i.route)} · ${esc(i.policy)}</div></td>` +
    `<td class="incident-${esc(i.state)}">${esc(i.state)}</td><td>${i.level}${next}</td><td>${pages || `<span class=muted>nobody yet</span>`}</td><td>${marks || `<span class=muted>nobody yet</span>`}</td><td class=actions>${buttons}</td></tr>`;
}
class IncidentsOff extends Error {}
// One page of the incident list: its answer, or IncidentsOff.
async function incidentPage(query) {
  const r = await api(`api/v1/incidents?${query}`);
  const j = await r.json();
  if (r.status === 404 && j.code === "incidents_off") throw new IncidentsOff();
  if (!r.ok) throw new Error(j.error || r.status);
  return j;
}
async function refreshIncidents() {
  if (!$("login").hidden || incidentsBusy) return;
  incidentsBusy = true;
  try {
    const open = [];
    let before = null;
    for (let n = 0; n < OPEN_PAGES; n++) {
      const j = await incidentPage(`state=open&limit=${OPEN_PAGE}${before === null ? "" : `&before=${before}`}`);
      open.push(...j.incidents);
      before = j.next_before ?? null;
      if (before === null) break;
    }
    const resolved = (await incidentPage(`state=resolved&limit=${RESOLVED_SHOWN}`)).incidents;
    const shown = open.concat(resolved);
    // Shown once there is an incident, or a route that could open one.
    if (!shown.length) {
      const status = await api("api/v1/status").then(r => r.json());
      if (!status.routes.some(r => r.escalation)) { $("incidents-section").hidden = true; return; }
    }
    $("incidents-section").hidden = false;
    const html = shown.map(incidentRow);
    if (before !== null) html.splice(open.length, 0, `<tr id="incidents-more"><td colspan="7" class="muted">more open incidents than the ${open.length} shown: older ones are in GET api/v1/incidents?state=open&amp;before=${esc(before)}</td></tr>`);
    const key = html.join("");
    if (key !== incidentsShown) { incidentsShown = key; fill("incidents", html); }
  } catch (e) {
    if (e instanceof IncidentsOff) { $("incidents-section").hidden = true; return; }
    if (e instanceof NeedToken) return;
    $("incident-note").textContent = `cannot list incidents (${e.message}); retrying…`;
  } finally {
    incidentsBusy = false;
  }
}
$("incidents").addEventListener("click", async ev => {
  const b = ev.target.closest("button[data-act]");
  if (!b) return;
  const {id, act} = b.dataset;
  b.disabled = true;
  let note;
  try {
    const r = await api(`api/v1/incidents/${encodeURIComponent(id)}/${act}`, {method: "POST"});
    const j = await r.json();
    const done = act === "ack" ? "acknowledged" : "resolved";
    note = !r.ok ? `#${id} not ${done}: ${j.error}` : j.changed === false ? `#${id} was already acknowledged` : `#${id} ${done}`;
  } catch (e) {
    note = `#${id} not changed: ${e.message}`;
  }
  $("incident-note").textContent = note;
  incidentsShown = null;
  refreshIncidents();
});
refreshIncidents();
setInterval(refreshIncidents, 1000);

// One alert, linked as ?alert=ID (what message templates write with {{ alert_url }}): shown
// above the recent alerts, whatever its age, with its text, labels and each recipient's outcome.
const linked = new URLSearchParams(location.search).get("alert");
async function refreshLinked() {
  if (!linked || !$("login").hidden) return;
  let box = $("linked-alert");
  if (!box) {
    box = document.createElement("section");
    box.id = "linked-alert";
    const recent = $("alerts");
    recent.parentNode.insertBefore(box, recent.previousElementSibling);
  }
  if (!/^[0-9]{1,19}$/.test(linked)) { box.innerHTML = `<h2>Linked alert</h2><p class=muted>not an alert id: ${esc(linked)}</p>`; return; }
  try {
    const r = await api(`api/v1/alerts/${linked}`);
    const a = await r.json();
    if (!r.ok) { box.innerHTML = `<h2>Alert ${esc(linked)}</h2><p class=muted>${esc(a.error)}</p>`; return; }
    const labels = Object.entries(a.alert.labels || {}).map(([k, v]) => `<span class=pill>${esc(k)}=${esc(v)}</span>`).join("");
    const who = (a.recipients || []).map(r => `<div class="recipient"><span class="${esc(r.outcome)}">${esc(r.outcome)}</span> ${esc(r.user)} <span class=muted>via ${esc(r.sink)} (route ${esc(r.route)})${digestOf(r)}${r.reason ? " — " + esc(r.reason) : ""}</span></div>`).join("");
    box.innerHTML = `<h2>Alert ${a.id}</h2><p><b>${esc(a.alert.subject)}</b> <span class=muted>${esc(a.alert.severity)} · from ${esc(a.source)} · accepted ${time(a.accepted_ms)} · ${esc(a.state)}</span></p>` +
      (a.alert.body ? `<pre>${esc(a.alert.body)}</pre>` : "") + (labels ? `<p>${labels}</p>` : "") + (who || `<p class=muted>no recipients yet</p>`);
  } catch (e) {
    if (e instanceof NeedToken) return;
    box.innerHTML = `<h2>Alert ${esc(linked)}</h2><p class=muted>cannot load it (${esc(e.message)}); retrying…</p>`;
  }
}
refreshLinked();
setInterval(refreshLinked, 1000);

// One digest, linked as ?digest=ID (the "Full list" of a digest IM): how many alerts it carried,
// firing and resolved, and every member with its labels and each recipient's outcome. The
// members are read from the API page by page (their ids are the digest's id or later, so the
// reading stops below it), then shown DIGEST_ROWS at a time with "more", so a digest of thousands
// renders at once. Read again while one of its recipients is still being sent to.
const DIGEST_ROWS = 200;
const DIGEST_PAGE = 500;
const digestLinked = new URLSearchParams(location.search).get("digest");
let digestRows = DIGEST_ROWS, digestBusy = false, digestDone = false;
const isResolved = a => (a.alert.attributes || {}).status === "resolved";
const digestRow = a => `<tr data-id="${a.id}"><td>${a.id}</td><td>${esc(a.alert.subject)}</td><td>${esc(a.alert.severity)}</td><td>${
  Object.entries(a.alert.labels || {}).map(([k, v]) => `<span class=pill>${esc(k)}=${esc(v)}</span>`).join("")}</td><td>${
  (a.recipients || []).map(r => `<div class="recipient"><span class="${esc(r.outcome)}">${esc(r.outcome)}</span> ${esc(r.user)} <span class=muted>via ${esc(r.sink)}${
    r.digest && String(r.digest) !== digestLinked ? digestOf(r) : ""}${r.reason ? " — " + esc(r.reason) : ""}</span></div>`).join("") || `<span class=muted>${esc(a.state)}</span>`}</td></tr>`;
async function refreshDigest() {
  if (!digestLinked || digestDone || digestBusy || !$("login").hidden) return;
  let box = $("digest");
  if (!box) {
    box = document.createElement("section");
    box.id = "digest";
    const recent = $("alerts");
    recent.parentNode.insertBefore(box, recent.previousElementSibling);
  }
  if (!/^[0-9]{1,19}$/.test(digestLinked)) { box.innerHTML = `<h2>Digest</h2><p class=muted>not a digest id: ${esc(digestLinked)}</p>`; digestDone = true; return; }
  digestBusy = true;
  try {
    const members = [];
    let before = null;
    for (;;) {
      const r = await api(`api/v1/alerts?digest=${digestLinked}&limit=${DIGEST_PAGE}${before === null ? "" : `&before=${before}`}`);
      const j = await r.json();
      if (!r.ok) throw new Error(j.error || r.status);
      members.push(...j.alerts);
      before = j.next_before;
      if (before === null || before === undefined || BigInt(before) <= BigInt(digestLinked)) break;
    }
    members.reverse();
    const resolved = members.filter(isResolved).length;
    const pending = members.some(a => (a.recipients || []).some(r => String(r.digest) === digestLinked && !["delivered", "failed", "skipped", "silenced"].includes(r.outcome)));
    digestDone = members.length > 0 && !pending;
    if (!members.length) { box.innerHTML = `<h2>Digest ${esc(digestLinked)}</h2><p class=muted>no alert was carried by this digest (yet)</p>`; return; }
    box.innerHTML = `<h2>Digest ${esc(digestLinked)}</h2><p id="digest-summary"><b>${members.length} alert${members.length === 1 ? "" : "s"}</b>: ${members.length - resolved} firing, ${resolved} resolved</p>` +
      `<table id="digest-alerts"><thead><tr><th>id</th><th>subject</th><th>severity</th><th>labels</th><th>recipients</th></tr></thead><tbody></tbody></table><p><button type="button" id="digest-more" hidden></button></p>`;
    const body = box.querySelector("tbody"), more = $("digest-more");
    let shown = 0;
    const showMore = () => {
      const next = members.slice(shown, shown + DIGEST_ROWS);
      body.insertAdjacentHTML("beforeend", next.map(digestRow).join(""));
      shown += next.length;
      digestRows = Math.max(digestRows, shown);
      more.hidden = shown >= members.length;
      more.textContent = `more (${members.length - shown} not shown)`;
    };
    more.addEventListener("click", showMore);
    while (shown < Math.min(digestRows, members.length)) showMore();
  } catch (e) {
    if (e instanceof NeedToken) return;
    box.innerHTML = `<h2>Digest ${esc(digestLinked)}</h2><p class=muted>cannot load it (${esc(e.message)}); retrying…</p>`;
  } finally {
    digestBusy = false;
  }
}
refreshDigest();
setInterval(refreshDigest, 2000);
