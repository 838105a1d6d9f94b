"use strict";
// The status page's silences section: lists silences (active, pending, expired), creates one
// from the form and expires one; each alert in "Recent alerts" gets "silence alerts like this",
// which pre-fills the form's matchers from that alert's labels. Uses page.js's api(), esc(),
// time() and $() (loaded first); keeps to its own section and functions.

const silenceNote = text => { $("silence-note").textContent = text; };

async function refreshSilences() {
  if (!$("login").hidden) return;
  try {
    const r = await api("api/v1/silences");
    if (r.status === 404) { $("silences-section").hidden = true; return; }
    $("silences-section").hidden = false;
    const j = await r.json();
    fill("silences", j.silences.map(s => `<tr data-silence="${s.id}"><td>${s.id}</td>` +
      `<td class="silence-${esc(s.state)}">${esc(s.state)}</td><td>${esc(s.match)}</td>` +
      `<td>${esc(s.starts_at)}</td><td>${esc(s.ends_at)}</td><td>${esc(s.author)}</td>` +
      `<td class="muted">${esc(s.comment)}</td><td>${s.state === "expired" ? "" :
        `<button type="button" class="silence-expire" data-id="${s.id}">expire</button>`}</td></tr>`));
  } catch (e) {
    if (!(e instanceof NeedToken)) silenceNote(`cannot list silences (${e})`);
  }
}

// "name = value" (exact) or "name ~ regex" a line, into the API's labels / labels_regex.
function parseLabelLines(text) {
  const labels = {}, labels_regex = {};
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line) continue;
    const m = line.match(/^([^\s=~]+)\s*([=~])\s*(.*)$/);
    if (!m) throw new Error(`line ${i + 1}: write name = value or name ~ regex`);
    (m[2] === "=" ? labels : labels_regex)[m[1]] = m[3];
  }
  return {labels, labels_regex};
}

$("silence-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const v = id => $(id).value.trim();
  let matchers;
  try {
    matchers = parseLabelLines($("silence-labels").value);
  } catch (e) {
    silenceNote(`not created: ${e.message}`);
    return;
  }
  const sources = v("silence-source").split(",").map(s => s.trim()).filter(s => s);
  if (sources.length) matchers.source = sources;
  if (v("silence-severity")) matchers.severity = v("silence-severity");
  if (v("silence-subject")) matchers.subject = v("silence-subject");
  const body = {matchers, author: v("silence-author"), comment: v("silence-comment")};
  if (v("silence-ends")) body.ends_at = v("silence-ends"); else body.duration = v("silence-duration");
  if (v("silence-starts")) body.starts_at = v("silence-starts");
  let r;
  try {
    r = await api("api/v1/silences", {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
  } catch (e) {
    silenceNote(`not created: ${e.message}`);
    return;
  }
  const j = await r.json();
  silenceNote(r.ok ? `silence ${j.id} created: ${j.match}, until ${j.ends_at}` : `refused: ${j.error}`);
  refreshSilences();
});

$("silences").addEventListener("click", async ev => {
  const b = ev.target.closest("button.silence-expire");
  if (!b) return;
  try {
    const r = await api(`api/v1/silences/${encodeURIComponent(b.dataset.id)}`, {method: "DELETE"});
    const j = await r.json();
    silenceNote(r.ok ? `silence ${j.id} expired` : `refused: ${j.error}`);
  } catch (e) {
    silenceNote(`not expired: ${e.message}`);
  }
  refreshSilences();
});

// "silence alerts like this": the alert's labels as exact matches (or, for an alert without
// labels, its source and exact subject), for the person to check, narrow and submit.
const reEscape = s => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
async function silenceLike(id) {
  try {
    const r = await api(`api/v1/alerts/${encodeURIComponent(id)}`);
    if (!r.ok) { silenceNote(`alert ${id}: ${(await r.json()).error}`); return; }
    const a = await r.json();
    const labels = Object.entries(a.alert.labels || {});
    $("silence-labels").value = labels.map(([k, v]) => `${k} = ${v}`).join("\n");
    $("silence-source").value = labels.length ? "" : a.source;
    $("silence-subject").value = labels.length ? "" : `^${reEscape(a.alert.subject)}$`;
    $("silence-severity").value = "";
    $("silences-section").scrollIntoView({block: "start"});
    $(labels.length ? "silence-labels" : "silence-subject").focus();
    silenceNote(`matchers pre-filled from alert ${a.id}: check them, say who and why, and submit`);
  } catch (e) {
    if (!(e instanceof NeedToken)) silenceNote(`cannot read alert ${id} (${e})`);
  }
}

// page.js redraws the alerts table every second: give each row its button after each redraw.
function addSilenceButtons() {
  for (const row of document.querySelectorAll("#alerts tbody tr[data-id]")) {
    if (row.querySelector("button.silence-like")) continue;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "silence-like";
    b.dataset.id = row.dataset.id;
    b.textContent = "silence alerts like this";
    row.cells[row.cells.length - 1].append(b);
  }
}
new MutationObserver(addSilenceButtons).observe(document.querySelector("#alerts tbody"), {childList: true});
$("alerts").addEventListener("click", ev => {
  const b = ev.target.closest("button.silence-like");
  if (b) silenceLike(b.dataset.id);
});

refreshSilences();
setInterval(refreshSilences, 1000);
