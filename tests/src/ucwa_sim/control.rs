//! The control API (`/control/...`, JSON) that tests and the demo use to steer the simulator,
//! the operations behind it, and the HTML status page.

use std::{collections::BTreeMap, fmt::Write as _, sync::Arc, time::Instant};

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::state::{Behaviour, ReceivedIm, Sim, normalize};

/// Counters for tests and the status page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Applications currently alive.
    pub applications: usize,
    /// Conversations not yet stopped.
    pub conversations: usize,
    /// Tokens issued and not yet expired.
    pub live_tokens: usize,
    /// `401` challenges answered so far.
    pub challenges: u64,
    /// Batch requests answered so far.
    pub batches: u64,
    /// P-GETs released with 409 PGetReplaced so far.
    pub replaced_pgets: u64,
}

/// Sets a user's availability; `false` if there is no such user.
pub fn set_availability(sim: &Sim, user: &str, availability: &str) -> bool {
    sim.lock()
        .users
        .get_mut(&normalize(user))
        .map(|u| u.availability = availability.to_owned())
        .is_some()
}

/// Sets what a user does with invitations; `false` if there is no such user.
pub fn set_behaviour(sim: &Sim, user: &str, behaviour: Behaviour) -> bool {
    sim.lock()
        .users
        .get_mut(&normalize(user))
        .map(|u| u.behaviour = behaviour)
        .is_some()
}

/// Every IM one user received, oldest first.
pub fn received(sim: &Sim, user: &str) -> Vec<ReceivedIm> {
    sim.lock()
        .users
        .get(&normalize(user))
        .map(|u| u.received.clone())
        .unwrap_or_default()
}

/// Every IM every user received.
pub fn all_received(sim: &Sim) -> BTreeMap<String, Vec<ReceivedIm>> {
    sim.lock()
        .users
        .iter()
        .map(|(k, u)| (k.clone(), u.received.clone()))
        .collect()
}

/// Ends `conversation` (its href or id) from the person's side; `false` if there is none.
pub fn hang_up(sim: &Sim, conversation: &str) -> bool {
    let conv_id = conversation.rsplit('/').next().unwrap_or(conversation);
    let mut inner = sim.lock();
    for (app_id, app) in &mut inner.apps {
        if app.conversations.remove(conv_id).is_some() {
            let b = super::application::app_base(app_id);
            let c = format!("{b}/communication/conversations/{conv_id}");
            app.channel.push(
                "conversation",
                c.clone(),
                json!({ "link": { "rel": "messaging", "href": format!("{c}/messaging") },
                    "_embedded": { "messaging": { "state": "Disconnected" } }, "type": "updated" }),
            );
            app.channel.push(
                "communication",
                format!("{b}/communication"),
                json!({ "link": { "rel": "conversation", "href": c }, "type": "deleted" }),
            );
            app.notify.notify_waiters();
            return true;
        }
    }
    false
}

/// Expires every issued token at once.
pub fn expire_tokens(sim: &Sim) {
    let now = Instant::now();
    sim.lock().tokens.values_mut().for_each(|t| t.expires = now);
}

/// Answers the next `count` UCWA requests with 429 (with `Retry-After` if given).
pub fn throttle(sim: &Sim, count: u32, retry_after_secs: Option<u64>) {
    let mut inner = sim.lock();
    inner.throttle = count;
    inner.throttle_retry_after = retry_after_secs;
}

/// Current counters.
pub fn stats(sim: &Sim) -> Stats {
    let inner = sim.lock();
    let now = Instant::now();
    Stats {
        applications: inner.apps.len(),
        conversations: inner.apps.values().map(|a| a.conversations.len()).sum(),
        live_tokens: inner.tokens.values().filter(|t| t.expires > now).count(),
        challenges: inner.challenges,
        batches: inner.batches,
        replaced_pgets: inner.replaced_pgets,
    }
}

fn not_found(user: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("no user {user}") })),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct AvailabilityBody {
    availability: String,
}

/// `POST /control/users/{user}/availability` `{"availability":"Away"}`.
pub async fn put_availability(
    State(sim): State<Arc<Sim>>,
    Path(user): Path<String>,
    Json(body): Json<AvailabilityBody>,
) -> Response {
    if set_availability(&sim, &user, &body.availability) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found(&user)
    }
}

/// `POST /control/users/{user}/behaviour` `{"behaviour":"decline","subcode":"Declined","message":".."}`.
pub async fn put_behaviour(
    State(sim): State<Arc<Sim>>,
    Path(user): Path<String>,
    Json(body): Json<Behaviour>,
) -> Response {
    if set_behaviour(&sim, &user, body) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found(&user)
    }
}

/// `GET /control/users/{user}/messages`.
pub async fn get_messages(
    State(sim): State<Arc<Sim>>,
    Path(user): Path<String>,
) -> Json<Vec<ReceivedIm>> {
    Json(received(&sim, &user))
}

/// `GET /control/messages`: every user's IMs.
pub async fn get_all_messages(
    State(sim): State<Arc<Sim>>,
) -> Json<BTreeMap<String, Vec<ReceivedIm>>> {
    Json(all_received(&sim))
}

/// `POST /control/tokens/expire`.
pub async fn post_expire(State(sim): State<Arc<Sim>>) -> StatusCode {
    expire_tokens(&sim);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
pub struct ThrottleBody {
    count: u32,
    retry_after_secs: Option<u64>,
}

/// `POST /control/throttle` `{"count":3,"retry_after_secs":1}`.
pub async fn post_throttle(
    State(sim): State<Arc<Sim>>,
    Json(body): Json<ThrottleBody>,
) -> StatusCode {
    throttle(&sim, body.count, body.retry_after_secs);
    StatusCode::NO_CONTENT
}

/// `GET /control/stats`.
pub async fn get_stats(State(sim): State<Arc<Sim>>) -> Json<Stats> {
    Json(stats(&sim))
}

fn describe(b: &Behaviour) -> String {
    match b {
        Behaviour::Accept => "accept".to_owned(),
        Behaviour::Decline { subcode, message } => format!("decline ({subcode}: {message})"),
        Behaviour::Ignore => "ignore".to_owned(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page reloads itself every 2 s, except while a reply box has focus or text (a reload would
/// wipe a half-typed reply); without JavaScript a refresh tag in `<noscript>` reloads it.
const REFRESH: &str = "setInterval(function(){var b=document.querySelectorAll('input[name=text]');\
for(var i=0;i<b.length;i++){if(b[i]===document.activeElement||b[i].value!=='')return;}\
location.reload();},2000);";

/// The status page: each user's presence and received IMs, and a box to reply to the bot as
/// that user (in their conversation with it, or by starting one).
pub fn page(sim: &Sim) -> Html<String> {
    let mut users: Vec<(String, String, String, Vec<ReceivedIm>)> = sim
        .lock()
        .users
        .iter()
        .map(|(k, u)| {
            (
                k.clone(),
                u.availability.clone(),
                describe(&u.behaviour),
                u.received.clone(),
            )
        })
        .collect();
    users.sort_by(|a, b| a.0.cmp(&b.0));
    let s = stats(sim);
    let mut html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><noscript><meta http-equiv=\"refresh\" content=\"2\"></noscript>\
         <script>{REFRESH}</script><title>UCWA simulator</title><style>body{{font-family:sans-serif}}td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}\
         table{{border-collapse:collapse}}</style></head><body><h1>UCWA simulator</h1>",
    );
    let _ = write!(
        html,
        "<p>{} applications, {} conversations, {} live tokens</p><table><tr><th>user</th><th>availability</th>\
         <th>invitations</th><th>received IMs</th></tr>",
        s.applications, s.conversations, s.live_tokens
    );
    for (user, availability, behaviour, received) in users {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>",
            escape(&user),
            escape(&availability),
            escape(&behaviour)
        );
        let _ = write!(
            html,
            "<form method=\"post\" action=\"/control/users/{}/reply-form\">\
             <input name=\"text\" placeholder=\"reply as {}\" aria-label=\"reply as {}\">\
             <button type=\"submit\">Reply</button></form>",
            escape(&user),
            escape(&user),
            escape(&user)
        );
        for im in received.iter().rev().take(20) {
            let _ = write!(
                html,
                "<div><b>{}</b> ({}, from {}): {}</div>",
                escape(&im.subject),
                escape(&im.importance),
                escape(&im.from),
                escape(&im.text)
            );
        }
        html.push_str("</td></tr>");
    }
    html.push_str("</table></body></html>");
    Html(html)
}
