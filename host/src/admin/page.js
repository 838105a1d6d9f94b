"use strict";
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
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
    fill("routes", status.routes.map(r => `<tr><td>${esc(r.name)}${r.continue ? " <span class=muted>(continue)</span>" : ""}</td><td>${esc(r.match)}</td><td>${r.groups.map(g => `<span class=pill>${esc(g)}</span>`).join("")}${r.users.map(u => `<span class=pill>${esc(u)}</span>`).join("")}</td><td>${esc(r.sinks.join(", "))}</td><td>${esc(r.offline)}</td></tr>`));
    fill("groups", Object.entries(status.groups).map(([g, m]) => `<tr><td>${esc(g)}</td><td>${m.map(u => `<span class=pill>${esc(u)}</span>`).join("")}</td></tr>`));
    const names = status.routes.map(r => r.name).join("\n");
    if (names !== routesShown) { routesShown = names; document.getElementById("route").innerHTML = status.routes.map(r => `<option>${esc(r.name)}</option>`).join(""); }
    fill("alerts", alerts.alerts.map(a => `<tr data-id="${a.id}"><td>${a.id}</td><td>${time(a.accepted_ms)}</td><td>${esc(a.source)}</td><td>${esc(a.alert.severity)}</td><td>${esc(a.alert.subject)}</td><td>${
      (a.recipients || []).map(r => `<div class="recipient"><span class="${esc(r.outcome)}">${esc(r.outcome)}</span> ${esc(r.user)} <span class=muted>via ${esc(r.sink)}${r.reason ? " — " + esc(r.reason) : ""}</span></div>`).join("") || `<span class=muted>${esc(a.state)}</span>`}</td></tr>`));
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
