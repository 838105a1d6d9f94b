//! The simulator's control API (`/control/...`, unauthenticated, for tests and the demo) and its
//! status page `/`: each user's presence and the IMs they received.

use std::{fmt::Write as _, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    state::{self as sim, Fault, HealthStatus, Outcome},
    wire::Availability,
};

type Shared = Arc<sim::State>;

/// The control routes and the page.
pub fn router() -> Router<Shared> {
    Router::new()
        .route("/", get(page))
        .route("/control/state", get(snapshot))
        .route("/control/counters", get(counters))
        .route("/control/health", put(set_health))
        .route("/control/limits", put(set_limits))
        .route("/control/faults", post(inject))
        .route("/control/users/{uri}/presence", put(set_presence))
        .route("/control/users/{uri}/outcomes", post(script))
        .route("/control/users/{uri}/messages", get(received))
        .route("/control/users/{uri}/say", post(user_says))
        .route("/control/users/{uri}/conversations", get(conversations_of))
        .route("/control/conversations/{id}/end", post(end_conversation))
        .route("/control/inbound", put(set_inbound))
}

#[derive(Deserialize)]
struct SayBody {
    text: String,
    #[serde(default)]
    conversation: Option<String>,
    #[serde(default)]
    new: bool,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct InboundBody {
    supported: bool,
}

/// The user says something to the bot (a reply in a page's conversation, or a new one).
async fn user_says(
    State(state): State<Shared>,
    Path(uri): Path<String>,
    Json(body): Json<SayBody>,
) -> Response {
    match state.user_says(
        &uri,
        &body.text,
        body.name.as_deref(),
        body.conversation.as_deref(),
        body.new,
    ) {
        Some(message) => Json(message).into_response(),
        None => (
            StatusCode::CONFLICT,
            format!("no open conversation of {uri} with that id"),
        )
            .into_response(),
    }
}

async fn conversations_of(State(state): State<Shared>, Path(uri): Path<String>) -> Response {
    Json(state.conversations_of(&uri)).into_response()
}

async fn end_conversation(State(state): State<Shared>, Path(id): Path<String>) -> StatusCode {
    if state.end_conversation(&id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn set_inbound(State(state): State<Shared>, Json(body): Json<InboundBody>) -> StatusCode {
    state.set_inbound(body.supported);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct PresenceBody {
    availability: String,
}

#[derive(Deserialize)]
struct OutcomesBody {
    outcomes: Vec<Outcome>,
}

#[derive(Deserialize)]
struct HealthBody {
    status: HealthStatus,
}

async fn set_presence(
    State(state): State<Shared>,
    Path(uri): Path<String>,
    Json(body): Json<PresenceBody>,
) -> Response {
    match Availability::from_name(&body.availability) {
        Some(a) => {
            state.set_presence(&uri, a);
            StatusCode::NO_CONTENT.into_response()
        }
        None => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("unknown availability `{}`", body.availability),
        )
            .into_response(),
    }
}

async fn script(
    State(state): State<Shared>,
    Path(uri): Path<String>,
    Json(body): Json<OutcomesBody>,
) -> StatusCode {
    state.script(&uri, body.outcomes);
    StatusCode::NO_CONTENT
}

async fn received(State(state): State<Shared>, Path(uri): Path<String>) -> Response {
    Json(state.received(&uri)).into_response()
}

async fn counters(State(state): State<Shared>) -> Response {
    Json(state.counters()).into_response()
}

#[derive(Deserialize)]
struct LimitsBody {
    max_presence_targets: usize,
    max_recipients: usize,
    max_body_bytes: usize,
}

async fn set_limits(State(state): State<Shared>, Json(body): Json<LimitsBody>) -> StatusCode {
    state.set_limits(super::config::Limits {
        max_presence_targets: body.max_presence_targets,
        max_recipients: body.max_recipients,
        max_body_bytes: body.max_body_bytes,
    });
    StatusCode::NO_CONTENT
}

async fn set_health(State(state): State<Shared>, Json(body): Json<HealthBody>) -> StatusCode {
    state.set_health(body.status);
    StatusCode::NO_CONTENT
}

async fn inject(State(state): State<Shared>, Json(fault): Json<Fault>) -> StatusCode {
    state.inject(fault);
    StatusCode::NO_CONTENT
}

async fn snapshot(State(state): State<Shared>) -> Response {
    let users: Vec<_> = state
        .users()
        .into_iter()
        .map(|(uri, a, inbox)| json!({"uri": uri, "availability": a.map(Availability::name), "received": inbox}))
        .collect();
    Json(json!({
        "health": state.health(),
        "users": users,
        "counters": state.counters(),
        "conversations": state.conversations(),
        "inbound_pending": state.pending_inbound(),
    }))
    .into_response()
}

async fn page(State(state): State<Shared>) -> Html<String> {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>UCMA bridge simulator</title><style>body{font-family:sans-serif;margin:2em}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}\
         .Online{color:#2a2}.Busy,.DoNotDisturb{color:#c22}.Offline{color:#888}</style></head><body>",
    );
    let counters = state.counters();
    let _ = write!(
        out,
        "<h1>UCMA bridge simulator</h1><p>health: <b>{:?}</b> · sends {} · calls {} · delivered {} · replays {} · \
         conflicts {} · unauthorized {} · dropped {}</p><table><tr><th>user</th><th>presence</th><th>received IMs</th></tr>",
        state.health(),
        counters.sends,
        counters.calls,
        counters.delivered,
        counters.replays,
        counters.conflicts,
        counters.unauthorized,
        counters.dropped,
    );
    for (uri, availability, inbox) in state.users() {
        let name = availability.map_or("unknown", Availability::name);
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{name}\">{name}</td><td>",
            escape(&uri)
        );
        for im in inbox.iter().rev() {
            let subject = im.subject.as_deref().map(escape).unwrap_or_default();
            let _ = write!(
                out,
                "<div><small>{} · {} · {}</small><br><b>{subject}</b> {}</div>",
                escape(&im.at),
                escape(&im.importance),
                escape(&im.message_id),
                escape(&im.body),
            );
        }
        out.push_str("</td></tr>");
    }
    out.push_str(
        "</table><h2>Conversations</h2><table><tr><th>id</th><th>user</th><th>lines</th></tr>",
    );
    for c in state.conversations().iter().rev() {
        let _ = write!(
            out,
            "<tr><td>{}{}</td><td>{}</td><td>",
            escape(&c.id),
            if c.open { "" } else { " (ended)" },
            escape(&c.user)
        );
        for line in &c.lines {
            let _ = write!(
                out,
                "<div><small>{} · {}</small> {}</div>",
                escape(&line.at),
                escape(&line.from),
                escape(&line.text)
            );
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</table><p>A user replies with <code>POST /control/users/{uri}/say {\"text\":\"ack\"}</code>.</p></body></html>");
    Html(out)
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            super::escape("<b a=\"x\">&'"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
