//! People talking to the bot, as UCWA 2.0 shows it ("Receive an IM"): a reply in a conversation
//! that is Connected becomes a `message` event with direction `Incoming` (text in a
//! `plainMessage` or `htmlMessage` data URL, sender in `contact` / `participant`); a person
//! without such a conversation (or asking for a new one) sends an incoming `messagingInvitation`
//! carrying the first message, which the bot `accept`s — then messaging turns Connected, the
//! invitation completes, and the first message arrives as a `message` event. An invitation the
//! bot does not accept rings out after `invitation_timeout`.

use std::sync::Arc;

use axum::{
    Form, Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    application::{app_base, check},
    auth::ucwa_error,
    state::{App, Conversation, Sim, normalize, unix_ms},
};

/// What a person says to the bot through the control API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub text: String,
    /// Send it as `text/html` (`htmlMessage`) instead of `text/plain`.
    #[serde(default)]
    pub html: bool,
    /// The conversation (its href or id) to answer in; default: the person's newest
    /// Connected conversation with the bot.
    #[serde(default)]
    pub conversation: Option<String>,
    /// Start a new conversation with the bot even if one is Connected.
    #[serde(default)]
    pub new: bool,
}

/// Where a reply went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replied {
    /// The conversation's href as the bot sees it.
    pub conversation: String,
    /// `true` when it came as a new incoming invitation.
    pub invited: bool,
}

/// Why a reply could not be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("no signed-in application that is available to receive IMs")]
    NoApplication,
    #[error("no conversation {0}")]
    NoConversation(String),
}

/// `Alice` for `alice@contoso.com`.
fn display_name(user: &str) -> String {
    let local = user.split('@').next().unwrap_or(user);
    let mut chars = local.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn data_url(html: bool, text: &str) -> String {
    let media = if html { "text/html" } else { "text/plain" };
    format!(
        "data:{media};charset=utf-8,{}",
        utf8_percent_encode(text, NON_ALPHANUMERIC)
    )
}

/// Queues the `message` event of `from` saying `text` in conversation `conv_id` of `app`.
fn push_message(app: &mut App, app_id: &str, conv_id: &str, from: &str, text: &str, html: bool) {
    let b = app_base(app_id);
    let c = format!("{b}/communication/conversations/{conv_id}");
    let Some(conv) = app.conversations.get_mut(conv_id) else {
        return;
    };
    conv.messages += 1;
    let href = format!("{c}/messaging/messages/{}", conv.messages);
    let body_rel = if html { "htmlMessage" } else { "plainMessage" };
    let mut links = json!({
        "self": { "href": href },
        "contact": { "href": format!("{b}/people/{from}") },
        "participant": { "href": format!("{c}/participants/{from}"), "title": display_name(from) },
        "messaging": { "href": format!("{c}/messaging") },
    });
    links[body_rel] = json!({ "href": data_url(html, text) });
    app.channel.push(
        "conversation",
        c,
        json!({
            "link": { "rel": "message", "href": href }, "status": "Success",
            "_embedded": { "message": { "direction": "Incoming", "timeStamp": format!("/Date({})/", unix_ms()), "_links": links, "rel": "message" } },
            "type": "completed",
        }),
    );
    app.notify.notify_waiters();
}

/// `from` (any string: tests also play senders the directory does not know) says `reply` to
/// the bot.
pub fn reply(sim: &Arc<Sim>, from: &str, reply: &Reply) -> Result<Replied, ReplyError> {
    let from = normalize(from);
    let mut inner = sim.lock();
    let wanted = reply
        .conversation
        .as_deref()
        .map(|c| c.rsplit('/').next().unwrap_or(c).to_owned());
    // The conversation to answer in: the one asked for, or the newest Connected one.
    let existing = inner.apps.iter().find_map(|(app_id, app)| {
        let mut convs: Vec<(&String, &Conversation)> = app
            .conversations
            .iter()
            .filter(|(id, c)| match &wanted {
                Some(w) => *id == w,
                None => c.connected && normalize(&c.to) == from,
            })
            .collect();
        convs.sort_by_key(|(_, c)| std::cmp::Reverse(c.started_ms));
        convs
            .first()
            .map(|(id, c)| (app_id.clone(), (*id).clone(), c.connected))
    });
    match (existing, &wanted) {
        (Some((app_id, conv_id, true)), _) if !reply.new => {
            let app = inner
                .apps
                .get_mut(&app_id)
                .ok_or(ReplyError::NoApplication)?;
            push_message(app, &app_id, &conv_id, &from, &reply.text, reply.html);
            Ok(Replied {
                conversation: format!(
                    "{}/communication/conversations/{conv_id}",
                    app_base(&app_id)
                ),
                invited: false,
            })
        }
        (None, Some(w)) if !reply.new => Err(ReplyError::NoConversation(w.clone())),
        _ => invite(sim, &mut inner, &from, reply),
    }
}

/// Sends the bot an incoming invitation from `from` carrying the first message.
fn invite(
    sim: &Arc<Sim>,
    inner: &mut super::state::Inner,
    from: &str,
    reply: &Reply,
) -> Result<Replied, ReplyError> {
    let app_id = inner
        .apps
        .iter()
        .filter(|(_, a)| a.available)
        .max_by_key(|(id, _)| (*id).clone())
        .map(|(id, _)| id.clone())
        .ok_or(ReplyError::NoApplication)?;
    let conv_id = inner.id();
    let inv_id = inner.id();
    let Some(app) = inner.apps.get_mut(&app_id) else {
        return Err(ReplyError::NoApplication);
    };
    let b = app_base(&app_id);
    let conv = format!("{b}/communication/conversations/{conv_id}");
    let inv = format!("{b}/communication/messagingInvitations/{inv_id}");
    app.conversations.insert(
        conv_id.clone(),
        Conversation {
            to: from.to_owned(),
            subject: String::new(),
            importance: "Normal".into(),
            connected: false,
            messages: 0,
            started_ms: unix_ms(),
            incoming: Some(super::state::IncomingInvite {
                invitation: inv_id.clone(),
                text: reply.text.clone(),
                html: reply.html,
            }),
        },
    );
    let comm = format!("{b}/communication");
    app.channel.push("communication", comm.clone(), json!({
        "link": { "rel": "messagingInvitation", "href": inv },
        "_embedded": { "messagingInvitation": {
            "direction": "Incoming", "importance": "Normal", "state": "Connecting", "subject": "",
            "threadId": format!("{conv_id}{inv_id}"),
            "_links": {
                "self": { "href": inv }, "to": { "href": format!("{b}/people/{}", app.owner) },
                "conversation": { "href": conv }, "accept": { "href": format!("{inv}/accept") },
                "decline": { "href": format!("{inv}/decline") }, "messaging": { "href": format!("{conv}/messaging") },
                "message": { "href": data_url(reply.html, &reply.text) },
            },
            "_embedded": { "from": {
                "sourceNetwork": "SameEnterprise", "anonymous": false, "name": display_name(from), "uri": format!("sip:{from}"),
                "_links": { "self": { "href": format!("{conv}/participants/{from}") }, "contact": { "href": format!("{b}/people/{from}") } },
                "rel": "participant",
            }},
            "rel": "messagingInvitation",
        }},
        "type": "started",
    }));
    app.channel.push("communication", comm, json!({
        "link": { "rel": "conversation", "href": conv },
        "_embedded": { "conversation": { "state": "Incoming", "subject": "", "activeModalities": ["Messaging"], "rel": "conversation" } },
        "type": "added",
    }));
    app.notify.notify_waiters();
    tokio::spawn(ring_out(sim.clone(), app_id, conv_id));
    Ok(Replied {
        conversation: conv,
        invited: true,
    })
}

/// Fails the invitation if the bot has not accepted it within `invitation_timeout`.
async fn ring_out(sim: Arc<Sim>, app_id: String, conv_id: String) {
    tokio::time::sleep(sim.config.invitation_timeout).await;
    let mut inner = sim.lock();
    let Some(app) = inner.apps.get_mut(&app_id) else {
        return;
    };
    let unanswered = app
        .conversations
        .get(&conv_id)
        .is_some_and(|c| !c.connected && c.incoming.is_some());
    if !unanswered {
        return;
    }
    let conv = app.conversations.remove(&conv_id);
    let b = app_base(&app_id);
    let inv = conv
        .and_then(|c| c.incoming)
        .map(|i| format!("{b}/communication/messagingInvitations/{}", i.invitation))
        .unwrap_or_default();
    let comm = format!("{b}/communication");
    app.channel.push("communication", comm.clone(), json!({
        "link": { "rel": "messagingInvitation", "href": inv }, "status": "Failure",
        "reason": { "code": "RemoteFailure", "subcode": "Missed", "message": "The invitation was not answered." },
        "_embedded": { "messagingInvitation": { "direction": "Incoming", "state": "Failed" } }, "type": "completed",
    }));
    app.channel.push(
        "communication",
        comm,
        json!({ "link": { "rel": "conversation", "href": format!("{b}/communication/conversations/{conv_id}") }, "type": "deleted" }),
    );
    app.notify.notify_waiters();
}

/// `POST <messagingInvitation.accept>`: 204; messaging turns Connected, the invitation
/// completes, and the first message arrives in the conversation.
pub async fn accept(
    State(sim): State<Arc<Sim>>,
    Path((id, inv_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = check(&sim, &headers, &id) {
        return response;
    }
    let mut inner = sim.lock();
    let Some(app) = inner.apps.get_mut(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let found = app
        .conversations
        .iter_mut()
        .find(|(_, c)| c.incoming.as_ref().is_some_and(|i| i.invitation == inv_id));
    let Some((conv_id, conv)) = found else {
        return ucwa_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            None,
            "No such invitation.",
        );
    };
    if conv.connected {
        return ucwa_error(
            StatusCode::CONFLICT,
            "Conflict",
            Some("InvitationAlreadyAccepted"),
            "The invitation was already accepted.",
        );
    }
    conv.connected = true;
    let conv_id = conv_id.clone();
    let from = normalize(&conv.to);
    let first = conv.incoming.clone();
    let b = app_base(&id);
    let c = format!("{b}/communication/conversations/{conv_id}");
    let comm = format!("{b}/communication");
    let inv = format!("{b}/communication/messagingInvitations/{inv_id}");
    app.channel.push("conversation", c.clone(), json!({
        "link": { "rel": "messaging", "href": format!("{c}/messaging") },
        "_embedded": { "messaging": { "state": "Connected", "negotiatedMessageFormats": ["Plain", "Html"], "_links": {
            "sendMessage": { "href": format!("{c}/messaging/messages") },
            "stopMessaging": { "href": format!("{c}/messaging/terminate") },
        }}},
        "type": "updated",
    }));
    app.channel.push("communication", comm.clone(), json!({
        "link": { "rel": "conversation", "href": c },
        "_embedded": { "conversation": { "state": "Connected", "activeModalities": ["Messaging"] } }, "type": "updated",
    }));
    app.channel.push(
        "communication",
        comm,
        json!({
            "link": { "rel": "messagingInvitation", "href": inv }, "status": "Success",
            "_embedded": { "messagingInvitation": { "direction": "Incoming", "state": "Connected",
                "_links": { "conversation": { "href": c } } } },
            "type": "completed",
        }),
    );
    if let Some(first) = first {
        push_message(app, &id, &conv_id, &from, &first.text, first.html);
    }
    app.notify.notify_waiters();
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /control/users/{user}/reply` `{"text":"ack","html":false,"conversation":null,"new":false}`
/// → `{"conversation":"/ucwa/...","invited":false}`.
pub async fn post_reply(
    State(sim): State<Arc<Sim>>,
    Path(user): Path<String>,
    Json(body): Json<Reply>,
) -> Response {
    match reply(&sim, &user, &body) {
        Ok(r) => Json(r).into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

/// The status page's reply box.
#[derive(Deserialize)]
pub struct ReplyForm {
    text: String,
}

/// `POST /control/users/{user}/reply-form` (`text=...`, from the status page): replies, then
/// back to the page.
pub async fn post_reply_form(
    State(sim): State<Arc<Sim>>,
    Path(user): Path<String>,
    Form(form): Form<ReplyForm>,
) -> Response {
    let body = Reply {
        text: form.text,
        ..Reply::default()
    };
    match reply(&sim, &user, &body) {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}
